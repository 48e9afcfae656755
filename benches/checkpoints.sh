#!/usr/bin/env bash
# What checkpoints cost: the same stateful jobs over the same Nexmark bids, without checkpoints,
# with `checkpoint.interval = 1s` (at least once) and with `use_transactions` (exactly once,
# 1 s), in one session on one machine. Prints a markdown table: seconds (best of --repeat),
# events/s, the ratio to the run without checkpoints, peak RSS, checkpoints taken, their mean
# and longest duration (barrier to manifest) and the state of the last one.
#
#   bash benches/checkpoints.sh [--events 10000000] [--repeat 3]
set -euo pipefail
cd "$(dirname "$0")/.."
events=10000000
repeat=3
while [ $# -gt 0 ]; do
    case "$1" in
        --events) events="$2"; shift 2 ;;
        --repeat) repeat="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
cargo build --release -p ferris-server -p ferris-bench >&2
dir="target/nexmark/$events"
if [ ! -f "$dir/bid.parquet" ]; then
    target/release/nexmark-gen --events "$events" --out "$dir" >&2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# name | query (FROM bid, or bid and auction)
queries=(
    "hop|SELECT auction, COUNT(*) AS num, window_start FROM bid GROUP BY HOP(date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND), auction"
    "tumble|SELECT bidder, COUNT(*) AS n, SUM(price) AS total, MAX(price) AS top, window_start FROM bid GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND), bidder"
    "interval_join|SELECT b.auction, b.price, a.seller FROM bid b JOIN auction a ON b.auction = a.id AND b.date_time BETWEEN a.date_time AND a.date_time + INTERVAL '10' SECOND"
)
modes=(
    "none|"
    "1s|, 'checkpoint.interval' = '1s'"
    "1s exactly-once|, 'checkpoint.interval' = '1s', 'use_transactions' = 'true'"
)

echo "| query | checkpoints | seconds | events/s | vs none | peak RSS MB | checkpoints taken | mean ms | longest ms | last state KiB |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for q in "${queries[@]}"; do
    name="${q%%|*}"
    sql="${q#*|}"
    base=""
    for m in "${modes[@]}"; do
        mode="${m%%|*}"
        keys="${m#*|}"
        best=""
        for _ in $(seq 1 "$repeat"); do
            rm -rf "$work/checkpoints"
            auction=""
            case "$sql" in *"JOIN auction"*)
                auction="'auction.type' = 'file_source', 'auction.path' = '$PWD/$dir/auction.parquet', 'auction.event_time' = 'date_time'," ;;
            esac
            cat > "$work/job.sql" <<EOF
CREATE STREAM $name AS $sql INTO nowhere
WITH ('bid.type' = 'file_source', 'bid.path' = '$PWD/$dir/bid.parquet', 'bid.event_time' = 'date_time', $auction
      'nowhere.type' = 'blackhole'$keys);
EOF
            report=$(cd "$work" && RUST_LOG=warn "$OLDPWD/target/release/ferris-sql" run --report-json --no-progress job.sql 2>/dev/null | tail -1)
            secs=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["elapsed_seconds"])' "$report")
            if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if $secs < ${best%% *} else 1)"; then
                best="$secs $report"
            fi
        done
        secs="${best%% *}"
        report="${best#* }"
        [ -z "$base" ] && base="$secs"
        python3 - "$name" "$mode" "$secs" "$base" "$report" <<'PY'
import json, sys
name, mode, secs, base, report = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), json.loads(sys.argv[5])
events = sum(s["records"] for s in report["sources"])
n = report.get("checkpoints", 0)
mean = report.get("checkpoint_total_ms", 0) / n if n else 0
print(f"| {name} | {mode} | {secs:.2f} | {events / secs / 1e6:.2f} M | {base / secs:.2f}× | {report.get('peak_rss_mb', 0):.0f} | {n} | {mean:.0f} | {report.get('checkpoint_max_ms', 0)} | {report.get('checkpoint_bytes', 0) / 1024:.0f} |")
PY
    done
done
