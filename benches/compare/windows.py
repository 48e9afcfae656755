"""Windowed aggregates by key: FerrisStreams' `ferris-sql run` against DuckDB's GROUP BY over the
same Parquet file, in turn, in one session.

The input: N rows 10 ms apart over 1000 keys (`key-0` … `key-999`, drawn at random with a fixed
seed), columns `id`, `k`, `ts` (epoch ms), `amount`: ~100 rows per 1 s window, so nearly every row
starts a group of its own — the hard case for a windowed aggregate. Four queries, each into a
blackhole (FerrisStreams) or counted (DuckDB):

- `TUMBLE(ts, 1 s)` by `k`, `COUNT(*)`, `SUM(amount)`, with a watermark delay of 1 s (windows
  close as the rows go by) and without one (every window open until the end of the input);
- `HOP(ts, 1 s, 5 s)` by `k`, `COUNT(*)`, the same two ways.

DuckDB computes the same groups as a batch: `GROUP BY k, ts // 1000` and, for HOP, each row
joined with the five windows that hold it. The number of result rows of both engines is compared.

    cargo build --release -p ferris-server
    python3 benches/compare/windows.py [--rows 10000000] [--rounds 2]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

QUERIES = {
    "tumble": (
        "SELECT window_start, k, COUNT(*) AS n, SUM(amount) AS total FROM t GROUP BY TUMBLE(ts, INTERVAL '1' SECOND), k",
        "SELECT k, ts // 1000 AS w, COUNT(*) AS n, SUM(amount) AS total FROM '{path}' GROUP BY k, ts // 1000",
    ),
    "hop": (
        "SELECT window_start, k, COUNT(*) AS n FROM t GROUP BY HOP(ts, INTERVAL '1' SECOND, INTERVAL '5' SECOND), k",
        "SELECT k, w, COUNT(*) AS n FROM (SELECT k, unnest(range(ts // 1000 - 4, ts // 1000 + 1)) AS w FROM '{path}') GROUP BY k, w",
    ),
}


def make_input(path, rows):
    if os.path.exists(path) and pq.ParquetFile(path).metadata.num_rows == rows:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(42)
    keys = np.array([f"key-{i}" for i in range(1000)])
    table = pa.table(
        {
            "id": np.arange(rows, dtype=np.int64),
            "k": keys[rng.integers(0, 1000, rows)],
            "ts": 1_700_000_000_000 + np.arange(rows, dtype=np.int64) * 10,
            "amount": np.round(rng.integers(0, 100_000, rows) / 100.0, 2),
        }
    )
    pq.write_table(table, path, row_group_size=1 << 20)


def ferris(binary, path, name, delay):
    sql, _ = QUERIES[name]
    delay_key = ", 't.watermark.delay' = '1s'" if delay else ""
    statement = (
        f"CREATE STREAM w AS {sql}\nINTO nowhere WITH ('t.type' = 'file_source', 't.path' = '{path}', "
        f"'t.event_time' = 'ts'{delay_key}, 'nowhere.type' = 'blackhole');\n"
    )
    return run_statement(binary, statement, name)


def run_statement(binary, statement, name):
    """Runs one `CREATE STREAM` with `ferris-sql run --report-json`: (elapsed seconds, rows out,
    peak RSS MiB)."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(statement)
    try:
        out = subprocess.run([binary, "run", f.name, "--no-progress", "--report-json"], capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    if out.returncode != 0:
        sys.exit(f"ferris-sql failed on {name}: {out.stderr[-2000:]}")
    report = json.loads(out.stdout.strip().splitlines()[-1])
    return report["elapsed_seconds"], report.get("rows_out"), report.get("peak_rss_mb")


def duck(con, path, name):
    _, sql = QUERIES[name]
    start = time.perf_counter()
    rows = con.sql(f"SELECT count(*) FROM ({sql.format(path=path)})").fetchall()[0][0]
    return time.perf_counter() - start, rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ferris", default=os.path.join(ROOT, "target/release/ferris-sql"))
    args = ap.parse_args()
    path = os.path.join(ROOT, f"target/bench-data/windows-{args.rows}.parquet")
    make_input(path, args.rows)
    con = duckdb.connect()
    print(f"{args.rows} rows, best of {args.rounds}")
    print("| query | FerrisStreams | peak RSS | DuckDB | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name in QUERIES:
        duck_best, duck_rows = min(duck(con, path, name) for _ in range(args.rounds))
        for delay in (True, False):
            runs = [ferris(args.ferris, path, name, delay) for _ in range(args.rounds)]
            best, rows, rss = min(runs)
            if rows is not None and rows != duck_rows:
                sys.exit(f"{name}: FerrisStreams wrote {rows} rows, DuckDB {duck_rows}")
            label = f"{name} by key, " + ("watermark delay 1 s" if delay else "no watermark delay")
            print(f"| {label} | {best:.2f} s | {rss:.0f} MiB | {duck_best:.2f} s | {duck_best / best:.2f}× |")


if __name__ == "__main__":
    main()
