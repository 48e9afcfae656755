#!/usr/bin/env bash
# The Kafka demo: starts the project's broker (tansu; installed the first time, about 20
# minutes), runs configs/kafka_pipeline.sql, and stops it once the enriched orders have
# stopped arriving. Output: out/kafka_enriched_orders.jsonl and the topic demo-enriched-orders.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/services/kafka.sh install
bash tests/services/kafka.sh start
cargo build --quiet --bin ferris-sql
out=out/kafka_enriched_orders.jsonl
rm -f "$out"
target/debug/ferris-sql run configs/kafka_pipeline.sql --no-progress &
pid=$!
# Stop once rows have arrived and none came for 3 seconds (or after 60 seconds).
last=-1; still=0
for _ in $(seq 1 120); do
    sleep 0.5
    now=$(wc -l <"$out" 2>/dev/null || echo 0)
    if [ "$now" -gt 0 ] && [ "$now" = "$last" ]; then still=$((still + 1)); else still=0; fi
    last=$now
    [ "$still" -ge 6 ] && break
done
kill -INT "$pid"
wait "$pid"
echo "$(wc -l <"$out") enriched orders in $out (and on the topic demo-enriched-orders)"
