"""Reads an Iceberg table with DuckDB's `iceberg` extension, as a second, independent reader.

    python3 duckdb_iceberg.py TABLE_DIR OUT.parquet

TABLE_DIR is a filesystem (Hadoop-layout) table's directory; DuckDB finds the current metadata
through `metadata/version-hint.text` (`iceberg_scan`) and the rows are written to OUT.parquet for
the test to compare with DataFusion's answer. Runs on the DuckDB that `tests/services/python.sh`
installs with the extension's PyPI wheel in a virtual environment of its own (DuckDB 1.5.5:
the newest release whose `iceberg` extension is on PyPI; DuckDB's extension server is not
reachable here).
"""
import sys

import duckdb
import duckdb_extensions


def main() -> None:
    table, out = sys.argv[1], sys.argv[2]
    con = duckdb.default_connection()
    for ext in ("avro", "iceberg"):
        duckdb_extensions.import_extension(ext, con=con)
        con.execute(f"LOAD {ext}")
    escaped = table.replace("'", "''")
    con.execute(f"COPY (SELECT * FROM iceberg_scan('{escaped}')) TO '{out}' (FORMAT parquet)")


if __name__ == "__main__":
    main()
