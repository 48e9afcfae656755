#!/usr/bin/env bash
# Installs every service and client the tests use, each only when it is missing: the Python
# clients, moto's S3 server, PostgreSQL, Redis, the tansu Kafka broker (cargo install, about 20
# minutes on 2 cores the first time), Azurite, fake-gcs-server and qemu's user-mode emulator.
# tests/run.sh runs it first. (Run in the background beside clippy's build in .ci/run, it made
# both slower: on a fresh clone the services were up after 2189 s instead of about 1460.)
#
#   bash tests/services/install.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

bash tests/services/python.sh
bash tests/services/s3.sh install
bash tests/services/postgres.sh install
bash tests/services/redis.sh install
bash tests/services/azure.sh install
bash tests/services/gcs.sh install
bash tests/services/qemu.sh install
bash tests/services/kafka.sh install
