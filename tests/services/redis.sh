#!/usr/bin/env bash
# A real Redis server on loopback for the tests: Debian's redis-server (installed with apt-get
# when missing), no persistence, a password (`${REDIS_PASSWORD:-ferris-redis-pw}`).
#
#   bash tests/services/redis.sh install   # apt-get install redis-server, when missing
#   bash tests/services/redis.sh start     # starts it on 127.0.0.1:${REDIS_PORT:-56379}
#   bash tests/services/redis.sh stop
#   bash tests/services/redis.sh status
#   bash tests/services/redis.sh url       # redis://:…@127.0.0.1:PORT/0
set -euo pipefail
PORT="${REDIS_PORT:-56379}"
PASSWORD="${REDIS_PASSWORD:-ferris-redis-pw}"
STATE="${FERRIS_SERVICES_DIR:-${TMPDIR:-/tmp}/ferris-services}"
PIDFILE="$STATE/redis-$PORT.pid"
LOG="$STATE/redis-$PORT.log"
mkdir -p "$STATE"

# shellcheck source=tests/services/common.sh
. "$(dirname "$0")/common.sh"

case "${1:-}" in
  install)
    if ! command -v redis-server >/dev/null 2>&1; then
      echo "== redis: installing Debian's redis-server"
      apt_install redis-server
    else
      echo "== redis: present ($(redis-server --version | head -c 40))"
    fi
    ;;
  start)
    if port_open "$PORT"; then
      echo "redis: something already listens on 127.0.0.1:$PORT"
      exit 0
    fi
    command -v redis-server >/dev/null || { echo "redis: redis-server missing (run: $0 install)" >&2; exit 1; }
    redis-server --port "$PORT" --bind 127.0.0.1 --requirepass "$PASSWORD" --save '' --appendonly no \
      --daemonize yes --pidfile "$PIDFILE" --logfile "$LOG" --dir "$STATE"
    for _ in $(seq 1 50); do [ -f "$PIDFILE" ] && break; sleep 0.1; done
    wait_started redis "$PORT" "$PIDFILE" "$LOG" 100
    ;;
  stop)
    stop_service "$PORT" "$PIDFILE"
    ;;
  status)
    if port_open "$PORT"; then echo "redis: up on 127.0.0.1:$PORT"; else echo "redis: down"; exit 1; fi
    ;;
  url)
    echo "redis://:$PASSWORD@127.0.0.1:$PORT/0"
    ;;
  *)
    echo "usage: $0 install|start|stop|status|url" >&2
    exit 2
    ;;
esac
