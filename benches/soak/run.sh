#!/usr/bin/env bash
# Shows that stateful streaming queries reach a memory plateau: runs the interval join and the
# sliding window of this folder, and Nexmark q5, q7 and q8 as written in benches/nexmark/ (a
# watermark delay of 1 s added to each source with an event time), over growing Nexmark inputs
# and prints peak RSS for each. With the watermark delay (state evicted) peak RSS stays flat as
# the input grows; the same queries without a delay (state kept to the end) are shown beside them.
#   bash benches/soak/run.sh [EVENTS...]        (default: 1000000 3000000 10000000)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p ferris-server -p ferris-bench 2>/dev/null

if [ $# -gt 0 ]; then sizes=("$@"); else sizes=(1000000 3000000 10000000); fi
printf '%-16s %-10s %12s %10s %14s %12s\n' query watermark events seconds events/s peak_rss_MiB
for n in "${sizes[@]}"; do
  dir="target/nexmark/$n"
  [ -f "$dir/bid.parquet" ] || target/release/nexmark-gen --events "$n" --out "$dir" >/dev/null
  for q in interval_join sliding_window q5 q7 q8; do
    for mode in delay end; do
      if [ -f "benches/soak/$q.sql" ]; then
        sql="benches/soak/$q.sql"
        if [ "$mode" = end ]; then
          sql="$(mktemp --suffix=.sql)"
          sed "s/, '[a-z]*.watermark.delay' = '1s'//" "benches/soak/$q.sql" > "$sql"
        fi
      else
        sql="benches/nexmark/$q.sql"
        if [ "$mode" = delay ]; then
          sql="$(mktemp --suffix=.sql)"
          sed "s/'\([a-z]*\).event_time' = 'date_time'/'\1.event_time' = 'date_time', '\1.watermark.delay' = '1s'/g" "benches/nexmark/$q.sql" > "$sql"
        fi
      fi
      report=$(NEXMARK_DIR="$dir" target/release/ferris-sql run "$sql" --no-progress --report-json 2>/dev/null | tail -1)
      python3 - "$q" "$mode" "$report" <<'PY'
import json, sys
q, mode, r = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
events = sum(s["records"] for s in r["sources"])
secs = r["elapsed_seconds"]
print(f"{q:16s} {'1s delay' if mode == 'delay' else 'end only':10s} {events:12d} {secs:10.2f} {events / secs:14.0f} {r['peak_rss_mb']:12.0f}")
PY
    done
  done
done
