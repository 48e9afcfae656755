#!/usr/bin/env bash
# Installs the Python clients the end-to-end tests drive (pyarrow's Flight client and the ADBC
# Flight SQL driver), DuckDB (the batch answer the Nexmark queries are checked against) and
# pyiceberg with its SQL catalog (reads back the Iceberg sink's tables) when they are missing;
# and, in a virtual environment of its own, DuckDB 1.5.5 with its `iceberg` and `avro`
# extensions from PyPI (the newest DuckDB whose extension wheels are there; DuckDB's extension
# server is not reachable), the second reader of the Iceberg tables (and, with httpfs, the S3
# benchmark's peer). Prints nothing else.
#
#   bash tests/services/python.sh
#   bash tests/services/python.sh duckdb-iceberg-python   # that environment's python
set -euo pipefail
PY="${PYTHON:-python3}"
DUCK_VENV="${FERRIS_DUCKDB_ICEBERG_VENV:-$HOME/.cache/ferris/duckdb-iceberg}"
if [ "${1:-}" = duckdb-iceberg-python ]; then
    echo "$DUCK_VENV/bin/python"
    exit 0
fi
if ! "$DUCK_VENV/bin/python" -c "import duckdb_extensions, duckdb_extension_iceberg, duckdb_extension_avro, duckdb_extension_httpfs" >/dev/null 2>&1; then
    echo "== DuckDB 1.5.5 with the iceberg extension: installing into $DUCK_VENV"
    "$PY" -m venv "$DUCK_VENV"
    "$DUCK_VENV/bin/python" -m pip install --quiet --disable-pip-version-check duckdb==1.5.5 duckdb-extensions==1.5.5 duckdb-extension-iceberg==1.5.5 duckdb-extension-avro==1.5.5 duckdb-extension-httpfs==1.5.5
fi
if "$PY" -c "import pyarrow.flight, adbc_driver_flightsql.dbapi, duckdb, pyiceberg.catalog.sql, sqlalchemy, psycopg" >/dev/null 2>&1; then
    echo "== python clients: present"
    exit 0
fi
echo "== python clients: installing pyarrow, adbc-driver-flightsql, duckdb and pyiceberg"
"$PY" -m pip install --quiet --disable-pip-version-check pyarrow adbc-driver-flightsql adbc-driver-manager duckdb 'pyiceberg[sql-postgres]==0.12.0' 'psycopg[binary]'
