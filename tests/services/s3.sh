#!/usr/bin/env bash
# A real S3 API server on loopback for the tests, the demo and the benchmarks: moto's server
# (PyPI `moto[server]`), in memory, with a fixed test account. The engine reaches it with the
# `endpoint` key (or AWS_ENDPOINT_URL); boto3 and pyarrow read back what it wrote.
#
#   bash tests/services/s3.sh install   # pip install moto[server] boto3, when missing
#   bash tests/services/s3.sh start     # starts it on 127.0.0.1:${S3_PORT:-9190}; waits until it answers
#   bash tests/services/s3.sh stop
#   bash tests/services/s3.sh status
#
# Starting the server starts from an empty store: buckets of an earlier start are forgotten.
set -euo pipefail
PORT="${S3_PORT:-9190}"
PY="${PYTHON:-python3}"
STATE="${FERRIS_SERVICES_DIR:-${TMPDIR:-/tmp}/ferris-services}"
PIDFILE="$STATE/moto-$PORT.pid"
LOG="$STATE/moto-$PORT.log"
mkdir -p "$STATE"

# shellcheck source=tests/services/common.sh
. "$(dirname "$0")/common.sh"

case "${1:-}" in
  install)
    if "$PY" -c "import moto.server, boto3, flask, flask_cors" >/dev/null 2>&1; then
      echo "== s3 server (moto): present"
    else
      echo "== s3 server: installing moto[server] and boto3"
      "$PY" -m pip install --quiet --disable-pip-version-check 'moto[server]' boto3
    fi
    ;;
  start)
    if port_open "$PORT"; then
      echo "s3: something already listens on 127.0.0.1:$PORT"
      exit 0
    fi
    # moto enforces the 5 MB minimum part size of multipart uploads, as S3 does
    (exec nohup "$PY" -m moto.server -H 127.0.0.1 -p "$PORT" >"$LOG" 2>&1) &
    echo $! >"$PIDFILE"
    wait_started "s3 (moto)" "$PORT" "$PIDFILE" "$LOG" 150
    ;;
  *)
    service_command "${1:-}" "$PORT" "$PIDFILE"
    ;;
esac
