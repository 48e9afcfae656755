#!/usr/bin/env bash
# A real PostgreSQL server on loopback for the tests and the demo: Debian's package (installed
# with apt-get when missing), a cluster of its own under the services directory, run as the
# `postgres` user (initdb refuses root), password authentication over TCP, a role and database
# `ferris` (password `${PG_PASSWORD:-ferris-test-pw}`), and psycopg for the tests to read back.
# TLS is on, with a certificate for localhost/127.0.0.1 made once (`ca` prints its path), and a
# role `ferris_tls` (password `ferris-tls-pw`) that may log in over TLS only (pg_hba: hostssl).
#
#   bash tests/services/postgres.sh install   # apt-get install postgresql, pip install psycopg, when missing
#   bash tests/services/postgres.sh start     # creates the cluster once, starts it on 127.0.0.1:${PG_PORT:-55432}
#   bash tests/services/postgres.sh stop
#   bash tests/services/postgres.sh status
#   bash tests/services/postgres.sh url       # postgresql://ferris:…@127.0.0.1:PORT/ferris
#   bash tests/services/postgres.sh ca        # the server certificate (the CA a verify-full client trusts)
set -euo pipefail
PORT="${PG_PORT:-55432}"
PY="${PYTHON:-python3}"
PASSWORD="${PG_PASSWORD:-ferris-test-pw}"
STATE="${FERRIS_SERVICES_DIR:-${TMPDIR:-/tmp}/ferris-services}"
DATA="$STATE/postgres-$PORT"
LOG="$STATE/postgres-$PORT.log"
mkdir -p "$STATE"

# shellcheck source=tests/services/common.sh
. "$(dirname "$0")/common.sh"

bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$d" ] || { echo "postgres: no server binaries under /usr/lib/postgresql (run: $0 install)" >&2; return 1; }
  echo "$d"
}

# as_owner CMD…: runs CMD as the cluster's owner (postgres when we are root, else ourselves).
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
  install)
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
      echo "== postgres: installing Debian's postgresql"
      apt_install postgresql
    else
      echo "== postgres: present ($(bindir))"
    fi
    if ! command -v openssl >/dev/null 2>&1; then
      echo "== postgres: installing Debian's openssl (the server's TLS certificate)"
      apt_install openssl
    fi
    if ! "$PY" -c "import psycopg" >/dev/null 2>&1; then
      echo "== postgres: installing psycopg"
      "$PY" -m pip install --quiet --disable-pip-version-check 'psycopg[binary]'
    fi
    ;;
  start)
    if port_open "$PORT"; then
      echo "postgres: something already listens on 127.0.0.1:$PORT"
      exit 0
    fi
    BIN=$(bindir)
    if [ ! -f "$DATA/PG_VERSION" ]; then
      mkdir -p "$DATA"
      [ "$(id -u)" = 0 ] && chown postgres "$DATA" "$STATE"
      pwfile=$(mktemp)
      echo "$PASSWORD" >"$pwfile"
      chmod 644 "$pwfile"
      as_owner "$BIN/initdb" -D "$DATA" -U ferris --pwfile="$pwfile" --auth-host=scram-sha-256 --auth-local=trust -E UTF8 >/dev/null
      rm -f "$pwfile"
    fi
    # TLS: a certificate of its own, and a role that may log in over TLS only
    if [ ! -f "$DATA/server.crt" ]; then
      command -v openssl >/dev/null 2>&1 || { echo "postgres: openssl is needed for the server's TLS certificate (run: $0 install)" >&2; exit 1; }
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$DATA/server.key" -out "$DATA/server.crt" >/dev/null
      chmod 600 "$DATA/server.key"
      [ "$(id -u)" = 0 ] && chown postgres "$DATA/server.key" "$DATA/server.crt"
    fi
    if ! grep -q ferris_tls "$DATA/pg_hba.conf"; then
      { echo "hostnossl all ferris_tls 127.0.0.1/32 reject"; echo "hostssl all ferris_tls 127.0.0.1/32 scram-sha-256"; cat "$DATA/pg_hba.conf"; } >"$DATA/pg_hba.conf.new"
      mv "$DATA/pg_hba.conf.new" "$DATA/pg_hba.conf"
      [ "$(id -u)" = 0 ] && chown postgres "$DATA/pg_hba.conf"
    fi
    touch "$LOG"
    [ "$(id -u)" = 0 ] && chown postgres "$LOG"
    # the port is in the kernel's ephemeral range: a client socket may hold it for a moment
    started=0
    for attempt in 1 2 3; do
      if as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 30 \
        -o "-p $PORT -c listen_addresses=127.0.0.1 -k $DATA -c max_connections=200 -c fsync=off -c ssl=on -c ssl_cert_file=$DATA/server.crt -c ssl_key_file=$DATA/server.key" start >/dev/null; then
        started=1
        break
      fi
      echo "postgres: start attempt $attempt failed; retrying" >&2
      sleep 2
    done
    [ "$started" = 1 ] || { tail -5 "$LOG" >&2; exit 1; }
    for _ in $(seq 1 100); do port_open "$PORT" && break; sleep 0.1; done
    as_owner "$BIN/psql" -h "$DATA" -p "$PORT" -U ferris -d postgres -qtAc "SELECT 1 FROM pg_database WHERE datname='ferris'" | grep -q 1 \
      || as_owner "$BIN/createdb" -h "$DATA" -p "$PORT" -U ferris ferris
    as_owner "$BIN/psql" -h "$DATA" -p "$PORT" -U ferris -d ferris -qtAc "SELECT 1 FROM pg_roles WHERE rolname='ferris_tls'" | grep -q 1 \
      || as_owner "$BIN/psql" -h "$DATA" -p "$PORT" -U ferris -d ferris -qc "CREATE ROLE ferris_tls LOGIN SUPERUSER PASSWORD 'ferris-tls-pw'"
    echo "postgres on 127.0.0.1:$PORT, data $DATA, log $LOG"
    ;;
  stop)
    if [ -f "$DATA/postmaster.pid" ]; then as_owner "$(bindir)/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null || true; fi
    ;;
  status)
    service_status "$PORT"
    ;;
  url)
    echo "postgresql://ferris:$PASSWORD@127.0.0.1:$PORT/ferris"
    ;;
  ca)
    echo "$DATA/server.crt"
    ;;
  *)
    echo "usage: $0 install|start|stop|status|url|ca" >&2
    exit 2
    ;;
esac
