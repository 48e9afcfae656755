"""S3 throughput, listing cost and sink memory: FerrisStreams against DuckDB (1.5.5 with its
httpfs extension, from PyPI wheels in the virtual environment `tests/services/python.sh` makes:
DuckDB's extension server is not reachable here) reading and writing the same objects, and
against pyarrow's S3 dataset reader with a pyarrow-encoded object put by boto3 (pyarrow's own S3
writer fails on moto's multipart completion), all through the same loopback S3 server (moto,
`tests/services/s3.sh`) in one session. Prints markdown tables.

    python3 benches/s3.py --binary target/release/ferris-sql --bids target/nexmark/5000000/bid.parquet
    python3 benches/s3.py --binary target/release/ferris-sql --generate 5000000 --objects 0   # bids made here (numpy)

1. S3 → filter/project → S3 Parquet: the Nexmark bids as Parquet objects in 8 Hive partitions
   (`day=1/` … `day=8/`), `SELECT auction, bidder, price * 0.908 AS euros, day FROM bids WHERE
   price > 5000000 AND day <= 6` (2 of 8 partitions pruned), written back as Parquet. DuckDB:
   `COPY (SELECT … FROM read_parquet('s3://…/*/*.parquet', hive_partitioning = true) WHERE …)
   TO 's3://…'` (timed in its process, from the query to the object written). pyarrow:
   `dataset(..., partitioning="hive").to_table(filter, columns)`, then one Parquet object.
2. Listing: the time to start a job over a prefix of 10,000 small objects (`explain`: list,
   infer the schema from the first objects) against boto3 listing the same prefix.
3. Sink memory: peak RSS of a job writing the bids as JSON Lines to S3 with 8 MB parts, against
   the same job writing to a local file.
"""
import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import boto3
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

ENDPOINT = os.environ.get("S3_ENDPOINT", "http://127.0.0.1:9190")
KEYS = dict(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")


def s3():
    return boto3.client("s3", endpoint_url=ENDPOINT, **KEYS)


def fs():
    host = ENDPOINT.split("://", 1)[1]
    return pafs.S3FileSystem(access_key="testing", secret_key="testing", endpoint_override=host, scheme="http", region="us-east-1")


def conn(name):
    return f"'{name}.endpoint' = '{ENDPOINT}', '{name}.access_key_id' = 'testing', '{name}.secret_access_key' = 'testing'"


def fresh_bucket(name):
    b = f"{name}-{os.getpid()}-{time.time_ns() % 10**9}"
    s3().create_bucket(Bucket=b)
    return b


def child_rss_mb():
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def run_job(binary, sql):
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "job.sql")
        with open(path, "w") as f:
            f.write(sql)
        t = time.perf_counter()
        out = subprocess.run([binary, "run", path, "--no-progress"], cwd=work, capture_output=True, text=True)
        took = time.perf_counter() - t
        if out.returncode != 0:
            sys.exit(f"ferris-sql failed: {out.stderr[-2000:]}")
        return took


def put_parquet(bucket, key, table):
    """Parquet encoded by pyarrow, put by boto3 (pyarrow's own S3 writer trips over moto's
    CompleteMultipartUpload answer)."""
    buf = io.BytesIO()
    pq.write_table(table, buf)
    s3().put_object(Bucket=bucket, Key=key, Body=buf.getvalue())


def rows_under(bucket, prefix):
    d = ds.dataset(f"{bucket}/{prefix}", filesystem=fs(), format="parquet")
    return d.count_rows()


DUCKDB_COPY = r"""
import sys, time, duckdb, duckdb_extensions
endpoint, src, out = sys.argv[1], sys.argv[2], sys.argv[3]
con = duckdb.default_connection()
duckdb_extensions.import_extension("httpfs", con=con)
con.execute("LOAD httpfs")
host = endpoint.split("://", 1)[1]
con.execute(f"CREATE SECRET s (TYPE s3, KEY_ID 'testing', SECRET 'testing', REGION 'us-east-1', ENDPOINT '{host}', URL_STYLE 'path', USE_SSL false)")
t = time.perf_counter()
con.execute(f"COPY (SELECT auction, bidder, price * 0.908 AS euros, day FROM read_parquet('s3://{src}/bids/*/*.parquet', hive_partitioning = true) "
            f"WHERE price > 5000000 AND day <= 6) TO 's3://{out}/f/part-0.parquet' (FORMAT parquet)")
print(time.perf_counter() - t)
"""


def duckdb_python():
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run(["bash", os.path.join(here, "..", "tests", "services", "python.sh"), "duckdb-iceberg-python"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def generate_bids(path, n):
    import numpy as np

    rng = np.random.default_rng(11)
    start = np.datetime64("2024-05-01T00:00:00", "ms")
    pq.write_table(
        pa.table(
            {
                "auction": pa.array(rng.integers(1000, 1_000_000, n)),
                "bidder": pa.array(rng.integers(1000, 10_000_000, n)),
                "price": pa.array(rng.integers(1, 10_000_000, n)),
                "date_time": pa.array(start + np.arange(n).astype("timedelta64[ms]")),
            }
        ),
        path,
    )


def throughput(binary, bids_path, repeat):
    table = pq.read_table(bids_path, columns=["auction", "bidder", "price", "date_time"])
    n = table.num_rows
    src = fresh_bucket("bids")
    per = (n + 7) // 8
    for day in range(8):
        part = table.slice(day * per, per)
        put_parquet(src, f"bids/day={day + 1}/part-0.parquet", part)
    want = pc.sum(pc.and_(pc.greater(table["price"], 5_000_000), pa.array([i // per < 6 for i in range(n)]))).as_py()
    rows = []
    for r in range(repeat):
        out = fresh_bucket("out")
        sql = (
            f"CREATE STREAM f AS SELECT auction, bidder, price * 0.908 AS euros, day FROM bids WHERE price > 5000000 AND day <= 6 INTO out WITH ("
            f"'bids.type' = 's3_source', 'bids.path' = 's3://{src}/bids/', {conn('bids')}, "
            f"'out.type' = 's3_sink', 'out.bucket' = '{out}', 'out.prefix' = 'f/', 'out.format' = 'parquet', 'out.compression' = 'snappy', {conn('out')});"
        )
        ferris = run_job(binary, sql)
        got = rows_under(out, "f/")
        assert got == want, f"ferris wrote {got} rows, expected {want}"
        out2 = fresh_bucket("out")
        t = time.perf_counter()
        d = ds.dataset(f"{src}/bids/", filesystem=fs(), format="parquet", partitioning="hive")
        filt = (ds.field("price") > 5_000_000) & (ds.field("day") <= 6)
        t_out = d.to_table(filter=filt, columns={"auction": ds.field("auction"), "bidder": ds.field("bidder"), "euros": ds.field("price") * 0.908, "day": ds.field("day")})
        put_parquet(out2, "f/part-0.parquet", t_out)
        peer = time.perf_counter() - t
        assert t_out.num_rows == want, (t_out.num_rows, want)
        out3 = fresh_bucket("out")
        duck = subprocess.run([duckdb_python(), "-c", DUCKDB_COPY, ENDPOINT, src, out3], capture_output=True, text=True)
        if duck.returncode != 0:
            sys.exit(f"duckdb failed: {duck.stderr[-2000:]}")
        got = rows_under(out3, "f/")
        assert got == want, f"duckdb wrote {got} rows, expected {want}"
        rows.append((ferris, peer, float(duck.stdout.strip())))
    best_f = min(r[0] for r in rows)
    best_p = min(r[1] for r in rows)
    best_d = min(r[2] for r in rows)
    print(f"\n### S3 → filter/project → S3 Parquet ({n:,} bids in 8 Hive partitions, {want:,} rows out; best of {repeat})\n")
    print("| engine | seconds | input rows/s | FerrisStreams vs it |\n|---|---:|---:|---:|")
    print(f"| FerrisStreams (whole job: process start, plan, list, read, write) | {best_f:.2f} | {n / best_f / 1e6:.2f} M | |")
    print(f"| DuckDB 1.5.5 + httpfs (`COPY (SELECT …) TO 's3://…'`, in process) | {best_d:.2f} | {n / best_d / 1e6:.2f} M | {best_d / best_f:.2f}× |")
    print(f"| pyarrow dataset (read, filter, write; in process) | {best_p:.2f} | {n / best_p / 1e6:.2f} M | {best_p / best_f:.2f}× |")


def listing(binary, objects):
    b = fresh_bucket("many")
    c = s3()
    body = b'{"id":1,"v":"x"}\n'
    t = time.perf_counter()
    for i in range(objects):
        c.put_object(Bucket=b, Key=f"logs/part-{i:06}.jsonl", Body=body)
    put = time.perf_counter() - t
    t = time.perf_counter()
    n = 0
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=b, Prefix="logs/"):
        n += len(page.get("Contents", []))
    boto = time.perf_counter() - t
    assert n == objects
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "job.sql")
        with open(path, "w") as f:
            f.write(f"CREATE STREAM l AS SELECT * FROM logs INTO nowhere WITH ('logs.type' = 's3_source', 'logs.path' = 's3://{b}/logs/', {conn('logs')}, 'nowhere.type' = 'blackhole');")
        t = time.perf_counter()
        out = subprocess.run([binary, "explain", path], cwd=work, capture_output=True, text=True)
        ferris = time.perf_counter() - t
        assert out.returncode == 0, out.stderr
        assert f"{objects} objects" in out.stdout + out.stderr, out.stdout
    print(f"\n### Listing {objects:,} objects (put with boto3 in {put:.1f} s)\n")
    print("| what | seconds |\n|---|---:|")
    print(f"| FerrisStreams `explain` (list, infer the schema from 3 objects, plan) | {ferris:.2f} |")
    print(f"| boto3 `list_objects_v2` pages | {boto:.2f} |")


def memory(binary, bids_jsonl):
    out = fresh_bucket("mem")
    with tempfile.TemporaryDirectory() as work:
        size = os.path.getsize(bids_jsonl)
        base = child_rss_mb()
        for target, sink in [
            ("s3", f"'out.type' = 's3_sink', 'out.bucket' = '{out}', 'out.prefix' = 'm/', 'out.format' = 'jsonlines', 'out.part_size' = '8MB', 'out.max_file_size' = '256MB', {conn('out')}"),
            ("file", f"'out.type' = 'file_sink', 'out.path' = '{work}/out.jsonl'"),
        ]:
            sql = f"CREATE STREAM m AS SELECT * FROM bids INTO out WITH ('bids.type' = 'file_source', 'bids.path' = '{bids_jsonl}', {sink});"
            path = os.path.join(work, f"{target}.sql")
            with open(path, "w") as f:
                f.write(sql)
            p = subprocess.run(["/usr/bin/time", "-f", "%M", binary, "run", path, "--no-progress"], cwd=work, capture_output=True, text=True)
            assert p.returncode == 0, p.stderr[-2000:]
            rss = int(p.stderr.strip().splitlines()[-1]) / 1024
            print(f"| {target} sink, {size / 1e6:.0f} MB of JSON Lines written | {rss:.0f} MB peak RSS |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--bids", help="Nexmark bids as Parquet (target/nexmark/N/bid.parquet)")
    ap.add_argument("--generate", type=int, help="make this many bid-like rows instead of --bids")
    ap.add_argument("--bids-jsonl", help="the same as JSON Lines, for the memory table")
    ap.add_argument("--objects", type=int, default=10_000, help="0 skips the listing table")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    if a.generate:
        tmp = tempfile.mkdtemp()
        a.bids = os.path.join(tmp, "bid.parquet")
        generate_bids(a.bids, a.generate)
    if not a.bids:
        sys.exit("give --bids FILE or --generate N")
    throughput(a.binary, a.bids, a.repeat)
    if a.objects:
        listing(a.binary, a.objects)
    if a.bids_jsonl:
        print("\n### Sink memory (8 MB parts)\n\n| job | memory |\n|---|---:|")
        memory(a.binary, a.bids_jsonl)


if __name__ == "__main__":
    main()
