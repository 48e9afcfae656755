"""An interval join against DuckDB's band join on the same Parquet files, in turn, in one session.

Nexmark's bids joined with their auctions within 10 seconds of each other:

- FerrisStreams: `benches/soak/interval_join.sql` as written (`ferris-sql run --report-json`),
  `JOIN … ON b.auction = a.id WITHIN INTERVAL '10' SECONDS` with a watermark delay of 1 s on
  both sources, so the join runs as a stream (state evicted as the watermark passes), into a
  blackhole; and the same statement without the delays (`--no-delay`), where a bounded join
  is planned as DataFusion's hash join with the band as its filter.
- DuckDB: `JOIN … ON b.auction = a.id AND b.date_time BETWEEN a.date_time - INTERVAL 10 SECOND
  AND a.date_time + INTERVAL 10 SECOND`, the same four columns streamed out as Arrow batches
  and counted.

Both engines' row counts are compared. Each round runs every side once, in turn.

    cargo build --release -p ferris-server
    target/release/nexmark-gen --events 10000000 --out target/nexmark/10000000
    python3 benches/compare/interval_join.py --dir target/nexmark/10000000 [--rounds 5]
"""

import argparse
import os
import sys
import time

import duckdb

from windows import run_statement

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STATEMENT = os.path.join(ROOT, "benches/soak/interval_join.sql")


def ferris(binary, directory, delay):
    """(elapsed seconds, rows out, peak RSS MiB) of one run of the soak statement."""
    with open(STATEMENT) as f:
        statement = f.read().replace("${NEXMARK_DIR:-target/nexmark}", directory)
    if not delay:
        statement = statement.replace(", 'bid.watermark.delay' = '1s'", "").replace(", 'auction.watermark.delay' = '1s'", "")
    return run_statement(binary, statement, "interval join")


def duck(con, directory):
    """(elapsed seconds, rows) of DuckDB's band join, its rows streamed out and counted."""
    sql = (
        f"SELECT b.auction, b.price, a.seller, a.category FROM read_parquet('{directory}/bid.parquet') b "
        f"JOIN read_parquet('{directory}/auction.parquet') a ON b.auction = a.id "
        "AND b.date_time BETWEEN a.date_time - INTERVAL 10 SECOND AND a.date_time + INTERVAL 10 SECOND"
    )
    start = time.perf_counter()
    rows = sum(batch.num_rows for batch in con.sql(sql).to_arrow_reader(1 << 16))
    return time.perf_counter() - start, rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=os.path.join(ROOT, "target/nexmark/10000000"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ferris", default=os.path.join(ROOT, "target/release/ferris-sql"))
    ap.add_argument("--no-delay", action="store_true", help="also run the statement without watermark delays")
    args = ap.parse_args()
    con = duckdb.connect()
    con.execute(f"SET threads = {os.cpu_count()}")
    runs = {"stream": [], "bounded": [], "duckdb": []}
    for _ in range(args.rounds):
        runs["stream"].append(ferris(args.ferris, args.dir, True))
        if args.no_delay:
            runs["bounded"].append(ferris(args.ferris, args.dir, False))
        runs["duckdb"].append(duck(con, args.dir))
    duck_rows = runs["duckdb"][0][1]
    for name in ("stream", "bounded"):
        for _, rows, _ in runs[name]:
            if rows is not None and rows != duck_rows:
                sys.exit(f"{name}: FerrisStreams wrote {rows} rows, DuckDB {duck_rows}")
    duck_times = sorted(t for t, _ in runs["duckdb"])
    print(f"{args.dir}: {duck_rows} rows out, {args.rounds} rounds (seconds, sorted)")
    print("| engine | runs | best | peak RSS | DuckDB's best / best |")
    print("|---|---|---:|---:|---:|")
    for name, label in (("stream", "FerrisStreams, watermark delay 1 s"), ("bounded", "FerrisStreams, no delay")):
        if runs[name]:
            times = sorted(t for t, _, _ in runs[name])
            rss = max(r or 0 for _, _, r in runs[name])
            listed = " / ".join(f"{t:.2f}" for t in times)
            print(f"| {label} | {listed} | {times[0]:.3f} s | {rss:.0f} MiB | {duck_times[0] / times[0]:.2f}× |")
    listed = " / ".join(f"{t:.2f}" for t in duck_times)
    print(f"| DuckDB {duckdb.__version__} | {listed} | {duck_times[0]:.3f} s | | |")


if __name__ == "__main__":
    main()
