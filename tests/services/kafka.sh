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

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

case "${1:-}" in
  install)
    if [ -n "$(tansu_bin)" ]; then
      echo "tansu: $(tansu_bin)"
    else
      echo "installing tansu $TANSU_VERSION (cargo install; about 20 minutes on 2 cores)"
      cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql
    fi
    ;;
  start)
    if port_open; then
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
    for _ in $(seq 1 100); do
      if port_open; then
        echo "kafka (tansu) on 127.0.0.1:$PORT, pid $(cat "$PIDFILE"), log $LOG"
        exit 0
      fi
      sleep 0.1
    done
    echo "tansu did not start; its log:" >&2
    tail -20 "$LOG" >&2
    exit 1
    ;;
  stop)
    if [ -f "$PIDFILE" ]; then
      kill "$(cat "$PIDFILE")" 2>/dev/null || true
      rm -f "$PIDFILE"
      for _ in $(seq 1 50); do port_open || break; sleep 0.1; done
    fi
    ;;
  status)
    if port_open; then echo "up on 127.0.0.1:$PORT"; else echo "down"; exit 1; fi
    ;;
  *)
    echo "usage: $0 install|start|stop|status" >&2
    exit 2
    ;;
esac
