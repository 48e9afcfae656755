#!/usr/bin/env bash
# The user's guide's complete examples ("Real-World Examples") on this machine's stand-ins, their
# SQL unchanged: one command each, from the repository's root.
#
#   bash configs/guide/run.sh ecommerce         # Kafka (Avro) + S3 (Parquet) + a JSON file -> Kafka, file, S3
#   bash configs/guide/run.sh financial         # Kafka over TLS (Avro) + PostgreSQL + S3 + a lookup API -> files, PostgreSQL, exactly once
#   bash configs/guide/run.sh iot               # four Kafka topics joined WITHIN 2 minutes -> Kafka, S3, a dashboard API
#   bash configs/guide/run.sh high_throughput   # three jobs: Kafka (Avro, JSON) + Parquet + JSON -> Kafka, files, S3, a webhook
#
# For each example: starts the services it needs (tests/services/*.sh, installed the first
# time), makes its buckets, puts its input where it reads it (profile `load` of
# configs/guide/<example>/ferris.yaml), then runs it as the guide does —
# `ferris-sql --config configs/guide/<example>/ferris.yaml` — until its output has stopped
# growing for a few seconds (FOREVER=1: until Ctrl-C), and says where the output is.
#
# FERRIS_SQL=path runs that binary (else target/debug/ferris-sql, built when missing).
# GUIDE_OUT (default out/guide) is where files go; GUIDE_RUN (default empty) suffixes topics and
# buckets so that runs on one broker and S3 server do not mix.
set -euo pipefail
cd "$(dirname "$0")/../.."
example="${1:-}"
case "$example" in
  ecommerce) services="kafka s3"; buckets="customer-data analytics-lake"; watch="audit"; http=""; settle=5 ;;
  financial) services="kafka_tls s3 postgres"; buckets="risk-data"; watch="audit fraud_alerts"; http=1; settle=8 ;;
  iot) services="kafka s3"; buckets="sensor-data-lake"; watch="http"; http=1; settle=5 ;;
  high_throughput) services="kafka s3"; buckets="financial-analytics"; watch="audit large_records http"; http=1; settle=12 ;;  # its batch.timeout is 10 s
  *) echo "usage: bash configs/guide/run.sh ecommerce|financial|iot|high_throughput" >&2; exit 2 ;;
esac
export GUIDE_OUT="${GUIDE_OUT:-out/guide}" GUIDE_RUN="${GUIDE_RUN:-}"
export S3_ENDPOINT="${S3_ENDPOINT:-http://127.0.0.1:9190}"
# PostgreSQL tables take the run's suffix with underscores; the TLS broker's certificate
export GUIDE_TABLE_SUFFIX="${GUIDE_RUN//-/_}"
export PG_URL="${PG_URL:-$(bash tests/services/postgres.sh url)}"
export KAFKA_TLS_CA="${KAFKA_TLS_CA:-$(bash tests/services/kafka_tls.sh ca)}"
export LOCATION_API_TOKEN="${LOCATION_API_TOKEN:-guide-demo-token}"
# the IoT example's dashboard token (${DASHBOARD_TOKEN} in its SQL); the stand-in checks it
export DASHBOARD_TOKEN="${DASHBOARD_TOKEN:-guide-demo-token}"
for s in $services; do
  bash "tests/services/$s.sh" install >/dev/null
  bash "tests/services/$s.sh" start >/dev/null
done
if [ -z "${FERRIS_SQL:-}" ]; then
  [ -x target/debug/ferris-sql ] || cargo build --quiet --bin ferris-sql
  FERRIS_SQL=target/debug/ferris-sql
fi
for b in $buckets; do
  python3 tests/python/s3_objects.py "$S3_ENDPOINT" mkbucket "$b$GUIDE_RUN" >/dev/null 2>&1 || true
done
config="configs/guide/$example/ferris.yaml"
rm -rf "${GUIDE_OUT:?}/$example"
mkdir -p "$GUIDE_OUT/$example"
if [ -n "$http" ]; then
  # the web services' stand-in: webhooks append to $GUIDE_OUT/<example>/http/<path>.jsonl
  export GUIDE_HTTP_PORT="${GUIDE_HTTP_PORT:-9280}"
  case "$example" in iot) token="$DASHBOARD_TOKEN" ;; financial) token="$LOCATION_API_TOKEN" ;; *) token="" ;; esac
  # the financial example's location API answers data/guide/locations.json
  mkdir -p "$GUIDE_OUT/$example/http"
  [ "$example" != financial ] || cp data/guide/locations.json "$GUIDE_OUT/$example/http/lookup.json"
  GUIDE_TOKEN="$token" python3 configs/guide/webhook.py "$GUIDE_HTTP_PORT" "$GUIDE_OUT/$example/http" &
  http_pid=$!
  trap 'kill $http_pid 2>/dev/null || true' EXIT
  for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$GUIDE_HTTP_PORT") 2>/dev/null && break; sleep 0.1; done
fi
echo "== loading the input ($config, profile load)"
"$FERRIS_SQL" --config "$config" --profile load 2>"$GUIDE_OUT/$example/load.log" || { cat "$GUIDE_OUT/$example/load.log" >&2; exit 1; }
echo "== running the example: $FERRIS_SQL --config $config (log: $GUIDE_OUT/$example/job.log)"
"$FERRIS_SQL" --config "$config" 2>"$GUIDE_OUT/$example/job.log" &
pid=$!
trap 'kill -INT $pid 2>/dev/null || true' INT TERM
if [ -n "${FOREVER:-}" ]; then
  wait "$pid"
  exit $?
fi
# stop once output has come and none came for $settle seconds (or after 120 seconds)
rows() { (cd "$GUIDE_OUT/$example" && { find $watch -type f -exec cat {} + 2>/dev/null || true; }) | wc -l; }
last=-1; still=0
for _ in $(seq 1 240); do
  sleep 0.5
  kill -0 "$pid" 2>/dev/null || break
  now=$(rows)
  if [ "$now" -gt 0 ] && [ "$now" = "$last" ]; then still=$((still + 1)); else still=0; fi
  last=$now
  [ "$still" -ge $((settle * 2)) ] && break
done
kill -INT "$pid" 2>/dev/null || true
status=0
wait "$pid" || status=$?
tail -4 "$GUIDE_OUT/$example/job.log"
echo "== $(rows) rows in $GUIDE_OUT/$example/{${watch// /,}} (and the example's other sinks)"
exit "$status"
