#!/usr/bin/env bash
# Installs the Python clients the end-to-end tests drive (pyarrow's Flight client and the ADBC
# Flight SQL driver) and DuckDB (the batch answer the Nexmark queries are checked against) when
# they are missing.
#
#   bash tests/services/python.sh
set -euo pipefail
PY="${PYTHON:-python3}"
if "$PY" -c "import pyarrow.flight, adbc_driver_flightsql.dbapi, duckdb" >/dev/null 2>&1; then
    echo "== python clients: present"
    exit 0
fi
echo "== python clients: installing pyarrow, adbc-driver-flightsql and duckdb"
"$PY" -m pip install --quiet --disable-pip-version-check pyarrow adbc-driver-flightsql adbc-driver-manager duckdb
