#!/usr/bin/env python3
"""Runs the file benchmarks' queries on DuckDB and Polars, on the same files the criterion
benchmarks generate (target/bench-data/), and prints rows/s for each, to put our figures in
ratio. Run by hand, after `cargo bench -p ferris-engine --bench file_pipeline` made the files:

    pip install -r benches/compare/requirements.txt
    python3 benches/compare/file_queries.py [--rows 10000000]
"""
import argparse, os, time
from pathlib import Path

import duckdb
import polars as pl

data = Path(__file__).resolve().parents[2] / "target" / "bench-data"


def best_of(n, f):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    m = data / f"measurements_{a.rows}.txt"
    jsonl, parquet = data / "orders_1m.jsonl", data / "orders_1m.parquet"
    out = data / "compare_out"
    out.mkdir(exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET threads TO {os.cpu_count()}")
    results = []

    def duck_1brc():
        con.execute(f"""SELECT station, MIN(t), AVG(t), MAX(t) FROM read_csv('{m}', delim=';', header=false,
            columns={{'station': 'VARCHAR', 't': 'DOUBLE'}}) GROUP BY station""").fetchall()

    def polars_1brc():
        (pl.scan_csv(m, separator=";", has_header=False, new_columns=["station", "t"],
                     schema_overrides={"station": pl.Utf8, "t": pl.Float64})
         .group_by("station").agg(pl.col("t").min().alias("min_t"), pl.col("t").mean().alias("mean_t"),
                                     pl.col("t").max().alias("max_t")).collect())

    q = "SELECT order_id, customer_id, amount * 1.2 AS gross FROM {src} WHERE status = 'PENDING' AND amount > 100"

    def duck_fp(src, name):
        def f():
            con.execute(f"COPY ({q.format(src=src)}) TO '{out / name}' (FORMAT json)")
        return f

    def polars_fp(scan, name):
        def f():
            (scan().filter((pl.col("status") == "PENDING") & (pl.col("amount") > 100))
             .select("order_id", "customer_id", (pl.col("amount") * 1.2).alias("gross"))
             .sink_ndjson(out / name))
        return f

    for name, rows, f in [
        ("onebrc duckdb", a.rows, duck_1brc),
        ("onebrc polars", a.rows, polars_1brc),
        ("jsonl_to_jsonl duckdb", 1_000_000, duck_fp(f"read_json('{jsonl}', format='newline_delimited')", "d1.jsonl")),
        ("jsonl_to_jsonl polars", 1_000_000, polars_fp(lambda: pl.scan_ndjson(jsonl), "p1.jsonl")),
        ("parquet_to_jsonl duckdb", 1_000_000, duck_fp(f"read_parquet('{parquet}')", "d2.jsonl")),
        ("parquet_to_jsonl polars", 1_000_000, polars_fp(lambda: pl.scan_parquet(parquet), "p2.jsonl")),
    ]:
        s = best_of(a.repeat, f)
        results.append((name, rows, s))
        print(f"{name:28s} {rows:>12,d} rows  {s:8.3f} s  {rows / s / 1e6:8.2f} M rows/s", flush=True)


if __name__ == "__main__":
    main()
