#!/usr/bin/env bash
# Builds the release binaries and runs the Nexmark set: bash benches/run.sh [--events N] [--format parquet|jsonl] [--out FILE.md]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p ferris-server -p ferris-bench
exec target/release/ferris-bench "$@"
