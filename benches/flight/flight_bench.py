#!/usr/bin/env python3
"""Arrow Flight throughput of a running `ferris-sql serve`: a pyarrow subscriber reading a live
stream, and an ADBC Flight SQL client reading the job's retained table.

    target/release/ferris-sql serve &                   # REST on 8080, Flight on 50051
    python3 benches/flight/flight_bench.py --bids target/nexmark/1000000/bid.jsonl --rows 1000000

Deploys `flight_bench` (a tailed copy of the bids, `SELECT auction, bidder, price, date_time`,
a flight_sink retaining every row), subscribes, appends the bids, and times the subscription
from the first to the last row; then times `SELECT * FROM flight_bench` over Flight SQL.
"""
import argparse
import json
import os
import tempfile
import time
import urllib.request

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow.flight as fl


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bids", default="target/nexmark/1000000/bid.jsonl")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--http", default="http://127.0.0.1:8080")
    ap.add_argument("--flight", default="grpc://127.0.0.1:50051")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp()
    tailed = os.path.join(tmp, "bids.jsonl")
    with open(a.bids) as src:
        lines = [l for _, l in zip(range(a.rows), src)]
    with open(tailed, "w") as f:
        f.write(lines[0])
    sql = (
        "CREATE STREAM flight_bench AS SELECT auction, bidder, price, date_time FROM bid INTO live WITH ("
        f"'bid.type' = 'file_source', 'bid.path' = '{tailed}', 'bid.watch' = 'true', "
        "'bid.schema' = 'auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, date_time VARCHAR, extra VARCHAR', "
        f"'live.type' = 'flight_sink', 'live.retain.rows' = '{len(lines)}');"
    )
    req = urllib.request.Request(f"{a.http}/api/jobs", data=sql.encode(), method="POST")
    print(urllib.request.urlopen(req).read().decode())
    reader = fl.connect(a.flight).do_get(fl.Ticket(b"flight_bench"))
    got = reader.read_chunk().data.num_rows  # the first line, retained
    with open(tailed, "a") as f:
        f.writelines(lines[1:])
    first = None
    nbytes = 0
    while got < len(lines):
        chunk = reader.read_chunk().data
        first = first or time.perf_counter()
        got += chunk.num_rows
        nbytes += chunk.nbytes
    live_s = time.perf_counter() - first
    print(f"live subscription: {got} rows in {live_s:.2f} s = {got / live_s:,.0f} rows/s ({nbytes / live_s / 1e6:,.0f} MB/s of Arrow)")
    cur = flight_sql.connect(a.flight, autocommit=True).cursor()
    t = time.perf_counter()
    cur.execute("SELECT * FROM flight_bench")
    table = cur.fetch_arrow_table()
    sql_s = time.perf_counter() - t
    print(f"Flight SQL SELECT * of the retained table: {table.num_rows} rows in {sql_s:.2f} s = {table.num_rows / sql_s:,.0f} rows/s")
    urllib.request.urlopen(urllib.request.Request(f"{a.http}/api/jobs/flight_bench", method="DELETE")).read()
    print(json.dumps({"live_rows_per_s": got / live_s, "flight_sql_rows_per_s": table.num_rows / sql_s}))


if __name__ == "__main__":
    main()
