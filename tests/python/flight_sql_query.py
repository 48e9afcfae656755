"""Runs SQL on a FerrisStreams server with the ADBC Flight SQL driver, as an analyst would.

    python3 flight_sql_query.py PORT "SQL" ["SQL" ...]

Prints, for each query, a line `-- query N` followed by its rows, one JSON object per line.
The query `@tables` prints the catalogue's tables (ADBC GetObjects) as one JSON list instead.
A query that fails prints `-- error: <message>` and the script goes on. FERRIS_AUTH_TOKEN,
when set, is sent as a bearer token.
"""
import json
import os
import sys

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flight_sql


def main() -> None:
    port, queries = sys.argv[1], sys.argv[2:]
    kwargs = {}
    token = os.environ.get("FERRIS_AUTH_TOKEN")
    if token:
        kwargs[adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value] = f"Bearer {token}"
    with flight_sql.connect(f"grpc://127.0.0.1:{port}", db_kwargs=kwargs, autocommit=True) as conn:
        for i, q in enumerate(queries):
            print(f"-- query {i + 1}", flush=True)
            if q == "@tables":
                objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
                names = [t["table_name"] for c in objects for s in c["catalog_db_schemas"] for t in s["db_schema_tables"]]
                print(json.dumps(sorted(names)))
                continue
            try:
                with conn.cursor() as cur:
                    cur.execute(q)
                    table = cur.fetch_arrow_table()
            except Exception as e:  # the test asserts on the message
                print(f"-- error: {e}".replace("\n", " "))
                continue
            for r in table.to_pylist():
                print(json.dumps(r, default=str))


if __name__ == "__main__":
    main()
