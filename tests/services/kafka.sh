#!/usr/bin/env bash
# A real Kafka-protocol broker for the tests, the demo and the benchmarks: tansu, with its SQLite
# storage in a fresh directory each start (tansu's in-memory engine answers a fetch from an
# offset inside a record batch with the *next* batch, losing the rest of that batch for any
# consumer that resumes mid-batch; its SQLite engine returns the batch, as Kafka does).
#
#   bash tests/services/kafka.sh install   # cargo install tansu, when missing (~20 min once)
#   bash tests/services/kafka.sh start     # starts it on 127.0.0.1:${KAFKA_PORT:-9092}; waits until it answers
#   bash tests/services/kafka.sh stop
#   bash tests/services/kafka.sh status
#
# Starting the broker starts from an empty store: topics of an earlier start are forgotten.
set -euo pipefail
PORT="${KAFKA_PORT:-9092}"
STATE="${FERRIS_SERVICES_DIR:-${TMPDIR:-/tmp}/ferris-services}"
PIDFILE="$STATE/tansu-$PORT.pid"
LOG="$STATE/tansu-$PORT.log"
DATA="$STATE/tansu-$PORT-data"
TANSU_VERSION="0.6.0"
mkdir -p "$STATE"

tansu_bin() {
  command -v tansu 2>/dev/null || { [ -x "$HOME/.cargo/bin/tansu" ] && echo "$HOME/.cargo/bin/tansu"; } || true
}

# shellcheck source=tests/services/common.sh
. "$(dirname "$0")/common.sh"

case "${1:-}" in
  install)
    if [ -n "$(tansu_bin)" ]; then
      echo "tansu: $(tansu_bin)"
    else
      echo "installing tansu $TANSU_VERSION (cargo install; about 20 minutes on 2 cores)"
      cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql
    fi
    # the TLS test puts socat (OpenSSL) in front of a broker of its own
    # and makes its certificate with the openssl command
    if ! command -v socat >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
      echo "== kafka: installing Debian's socat and openssl (the TLS test's proxy and certificate)"
      apt_install socat openssl
    fi
    ;;
  start)
    if port_open "$PORT"; then
      echo "kafka: something already listens on 127.0.0.1:$PORT"
      exit 0
    fi
    BIN="$(tansu_bin)"
    [ -n "$BIN" ] || { echo "tansu is not installed: run 'bash tests/services/kafka.sh install'" >&2; exit 1; }
    rm -rf "$DATA"
    mkdir -p "$DATA"
    # tansu reads the database path of a sqlite:// URL relative to its working directory
    (cd "$STATE" && exec nohup "$BIN" broker --listener-url "tcp://127.0.0.1:$PORT" --advertised-listener-url "tcp://127.0.0.1:$PORT" \
      --storage-engine "sqlite://tansu-$PORT-data/tansu.db" >"$LOG" 2>&1) &
    echo $! >"$PIDFILE"
    wait_started "kafka (tansu)" "$PORT" "$PIDFILE" "$LOG" 100
    ;;
  *)
    service_command "${1:-}" "$PORT" "$PIDFILE"
    ;;
esac
