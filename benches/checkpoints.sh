#!/usr/bin/env bash
# What checkpoints cost: the same streaming jobs over the same Nexmark bids (tailed JSON Lines
# files) with no checkpoint during the run, with `checkpoint.interval = 1s` (at least once) and
# with `use_transactions` (exactly once, 1 s), in one session on one machine; see
# benches/checkpoints.py for what is timed. Prints a markdown table.
#
#   bash benches/checkpoints.sh [--events 2000000] [--repeat 3]
#   FERRIS_NO_BUILD=1 bash benches/checkpoints.sh …   # with the release binaries already built
#   … --queries over --modes none,1s   # (passed on to benches/checkpoints.py)
set -euo pipefail
cd "$(dirname "$0")/.."
events=2000000
repeat=3
more=()
while [ $# -gt 0 ]; do
    case "$1" in
        --events) events="$2"; shift 2 ;;
        --repeat) repeat="$2"; shift 2 ;;
        --queries|--modes) more+=("$1" "$2"); shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -n "${FERRIS_NO_BUILD:-}" ] || cargo build --release -p ferris-server -p ferris-bench >&2
dir="target/nexmark/$events"
if [ ! -f "$dir/bid.jsonl" ]; then
    target/release/nexmark-gen --events "$events" --out "$dir" >&2
fi
exec python3 benches/checkpoints.py --dir "$dir" --binary "$PWD/target/release/ferris-sql" --repeat "$repeat" "${more[@]}"
