#!/usr/bin/env bash
# A Kafka-protocol broker reached over TLS only (`security.protocol = 'SSL'`), for the guide's
# financial example: a tansu of its own on a loopback port behind a TLS-terminating proxy
# (socat, OpenSSL) with a certificate made here, the broker advertising the proxy's address so
# that every connection a client makes is TLS. Clients trust the certificate with
# `ssl.ca.location` = the path `ca` prints.
#
#   bash tests/services/kafka_tls.sh install   # tansu, socat, openssl (kafka.sh install)
#   bash tests/services/kafka_tls.sh start     # TLS on localhost:${KAFKA_TLS_PORT:-9093}
#   bash tests/services/kafka_tls.sh ca        # the certificate to trust
#   bash tests/services/kafka_tls.sh stop
#   bash tests/services/kafka_tls.sh status
set -euo pipefail
PORT="${KAFKA_TLS_PORT:-9093}"
INNER="${KAFKA_TLS_INNER_PORT:-19093}"
STATE="${FERRIS_SERVICES_DIR:-${TMPDIR:-/tmp}/ferris-services}"
DIR="$STATE/kafka-tls-$PORT"
mkdir -p "$DIR"

# shellcheck source=tests/services/common.sh
. "$(dirname "$0")/common.sh"

tansu_bin() {
  command -v tansu 2>/dev/null || { [ -x "$HOME/.cargo/bin/tansu" ] && echo "$HOME/.cargo/bin/tansu"; } || true
}

case "${1:-}" in
  install)
    bash "$(dirname "$0")/kafka.sh" install
    ;;
  start)
    if port_open "$PORT"; then
      echo "kafka over TLS: something already listens on 127.0.0.1:$PORT"
      exit 0
    fi
    BIN="$(tansu_bin)"
    [ -n "$BIN" ] || { echo "tansu is not installed: run 'bash tests/services/kafka_tls.sh install'" >&2; exit 1; }
    if [ ! -f "$DIR/cert.pem" ]; then
      openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$DIR/key.pem" -out "$DIR/cert.pem" 2>/dev/null
    fi
    rm -rf "$DIR/data"
    mkdir -p "$DIR/data"
    (cd "$DIR" && exec nohup "$BIN" broker --listener-url "tcp://127.0.0.1:$INNER" --advertised-listener-url "tcp://localhost:$PORT" \
      --storage-engine "sqlite://data/tansu.db" >"$DIR/tansu.log" 2>&1) &
    echo $! >"$DIR/tansu.pid"
    wait_started "kafka (tansu, plain, behind the TLS proxy)" "$INNER" "$DIR/tansu.pid" "$DIR/tansu.log" 100 >/dev/null
    nohup socat "openssl-listen:$PORT,bind=127.0.0.1,reuseaddr,fork,cert=$DIR/cert.pem,key=$DIR/key.pem,verify=0" "tcp:127.0.0.1:$INNER" \
      >"$DIR/socat.log" 2>&1 &
    echo $! >"$DIR/socat.pid"
    wait_started "kafka over TLS (socat in front of tansu)" "$PORT" "$DIR/socat.pid" "$DIR/socat.log" 100
    echo "trust $DIR/cert.pem (ssl.ca.location)"
    ;;
  ca)
    echo "$DIR/cert.pem"
    ;;
  stop)
    stop_service "$PORT" "$DIR/socat.pid"
    stop_service "$INNER" "$DIR/tansu.pid"
    ;;
  status)
    if port_open "$PORT"; then echo "up on localhost:$PORT (TLS)"; else echo "down"; exit 1; fi
    ;;
  *)
    echo "usage: $0 install|start|ca|stop|status" >&2
    exit 2
    ;;
esac
