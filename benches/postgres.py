"""PostgreSQL throughput: FerrisStreams' database_source and database_sink against the Python
clients a user would reach for, on the same table of the same server (the project's own,
`tests/services/postgres.sh`), in one session. Prints markdown tables.

    bash tests/services/postgres.sh start
    python3 benches/postgres.py --binary target/release/ferris-sql --rows 2000000

1. Source: a table of `--rows` rows (bigint, int, numeric(12,2), text, timestamptz) read whole
   into Arrow and thrown away (`INTO blackhole`). Peers: ADBC's PostgreSQL driver
   (`fetch_arrow_table`, binary COPY decoded into Arrow in C++; it reads numeric as text), and psycopg's binary
   `COPY … TO STDOUT` into Python rows, then `pyarrow.Table.from_pylist`.
2. Sink: the same rows from a Parquet file into a new table, `insert` and `upsert` (on the
   id). Peers: psycopg's binary `COPY … FROM STDIN` (`write_row`), psycopg `executemany` of an
   `INSERT … ON CONFLICT DO UPDATE` (on a tenth of the rows: it is slow), and ADBC's
   `adbc_ingest` (binary COPY from Arrow).

Times are wall clock of the whole job (process start, planning, connecting included) for
FerrisStreams, of the client call for the peers; rows/s, higher is better.
"""
import argparse
import os
import subprocess
import tempfile
import time

import adbc_driver_postgresql.dbapi as adbc
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

URL = os.environ.get("PG_URL", "postgresql://ferris:ferris-test-pw@127.0.0.1:55432/ferris")


def conn_keys(name):
    rest = URL.split("://", 1)[1]
    auth, hostpath = rest.split("@", 1)
    user, password = auth.split(":", 1)
    return (f"'{name}.connection.url' = 'jdbc:postgresql://{hostpath}', '{name}.connection.username' = '{user}', "
            f"'{name}.connection.password' = '{password}'")


def timed(f):
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


def run_job(binary, sql, cwd):
    path = os.path.join(cwd, "job.sql")
    with open(path, "w") as f:
        f.write(sql)
    t = time.perf_counter()
    subprocess.run([binary, "run", path, "--no-progress"], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def setup(rows):
    with psycopg.connect(URL, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS bench_src")
        c.execute("CREATE TABLE bench_src (id bigint PRIMARY KEY, customer int, amount numeric(12,2), name text, ts timestamptz)")
        c.execute(
            "INSERT INTO bench_src SELECT i, i %% 1000, (i %% 100000) / 100.0, 'customer-' || (i %% 1000), "
            "timestamptz '2024-01-01' + i * interval '1 second' FROM generate_series(1, %s) i",
            (rows,),
        )
        c.execute("VACUUM ANALYZE bench_src")


def mrows(n, secs):
    return f"{n / secs / 1e6:.2f} M/s"


def source_bench(binary, rows, tmp):
    def ferris_read(pool):
        return run_job(binary, f"CREATE STREAM s AS SELECT * FROM src INTO nowhere WITH ('src.type' = 'database_source', {conn_keys('src')}, "
                               f"'src.table' = 'bench_src', 'src.connection.pool.max_size' = '{pool}', 'nowhere.type' = 'blackhole');", tmp)

    ferris = min(ferris_read(1) for _ in range(3))
    pooled = min(ferris_read(2) for _ in range(3))

    def adbc_read():
        with adbc.connect(URL) as c, c.cursor() as cur:
            cur.execute("SELECT * FROM bench_src")
            return cur.fetch_arrow_table().num_rows

    adbc_t = min(timed(adbc_read)[0] for _ in range(3))

    def psycopg_read():
        with psycopg.connect(URL) as c, c.cursor() as cur:
            out = []
            with cur.copy("COPY bench_src TO STDOUT (FORMAT binary)") as copy:
                copy.set_types(["int8", "int4", "numeric", "text", "timestamptz"])
                names = ["id", "customer", "amount", "name", "ts"]
                for row in copy.rows():
                    out.append(dict(zip(names, row)))
            return pa.Table.from_pylist(out).num_rows

    psy_t = timed(psycopg_read)[0]
    print("| source: read the table into Arrow | seconds | rows/s | FerrisStreams vs peer |")
    print("|---|---:|---:|---:|")
    print(f"| FerrisStreams `database_source` (whole job) | {ferris:.2f} | {mrows(rows, ferris)} | |")
    print(f"| FerrisStreams `database_source`, `connection.pool.max_size` = 2 | {pooled:.2f} | {mrows(rows, pooled)} | {ferris / pooled:.2f}× one connection |")
    print(f"| ADBC PostgreSQL driver `fetch_arrow_table` | {adbc_t:.2f} | {mrows(rows, adbc_t)} | {adbc_t / ferris:.2f}× |")
    print(f"| psycopg binary COPY → `Table.from_pylist` | {psy_t:.2f} | {mrows(rows, psy_t)} | {psy_t / ferris:.2f}× |")
    print()


def sink_bench(binary, rows, tmp):
    with adbc.connect(URL) as c, c.cursor() as cur:
        cur.execute("SELECT * FROM bench_src")
        table = cur.fetch_arrow_table()
    # ADBC reads numeric as text: the rows as FerrisStreams reads them, Decimal128(12, 2)
    i = table.schema.get_field_index("amount")
    table = table.set_column(i, "amount", table.column("amount").cast(pa.decimal128(12, 2)))
    parquet = os.path.join(tmp, "rows.parquet")
    pq.write_table(table, parquet)

    def drop(name):
        with psycopg.connect(URL, autocommit=True) as c:
            c.execute(f"DROP TABLE IF EXISTS {name}")

    def ferris_sink(mode, pool=1):
        drop("bench_out")
        extra = ", 'db.mode' = 'upsert', 'db.primary_key' = 'id'" if mode == "upsert" else ""
        return run_job(binary, f"CREATE STREAM s AS SELECT * FROM src INTO db WITH ('src.type' = 'file_source', 'src.path' = '{parquet}', "
                               f"'db.type' = 'database_sink', {conn_keys('db')}, 'db.table' = 'bench_out', "
                               f"'db.connection.pool.max_size' = '{pool}'{extra});", tmp)

    ins = min(ferris_sink("insert") for _ in range(2))
    ups = min(ferris_sink("upsert") for _ in range(2))
    ins2 = min(ferris_sink("insert", 2) for _ in range(2))
    ups2 = min(ferris_sink("upsert", 2) for _ in range(2))

    def psycopg_copy():
        drop("bench_peer")
        with psycopg.connect(URL) as c:
            c.execute("CREATE TABLE bench_peer (id bigint, customer int, amount numeric(12,2), name text, ts timestamptz)")
            with c.cursor() as cur, cur.copy("COPY bench_peer FROM STDIN (FORMAT binary)") as copy:
                copy.set_types(["int8", "int4", "numeric", "text", "timestamptz"])
                for row in zip(*(table.column(i).to_pylist() for i in range(5))):
                    copy.write_row(row)

    copy_t = timed(psycopg_copy)[0]

    def adbc_ingest():
        drop("bench_peer")
        with adbc.connect(URL) as c, c.cursor() as cur:
            cur.adbc_ingest("bench_peer", table, mode="create")
            c.commit()

    ingest_t = timed(adbc_ingest)[0]
    tenth = table.slice(0, rows // 10)

    def psycopg_upsert():
        drop("bench_peer")
        with psycopg.connect(URL) as c:
            c.execute("CREATE TABLE bench_peer (id bigint PRIMARY KEY, customer int, amount numeric(12,2), name text, ts timestamptz)")
            with c.cursor() as cur:
                cur.executemany(
                    "INSERT INTO bench_peer VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET customer = EXCLUDED.customer, "
                    "amount = EXCLUDED.amount, name = EXCLUDED.name, ts = EXCLUDED.ts",
                    list(zip(*(tenth.column(i).to_pylist() for i in range(5)))),
                )

    upsert_t = timed(psycopg_upsert)[0]
    print("| sink: Arrow rows into a new table | seconds | rows/s | FerrisStreams vs peer |")
    print("|---|---:|---:|---:|")
    print(f"| FerrisStreams `database_sink` insert (whole job, from Parquet) | {ins:.2f} | {mrows(rows, ins)} | |")
    print(f"| FerrisStreams `database_sink` upsert on id | {ups:.2f} | {mrows(rows, ups)} | |")
    print(f"| FerrisStreams insert, `connection.pool.max_size` = 2 | {ins2:.2f} | {mrows(rows, ins2)} | {ins / ins2:.2f}× one connection |")
    print(f"| FerrisStreams upsert, `connection.pool.max_size` = 2 | {ups2:.2f} | {mrows(rows, ups2)} | {ups / ups2:.2f}× one connection |")
    print(f"| ADBC `adbc_ingest` (binary COPY) | {ingest_t:.2f} | {mrows(rows, ingest_t)} | insert {ingest_t / ins:.2f}× |")
    print(f"| psycopg binary COPY `write_row` | {copy_t:.2f} | {mrows(rows, copy_t)} | insert {copy_t / ins:.2f}× |")
    n = tenth.num_rows
    print(f"| psycopg `executemany` upsert ({n} rows) | {upsert_t:.2f} | {mrows(n, upsert_t)} | upsert {(upsert_t / n) / (ups / rows):.2f}× |")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", required=True)
    p.add_argument("--rows", type=int, default=2_000_000)
    a = p.parse_args()
    setup(a.rows)
    with tempfile.TemporaryDirectory() as tmp:
        source_bench(os.path.abspath(a.binary), a.rows, tmp)
        sink_bench(os.path.abspath(a.binary), a.rows, tmp)


if __name__ == "__main__":
    main()
