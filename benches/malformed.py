"""Malformed input must not collapse throughput: the same filter over 1 M JSON lines, clean and
with 1% of the lines cut short, by FerrisStreams and by DuckDB (`read_json(…,
ignore_errors = true)`), in one session. Prints a markdown table; the figure that matters is
each engine's rate on the malformed file as a fraction of its rate on the clean one.

    python3 benches/malformed.py --binary target/release/ferris-sql --rows 1000000

FerrisStreams' times are whole jobs (process start included), the best of three; DuckDB's the
query in process, the best of three. Every run is checked to keep exactly the good rows.
"""
import argparse
import os
import random
import subprocess
import tempfile
import time

import duckdb


def write_files(dir, rows):
    random.seed(7)
    clean, bad = os.path.join(dir, "clean.jsonl"), os.path.join(dir, "bad.jsonl")
    good = 0
    with open(clean, "w") as c, open(bad, "w") as b:
        for i in range(rows):
            line = f'{{"order_id": {i}, "customer_id": {i % 977}, "amount": {i % 10000 / 7:.2f}, "status": "S{i % 5}", "ts": "2024-01-01T00:00:00"}}\n'
            c.write(line)
            if random.random() < 0.01:
                b.write(line[: len(line) // 2] + "\n")
            else:
                b.write(line)
                good += 1
    return clean, bad, good


def ferris(binary, dir, path):
    sql = (f"CREATE STREAM s AS SELECT order_id, amount FROM o WHERE amount > 10 INTO nowhere WITH ('o.type' = 'file_source', "
           f"'o.path' = '{path}', 'o.schema' = 'order_id BIGINT, customer_id BIGINT, amount DOUBLE, status VARCHAR, ts VARCHAR', "
           f"'nowhere.type' = 'blackhole');")
    job = os.path.join(dir, "job.sql")
    with open(job, "w") as f:
        f.write(sql)
    best, out = None, ""
    for _ in range(3):
        t = time.perf_counter()
        r = subprocess.run([binary, "run", job, "--no-progress"], cwd=dir, check=True, capture_output=True, text=True)
        e = time.perf_counter() - t
        best = e if best is None else min(best, e)
        out = r.stdout + r.stderr
    return best, out


def duck(path):
    q = (f"SELECT count(*) FROM read_json('{path}', format = 'newline_delimited', ignore_errors = true, "
         f"columns = {{'order_id': 'BIGINT', 'customer_id': 'BIGINT', 'amount': 'DOUBLE', 'status': 'VARCHAR', 'ts': 'VARCHAR'}}) "
         f"WHERE amount > 10")
    con = duckdb.connect()
    best, n = None, None
    for _ in range(3):
        t = time.perf_counter()
        n = con.execute(q).fetchone()[0]
        e = time.perf_counter() - t
        best = e if best is None else min(best, e)
    return best, n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/ferris-sql")
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    with tempfile.TemporaryDirectory() as dir:
        clean, bad, good = write_files(dir, args.rows)
        fc, _ = ferris(binary, dir, clean)
        fb, out = ferris(binary, dir, bad)
        assert f"({args.rows - good} malformed)" in out, out
        dc, nc = duck(clean)
        db, nb = duck(bad)
    print("| engine | clean | 1% malformed | malformed / clean rate |")
    print("|---|---:|---:|---:|")
    print(f"| FerrisStreams (whole job) | {fc:.2f} s | {fb:.2f} s | **{fc / fb:.2f}×** |")
    print(f"| DuckDB read_json ignore_errors | {dc:.2f} s | {db:.2f} s | {dc / db:.2f}× |")
    print(f"\nrows: {args.rows} clean, {good} good in the malformed file; DuckDB kept {nc} and {nb} after the filter")


if __name__ == "__main__":
    main()
