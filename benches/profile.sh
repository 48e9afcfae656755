#!/usr/bin/env bash
# Where the CPU time of each Nexmark query goes: `perf record` of `ferris-sql run` over the
# JSON Lines files (FORMAT=parquet: the Parquet files), self time per symbol (top 25), one file
# per query under benches/results/profiles/. Needs `perf` and a release build of ferris-sql,
# and the files of `bash benches/run.sh --events N` (or nexmark-gen).
#
#   bash benches/profile.sh [EVENTS] [QUERIES...]     # default: 5000000, q0-q5, q7, q8, q12
#   FORMAT=parquet bash benches/profile.sh 10000000 q18 q10 q19 q2 q22
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-5000000}"
shift || true
queries=("$@")
[ "${#queries[@]}" -gt 0 ] || queries=(q0 q1 q2 q3 q4 q5 q7 q8 q12)
format="${FORMAT:-jsonl}"
command -v perf >/dev/null || { echo "perf is needed" >&2; exit 1; }
dir="target/nexmark/$events"
[ -f "$dir/bid.$format" ] || { echo "no $dir/bid.$format: run benches/run.sh --events $events first" >&2; exit 1; }
mkdir -p benches/results/profiles
for q in "${queries[@]}"; do
    out="benches/results/profiles/nexmark-$q-$format.txt"
    data=$(mktemp)
    # q10 writes about 1 GB of CSV at 10M events: gone with the profile
    written=$(mktemp -d)
    NEXMARK_DIR="$dir" NEXMARK_FORMAT="$format" NEXMARK_OUT="$written" perf record -q -e cpu-clock -F 499 -g -o "$data" \
        target/release/ferris-sql run "benches/nexmark/$q.sql" --no-progress >/dev/null 2>&1
    {
        echo "# Nexmark $q, $events events, $format, $(nproc) cores: where the CPU time goes"
        echo "# perf record -e cpu-clock -F 499 -g target/release/ferris-sql run benches/nexmark/$q.sql (NEXMARK_DIR=$dir NEXMARK_FORMAT=$format), $(date +%F)"
        echo "# self time per symbol, top 25"
        perf report -i "$data" --no-children --sort symbol -g none 2>/dev/null | grep -v '^#' | grep '%' | head -25 || true
    } > "$out"
    rm -rf "$data" "$written"
    echo "wrote $out"
done
