"""Iceberg sink throughput: FerrisStreams' iceberg_sink against pyiceberg's `Table.append`, the
same rows from the same Parquet file into a new table in a local warehouse, in one session.
Prints a markdown table.

    python3 benches/iceberg.py --binary target/release/ferris-sql --rows 5000000   # pip install numpy "pyiceberg[pyiceberg-core]"

The input: `--rows` trades (id bigint, symbol string of 500 values, price double, qty int,
ts timestamp over 4 days) in one Parquet file (zstd). Two tables each: unpartitioned, and
partitioned by `day(ts)` (4 partitions). Both writers produce zstd Parquet data files with
column statistics and one snapshot; each result is checked by reading the table's row count
back with pyiceberg.

FerrisStreams: the whole job's wall clock (process start, planning, reading the file, writing
and committing). pyiceberg: reading the file with pyarrow plus `append` (its own writer,
statistics and commit through a SQLite SqlCatalog), in a fresh process. Peak RSS of each
process (getrusage of the child). Rows/s, higher is better.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

PYICEBERG_APPEND = r"""
import sys, time, pyarrow.parquet as pq
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.transforms import DayTransform
src, wh, partitioned = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
t0 = time.perf_counter()
data = pq.read_table(src)
cat = SqlCatalog("bench", uri=f"sqlite:///{wh}/catalog.db", warehouse=f"file://{wh}")
cat.create_namespace("b")
tbl = cat.create_table("b.trades", schema=data.schema, properties={"write.parquet.compression-codec": "zstd"})
if partitioned:
    with tbl.update_spec() as u:
        u.add_field("ts", DayTransform(), "ts_day")
tbl.append(data)
print(time.perf_counter() - t0)
"""


def make_input(path, rows):
    rng = np.random.default_rng(7)
    symbols = np.array([f"SYM{i:03d}" for i in range(500)])
    start = np.datetime64("2024-05-01T00:00:00", "us")
    table = pa.table(
        {
            "id": pa.array(np.arange(rows, dtype=np.int64)),
            "symbol": pa.array(symbols[rng.integers(0, 500, rows)]),
            "price": pa.array(np.round(rng.uniform(1, 1000, rows), 2)),
            "qty": pa.array(rng.integers(1, 1000, rows).astype(np.int32)),
            "ts": pa.array(start + np.sort(rng.integers(0, 4 * 86_400_000_000, rows)).astype("timedelta64[us]")),
        }
    )
    pq.write_table(table, path, compression="zstd", row_group_size=1 << 20)


def run_measured(cmd, cwd=None):
    """Runs `cmd` under /usr/bin/time: its wall-clock seconds and its own peak RSS in MB
    (measured by `time`, not by this process's rusage, which would count the pages this large
    Python process shares with a child it forks)."""
    t = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    secs = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:2]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return secs, int(proc.stderr.strip().splitlines()[-1]) / 1024


def count_rows(table_dir):
    from pyiceberg.table import StaticTable

    return StaticTable.from_metadata(table_dir).scan().to_arrow().num_rows


def count_sql(wh):
    from pyiceberg.catalog.sql import SqlCatalog

    cat = SqlCatalog("bench", uri=f"sqlite:///{wh}/catalog.db", warehouse=f"file://{wh}")
    return cat.load_table("b.trades").scan().to_arrow().num_rows


def run_ferris(binary, src, tmp, partitioned):
    wh = tempfile.mkdtemp(dir=tmp)
    part = ", 'lake.partition_by' = 'day(ts)'" if partitioned else ""
    sql = (f"CREATE STREAM s AS SELECT * FROM trades INTO lake WITH ('trades.type' = 'file_source', 'trades.path' = '{src}', "
           f"'lake.type' = 'iceberg_sink', 'lake.warehouse' = '{wh}', 'lake.table' = 'b.trades'{part});")
    job = os.path.join(wh, "job.sql")
    with open(job, "w") as f:
        f.write(sql)
    secs, peak = run_measured([binary, "run", job, "--no-progress"], cwd=wh)
    return secs, peak, os.path.join(wh, "b", "trades")


def run_pyiceberg(src, tmp, partitioned):
    wh = tempfile.mkdtemp(dir=tmp)
    secs, peak = run_measured([sys.executable, "-c", PYICEBERG_APPEND, src, wh, "1" if partitioned else "0"])
    return secs, peak, wh


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", required=True)
    p.add_argument("--rows", type=int, default=5_000_000)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "trades.parquet")
        make_input(src, a.rows)
        print(f"input: {a.rows} rows, {os.path.getsize(src) / 1e6:.0f} MB Parquet\n")
        print("| table | FerrisStreams | peak RSS | pyiceberg append | peak RSS | ratio |")
        print("|---|---:|---:|---:|---:|---:|")
        for partitioned in (False, True):
            ferris, peak_f, pyice, peak_p = [], 0.0, [], 0.0
            for _ in range(a.runs):
                secs, peak, table_dir = run_ferris(a.binary, src, tmp, partitioned)
                assert count_rows(table_dir) == a.rows, "ferris table rows"
                ferris.append(secs)
                peak_f = max(peak_f, peak)
            for _ in range(a.runs):
                secs, peak, wh = run_pyiceberg(src, tmp, partitioned)
                assert count_sql(wh) == a.rows, "pyiceberg table rows"
                pyice.append(secs)
                peak_p = max(peak_p, peak)
            f, q = min(ferris), min(pyice)
            name = "partitioned by day(ts), 4 partitions" if partitioned else "unpartitioned"
            print(f"| {name} | {a.rows / f / 1e6:.2f} M/s ({f:.2f} s) | {peak_f:.0f} MB | {a.rows / q / 1e6:.2f} M/s ({q:.2f} s) | {peak_p:.0f} MB | {q / f:.2f}× |")


if __name__ == "__main__":
    main()
