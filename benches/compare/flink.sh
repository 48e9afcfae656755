#!/usr/bin/env bash
# Installs Apache Flink (PyPI's apache-flink, a local Flink; needs Java 17) into its own venv
# under target/, then runs benches/compare/nexmark_flink.py with the given arguments.
#
#   bash benches/compare/flink.sh --events 5000000 --repeat 1
#
# The files come from `bash benches/run.sh --events N --format jsonl` (or nexmark-gen).
# FLINK_QUERIES=q0,q1 runs only those; FLINK_PARALLELISM (default 2) sets the parallelism.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v java >/dev/null || { echo "Java 17 is needed by Flink" >&2; exit 1; }
venv=target/flink-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import pyflink" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "apache-flink>=2,<3"
fi
cd benches/compare
exec "../../$venv/bin/python" nexmark_flink.py "$@"
