#!/usr/bin/env bash
# Runs each coverage-guided fuzzer (cargo-fuzz, libFuzzer) for a bounded time. Not part of CI:
# the fuzzers need an instrumented build of their own (the engine and DataFusion included:
# about 20 minutes the first time on 2 cores). CI replays the corpora instead
# (fuzz/tests/corpora.rs).
#
#   bash fuzz/run.sh [seconds per target, default 120] [target ...]
#
# Targets: sql, config, substitution, json, csv, avro (bodies in fuzz/src/lib.rs).
# New interesting inputs are merged into fuzz/corpus/<target>/ (minimised, small files only);
# an input that crashes a target is left in fuzz/cargo-fuzz/artifacts/<target>/: once fixed,
# copy it to fuzz/regressions/<target>/ so that the ordinary tests keep replaying it.
# SANITIZER=address builds with AddressSanitizer (slower; the default, none, finds panics).
# PROFILE=release builds optimised (faster fuzzing, a build about twice as long); the default,
# dev, is optimised at level 1 (fuzz/cargo-fuzz/Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-120}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(sql config substitution json csv avro)
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
# the same dependency versions as the workspace
cp ../Cargo.lock cargo-fuzz/Cargo.lock
# cargo-fuzz passes -Z flags to rustc; this machine has a stable toolchain only
export RUSTC_BOOTSTRAP=1
sanitizer=${SANITIZER:-none}
profile=()
[ "${PROFILE:-dev}" = release ] || profile=(--dev)
echo "== building the fuzzers (sanitizer: $sanitizer)"
cargo fuzz build --fuzz-dir cargo-fuzz "${profile[@]}" --sanitizer "$sanitizer"
status=0
for t in "${targets[@]}"; do
    echo "== fuzzing '$t' for ${secs}s"
    found=$(mktemp -d)
    # the project's own statements and YAML files are seeds too
    case "$t" in
        sql) seeds=(../configs ../benches/nexmark) ;;
        config) seeds=(../configs) ;;
        *) seeds=() ;;
    esac
    # new inputs land in a scratch corpus first; the seeds are read from the committed one
    if ! cargo fuzz run --fuzz-dir cargo-fuzz "${profile[@]}" --sanitizer "$sanitizer" "$t" "$found" "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 2>"$found.log"; then
        echo "!! '$t' failed: see $found.log and fuzz/cargo-fuzz/artifacts/$t/" >&2
        tail -40 "$found.log" >&2
        status=1
        continue
    fi
    grep -E "stat::number_of_executed_units|stat::new_units_added" "$found.log" | sed "s/^/   $t /" || true
    # keep the committed corpus small: merge only inputs that add coverage, up to 256 bytes
    cargo fuzz run --fuzz-dir cargo-fuzz "${profile[@]}" --sanitizer "$sanitizer" "$t" "corpus/$t" "$found" -- -merge=1 -max_len=256 2>>"$found.log" >/dev/null || true
    echo "   $t corpus: $(ls "corpus/$t" | wc -l) files"
    rm -rf "$found"
done
exit $status
