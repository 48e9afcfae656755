#!/usr/bin/env bash
# A real Azure Blob Storage API server on loopback for the tests: Azurite (npm `azurite`,
# Microsoft's emulator), blob service only, in a directory of its own, with the emulator's
# well-known account (devstoreaccount1). The engine reaches it with `az://container/prefix`
# and `use_emulator` (or `endpoint`); the Python client azure-storage-blob reads back.
#
#   bash tests/services/azure.sh install   # npm install -g azurite, pip install azure-storage-blob, when missing
#   bash tests/services/azure.sh start     # starts it on 127.0.0.1:${AZURITE_PORT:-10000}
#   bash tests/services/azure.sh stop
#   bash tests/services/azure.sh status
#
# Starting the server starts from an empty store.
set -euo pipefail
PORT="${AZURITE_PORT:-10000}"
PY="${PYTHON:-python3}"
STATE="${FERRIS_SERVICES_DIR:-${TMPDIR:-/tmp}/ferris-services}"
PIDFILE="$STATE/azurite-$PORT.pid"
LOG="$STATE/azurite-$PORT.log"
DATA="$STATE/azurite-$PORT"
mkdir -p "$STATE"

# shellcheck source=tests/services/common.sh
. "$(dirname "$0")/common.sh"

case "${1:-}" in
  install)
    if command -v azurite-blob >/dev/null 2>&1; then
      echo "== azure blob server (azurite): present"
    else
      command -v npm >/dev/null 2>&1 || {
        echo "== azure: installing Debian's npm"
        apt_install npm
      }
      echo "== azure: installing azurite (npm)"
      if [ "$(id -u)" = 0 ]; then npm install -g --silent azurite@3.35.0 >/dev/null
      else sudo npm install -g --silent azurite@3.35.0 >/dev/null; fi
    fi
    if ! "$PY" -c "import azure.storage.blob" >/dev/null 2>&1; then
      echo "== azure: installing azure-storage-blob (PyPI)"
      "$PY" -m pip install --quiet --disable-pip-version-check azure-storage-blob
    fi
    ;;
  start)
    if port_open "$PORT"; then
      echo "azure: something already listens on 127.0.0.1:$PORT"
      exit 0
    fi
    command -v azurite-blob >/dev/null || { echo "azure: azurite-blob missing (run: $0 install)" >&2; exit 1; }
    rm -rf "$DATA" && mkdir -p "$DATA"
    (exec nohup azurite-blob --blobHost 127.0.0.1 --blobPort "$PORT" --location "$DATA" --skipApiVersionCheck --loose >"$LOG" 2>&1) &
    echo $! >"$PIDFILE"
    wait_started "azure (azurite)" "$PORT" "$PIDFILE" "$LOG" 200 || { stop_service "$PORT" "$PIDFILE"; exit 1; }
    ;;
  *)
    service_command "${1:-}" "$PORT" "$PIDFILE"
    ;;
esac
