"""High-cardinality keys: FerrisStreams' `ferris-sql run` against DuckDB and Polars on the same
Parquet files, in turn, in one session — elapsed time and peak memory (RSS) of each.

Two inputs (made once under `target/bench-data/`, fixed seed):

- `distinct-N.parquet`: N rows, `k` a random permutation of 0..N (every key once), `amount`.
  Query: an unwindowed `GROUP BY k` with `COUNT(*)`, `SUM(amount)` over bounded input — N groups.
- `hop-N-K.parquet`: N rows over 30 minutes of event time (`ts`, epoch ms, in order), `k` drawn
  from K keys, `amount`. Query: `HOP(ts, 1 min, 5 min)` by `k`, `COUNT(*)`, `SUM(amount)` — with
  1M keys about 800 000 keys in every window, each window's groups held for 5 minutes of event
  time: with a watermark delay of 1 s (windows close as the rows go by) and without one (every
  window held to the end of the input).

DuckDB and Polars compute the same groups as a batch (HOP: each row joined with its five windows,
`unnest`/`explode`); the numbers of result rows are compared. Each engine runs in a process of its
own per query so that its peak RSS is its own (its `VmHWM`; FerrisStreams reports its
own). Results are discarded (DuckDB and Polars: counted; FerrisStreams: a blackhole sink).

    cargo build --release -p ferris-server
    python3 benches/compare/cardinality.py [--rows 10000000] [--keys 1000000] [--rounds 2]
"""

import argparse
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from windows import run_statement

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MINUTE = 60_000

# name -> (FerrisStreams SQL over table t, DuckDB SQL over '{path}', Polars code over `t`)
QUERIES = {
    "group_by": (
        "SELECT k, COUNT(*) AS n, SUM(amount) AS total FROM t GROUP BY k",
        "SELECT k, COUNT(*) AS n, SUM(amount) AS total FROM '{path}' GROUP BY k",
        "t.group_by('k').agg(pl.len().alias('n'), pl.col('amount').sum().alias('total'))",
    ),
    "hop": (
        "SELECT window_start, k, COUNT(*) AS n, SUM(amount) AS total FROM t GROUP BY HOP(ts, INTERVAL '1' MINUTE, INTERVAL '5' MINUTE), k",
        f"SELECT k, w, COUNT(*) AS n, SUM(amount) AS total FROM (SELECT k, amount, unnest(range(ts // {MINUTE} - 4, ts // {MINUTE} + 1)) AS w FROM '{{path}}') GROUP BY k, w",
        f"t.with_columns(w=pl.int_ranges(pl.col('ts') // {MINUTE} - 4, pl.col('ts') // {MINUTE} + 1)).explode('w')"
        ".group_by('k', 'w').agg(pl.len().alias('n'), pl.col('amount').sum().alias('total'))",
    ),
}

# what a child process runs (its imports, then the timed query printing its row count)
CHILD = {
    "duckdb": ("import duckdb, sys", "print(duckdb.connect().sql(f'SELECT count(*) FROM ({sys.argv[1]})').fetchall()[0][0])"),
    "polars": ("import polars as pl, sys", "t = pl.scan_parquet(sys.argv[2])\nprint(eval(sys.argv[1]).select(pl.len()).collect().item())"),
}


def make_distinct(path, rows):
    if os.path.exists(path) and pq.ParquetFile(path).metadata.num_rows == rows:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(7)
    table = pa.table({"k": rng.permutation(rows).astype(np.int64), "amount": rng.integers(0, 100_000, rows).astype(np.int64)})
    pq.write_table(table, path, row_group_size=1 << 20)


def make_hop(path, rows, keys):
    if os.path.exists(path) and pq.ParquetFile(path).metadata.num_rows == rows:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(11)
    span = 30 * MINUTE
    table = pa.table(
        {
            "k": rng.integers(0, keys, rows).astype(np.int64),
            "ts": 1_700_000_000_000 + (np.arange(rows, dtype=np.int64) * span) // rows,
            "amount": rng.integers(0, 100_000, rows).astype(np.int64),
        }
    )
    pq.write_table(table, path, row_group_size=1 << 20)


def ferris(binary, path, name, delay):
    sql = QUERIES[name][0]
    keys = f", 't.event_time' = 'ts'" if name == "hop" else ""
    if delay:
        keys += ", 't.watermark.delay' = '1s'"
    statement = f"CREATE STREAM q AS {sql}\nINTO nowhere WITH ('t.type' = 'file_source', 't.path' = '{path}'{keys}, 'nowhere.type' = 'blackhole');\n"
    return run_statement(binary, statement, name)


def batch(engine, path, name):
    """Runs the query in a child process of its own: (seconds, rows, peak RSS in KiB)."""
    query = QUERIES[name][1].format(path=path) if engine == "duckdb" else QUERIES[name][2]
    imports, run = CHILD[engine]
    # the child's own high-water mark (VmHWM, as ferris-sql reports it): rusage's ru_maxrss
    # would also count this process's pages, shared with the child until it execs
    peak = "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')))"
    code = f"{imports}\nimport time\n_t = time.perf_counter()\n{run}\nprint(time.perf_counter() - _t)\n{peak}\n"
    out = subprocess.run([sys.executable, "-c", code, query, path], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{engine} failed on {name}: {out.stderr[-2000:]}")
    rows, seconds, kib = out.stdout.split()[-3:]
    return float(seconds), int(rows), int(kib)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ferris", default=os.path.join(ROOT, "target/release/ferris-sql"))
    args = ap.parse_args()
    data = os.path.join(ROOT, "target/bench-data")
    inputs = {"group_by": os.path.join(data, f"distinct-{args.rows}.parquet"), "hop": os.path.join(data, f"hop-{args.rows}-{args.keys}.parquet")}
    make_distinct(inputs["group_by"], args.rows)
    make_hop(inputs["hop"], args.rows, args.keys)
    print(f"{args.rows} rows; HOP over {args.keys} keys; best of {args.rounds}; peak RSS of each engine's own process")
    print("| query | FerrisStreams | peak RSS | DuckDB | peak RSS | Polars | peak RSS | vs DuckDB | vs Polars |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, delays in (("hop", (False, True)), ("group_by", (False,))):
        path = inputs[name]
        peers = {}
        for engine in ("polars", "duckdb"):
            runs = [batch(engine, path, name) for _ in range(args.rounds)]
            seconds = min(r[0] for r in runs)
            rows = runs[0][1]
            rss = max(r[2] for r in runs)
            peers[engine] = (seconds, rows, rss)
        if peers["duckdb"][1] != peers["polars"][1]:
            sys.exit(f"{name}: DuckDB gave {peers['duckdb'][1]} rows, Polars {peers['polars'][1]}")
        for delay in delays:
            runs = [ferris(args.ferris, path, name, delay) for _ in range(args.rounds)]
            best, rows, _ = min(runs)
            rss = max(r[2] for r in runs)
            if rows is not None and rows != peers["duckdb"][1]:
                sys.exit(f"{name}: FerrisStreams wrote {rows} rows, DuckDB {peers['duckdb'][1]}")
            label = name + (", watermark delay 1 s" if delay else (", no watermark delay" if name == "hop" else ""))
            (ds, _, drss), (ps, _, prss) = peers["duckdb"], peers["polars"]
            print(
                f"| {label} ({rows} rows out) | {best:.2f} s | {rss:.0f} MiB | {ds:.2f} s | {drss / 1024:.0f} MiB | "
                f"{ps:.2f} s | {prss / 1024:.0f} MiB | {ds / best:.2f}× | {ps / best:.2f}× |"
            )


if __name__ == "__main__":
    main()
