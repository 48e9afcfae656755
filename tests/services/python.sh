#!/usr/bin/env bash
# Installs the Python clients the end-to-end tests drive (pyarrow's Flight client and the ADBC
# Flight SQL driver), DuckDB (the batch answer the Nexmark queries are checked against) and
# pyiceberg with its SQL catalog (reads back the Iceberg sink's tables) when they are missing.
#
#   bash tests/services/python.sh
set -euo pipefail
PY="${PYTHON:-python3}"
if "$PY" -c "import pyarrow.flight, adbc_driver_flightsql.dbapi, duckdb, pyiceberg.catalog.sql, sqlalchemy, psycopg" >/dev/null 2>&1; then
    echo "== python clients: present"
    exit 0
fi
echo "== python clients: installing pyarrow, adbc-driver-flightsql, duckdb and pyiceberg"
"$PY" -m pip install --quiet --disable-pip-version-check pyarrow adbc-driver-flightsql adbc-driver-manager duckdb 'pyiceberg[sql-postgres]==0.12.0' 'psycopg[binary]'
