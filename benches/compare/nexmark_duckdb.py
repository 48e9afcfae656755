#!/usr/bin/env python3
"""Runs the Nexmark queries (q0-q22 but q12, which reads the clock) on DuckDB over the same Parquet
files `ferris-bench` generates, streaming the results out as Arrow batches and discarding them (as
FerrisStreams' blackhole sink does), but for q10, which writes CSV files in Hive directories by day
and minute (`COPY … PARTITION_BY (dt, hm)`), as FerrisStreams' q10 does. Prints events read per second, to put
`benches/results/nexmark-*.md` in ratio.

    pip install -r benches/compare/requirements.txt
    python3 benches/compare/nexmark_duckdb.py --events 10000000

The tests use the same queries as the batch answer every FerrisStreams query is checked against
(`tests/e2e/nexmark.rs`): `--answer q9 --dir DIR --out FILE` writes a query's rows as JSON lines
(timestamps as FerrisStreams writes them), `--read-hive DIR --out FILE` the rows of the CSV files
q10 wrote under DIR with their Hive directories' values.
"""
import datetime
import decimal
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import duckdb

from nexmark_common import input_dir, report

# q15/q16: bids, bidders and auctions in three price ranks
RANKS = ", ".join(
    f"{agg} FILTER (WHERE {cond}) AS rank{i}_{what}" if cond else f"{agg} AS total_{what}"
    for what, agg in (("bids", "COUNT(*)"), ("bidders", "COUNT(DISTINCT bidder)"), ("auctions", "COUNT(DISTINCT auction)"))
    for i, cond in enumerate(("", "price < 10000", "price >= 10000 AND price < 1000000", "price >= 1000000"))
)

QUERIES = {
    "q0": ("SELECT auction, bidder, price, date_time, extra FROM bid", ["bid"]),
    "q1": ("SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid", ["bid"]),
    "q2": ("SELECT auction, price FROM bid WHERE auction % 123 = 0", ["bid"]),
    "q3": ("SELECT p.name, p.city, p.state, a.id FROM auction a JOIN person p ON a.seller = p.id "
           "WHERE a.category = 10 AND (p.state = 'or' OR p.state = 'id' OR p.state = 'ca')", ["auction", "person"]),
    "q4": ("SELECT q.category, AVG(q.final) AS avg_final FROM (SELECT MAX(b.price) AS final, a.category FROM auction a "
           "JOIN bid b ON a.id = b.auction WHERE b.date_time BETWEEN a.date_time AND a.expires "
           "GROUP BY a.id, a.category) q GROUP BY q.category", ["auction", "bid"]),
    # HOP(2 s, 10 s): each bid falls in 5 windows
    "q5": ("WITH ab AS (SELECT auction, COUNT(*) AS num, ws FROM (SELECT auction, time_bucket(INTERVAL 2 SECOND, date_time) "
           "- to_seconds(2 * i) AS ws FROM bid, range(5) r(i)) GROUP BY auction, ws) "
           "SELECT a.auction, a.num, a.ws AS window_start FROM ab a JOIN (SELECT MAX(num) AS maxn, ws FROM ab GROUP BY ws) m "
           "ON a.ws = m.ws AND a.num >= m.maxn", ["bid"]),
    "q7": ("SELECT b.auction, b.price, b.bidder, b.date_time FROM bid b JOIN (SELECT MAX(price) AS maxprice, "
           "time_bucket(INTERVAL 10 SECOND, date_time) + INTERVAL 10 SECOND AS wend FROM bid GROUP BY 2) m "
           "ON b.price = m.maxprice AND b.date_time >= m.wend - INTERVAL 10 SECOND AND b.date_time < m.wend", ["bid"]),
    "q8": ("SELECT p.id, p.name, p.ws AS window_start FROM (SELECT id, name, time_bucket(INTERVAL 10 SECOND, date_time) AS ws FROM person GROUP BY ALL) p "
           "JOIN (SELECT seller, time_bucket(INTERVAL 10 SECOND, date_time) AS ws FROM auction GROUP BY ALL) a "
           "ON p.id = a.seller AND p.ws = a.ws", ["person", "auction"]),
    "q6": ("SELECT q.seller, AVG(q.final) OVER (PARTITION BY q.seller ORDER BY q.date_time, q.id ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) AS avg_price "
           "FROM (SELECT a.id, a.seller, MAX(b.price) AS final, MAX(b.date_time) AS date_time FROM auction a JOIN bid b ON a.id = b.auction "
           "WHERE b.date_time BETWEEN a.date_time AND a.expires GROUP BY a.id, a.seller) q", ["auction", "bid"]),
    "q9": ("SELECT id, item_name, description, initial_bid, reserve, date_time, expires, seller, category, extra, auction, bidder, price, "
           "bid_date_time, bid_extra FROM (SELECT a.*, b.auction, b.bidder, b.price, b.date_time AS bid_date_time, b.extra AS bid_extra, "
           "ROW_NUMBER() OVER (PARTITION BY a.id ORDER BY b.price DESC, b.date_time ASC) AS rownum FROM auction a JOIN bid b ON a.id = b.auction "
           "WHERE b.date_time BETWEEN a.date_time AND a.expires) WHERE rownum <= 1", ["auction", "bid"]),
    "q10": ("SELECT auction, bidder, price, date_time, extra, strftime(date_time, '%Y-%m-%d') AS dt, strftime(date_time, '%H:%M') AS hm FROM bid", ["bid"]),
    # sessions: a bid less than 10 s after the bidder's previous one continues its session
    "q11": ("WITH o AS (SELECT bidder, date_time, CASE WHEN date_time - LAG(date_time) OVER (PARTITION BY bidder ORDER BY date_time) "
            "< INTERVAL 10 SECOND THEN 0 ELSE 1 END AS new_session FROM bid), "
            "s AS (SELECT bidder, date_time, SUM(new_session) OVER (PARTITION BY bidder ORDER BY date_time ROWS UNBOUNDED PRECEDING) AS sid FROM o) "
            "SELECT bidder, COUNT(*) AS bid_count, MIN(date_time) AS starttime, MAX(date_time) + INTERVAL 10 SECOND AS endtime "
            "FROM s GROUP BY bidder, sid", ["bid"]),
    "q13": ("SELECT b.auction, b.bidder, b.price, b.date_time, s.value FROM bid b JOIN side_input s ON b.auction % 10000 = s.key", ["bid"]),
    "q14": ("SELECT auction, bidder, 0.908 * price AS price, CASE WHEN hour(date_time) >= 8 AND hour(date_time) <= 18 THEN 'dayTime' "
            "WHEN hour(date_time) <= 6 OR hour(date_time) >= 20 THEN 'nightTime' ELSE 'otherTime' END AS bid_time_type, date_time, extra, "
            "length(extra) - length(replace(extra, 'c', '')) AS c_counts FROM bid WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000", ["bid"]),
    "q15": ("SELECT strftime(date_time, '%Y-%m-%d') AS day, " + RANKS + " FROM bid GROUP BY 1", ["bid"]),
    "q16": ("SELECT channel, strftime(date_time, '%Y-%m-%d') AS day, MAX(strftime(date_time, '%H:%M')) AS minute, " + RANKS
            + " FROM bid GROUP BY 1, 2", ["bid"]),
    "q17": ("SELECT auction, strftime(date_time, '%Y-%m-%d') AS day, COUNT(*) AS total_bids, COUNT(*) FILTER (WHERE price < 10000) AS rank1_bids, "
            "COUNT(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids, COUNT(*) FILTER (WHERE price >= 1000000) AS rank3_bids, "
            "MIN(price) AS min_price, MAX(price) AS max_price, AVG(price) AS avg_price, SUM(price) AS sum_price FROM bid GROUP BY 1, 2", ["bid"]),
    "q18": ("SELECT auction, bidder, price, channel, url, date_time, extra FROM (SELECT *, ROW_NUMBER() OVER "
            "(PARTITION BY bidder, auction ORDER BY date_time DESC) AS rank_number FROM bid) WHERE rank_number <= 1", ["bid"]),
    "q19": ("SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number FROM bid) "
            "WHERE rank_number <= 10", ["bid"]),
    "q20": ("SELECT auction, bidder, price, channel, url, b.date_time AS bid_date_time, b.extra AS bid_extra, item_name, description, "
            "initial_bid, reserve, a.date_time AS auction_date_time, expires, seller, category, a.extra AS auction_extra "
            "FROM bid b JOIN auction a ON b.auction = a.id WHERE a.category = 10", ["bid", "auction"]),
    # Flink's REGEXP_EXTRACT is NULL without a match (DuckDB's: an empty string)
    "q21": ("SELECT auction, bidder, price, channel, CASE WHEN lower(channel) = 'apple' THEN '0' WHEN lower(channel) = 'google' THEN '1' "
            "WHEN lower(channel) = 'facebook' THEN '2' WHEN lower(channel) = 'baidu' THEN '3' "
            "WHEN regexp_matches(url, '(&|^)channel_id=([^&]*)') THEN regexp_extract(url, '(&|^)channel_id=([^&]*)', 2) END AS channel_id "
            "FROM bid WHERE regexp_matches(url, '(&|^)channel_id=([^&]*)') OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu')", ["bid"]),
    # Flink's SPLIT_INDEX counts from 0 and is NULL past the end
    "q22": ("SELECT auction, bidder, price, channel, " + ", ".join(
        f"CASE WHEN len(string_split(url, '/')) > {i} THEN string_split(url, '/')[{i + 1}] END AS dir{i - 2}" for i in (3, 4, 5))
            + " FROM bid", ["bid"]),
}


def connect(d):
    """DuckDB with the generated tables as views, and their row counts."""
    con = duckdb.connect()
    con.execute(f"SET threads TO {os.cpu_count()}").fetchall()
    counts = {}
    for t in ["bid", "auction", "person"]:
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{d / (t + '.parquet')}')").fetchall()
        counts[t] = con.execute(f"SELECT COUNT(*) FROM {t}").fetchall()[0][0]
    if (d / "side_input.csv").exists():
        con.execute(f"CREATE VIEW side_input AS SELECT * FROM read_csv('{d / 'side_input.csv'}', columns = {{'key': 'BIGINT', 'value': 'VARCHAR'}}, header = true)").fetchall()
    return con, counts


def json_value(v):
    """A value as FerrisStreams' JSON writer writes it (timestamps without a zero fraction)."""
    if isinstance(v, datetime.datetime):
        if v.microsecond == 0:
            return v.strftime("%Y-%m-%dT%H:%M:%S")
        if v.microsecond % 1000 == 0:
            return v.strftime("%Y-%m-%dT%H:%M:%S.") + f"{v.microsecond // 1000:03d}"
        return v.strftime("%Y-%m-%dT%H:%M:%S.%f")
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return float(v)
    return v


def write_rows(con, sql, out):
    """Writes the rows of `sql` to `out` as JSON lines (NULLs left out); returns their count."""
    cur = con.execute(sql)
    names = [c[0] for c in cur.description]
    n = 0
    with open(out, "w") as f:
        for row in cur.fetchall():
            f.write(json.dumps({k: json_value(v) for k, v in zip(names, row) if v is not None}) + "\n")
            n += 1
    return n


def answer(argv):
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--answer")
    ap.add_argument("--read-hive")
    ap.add_argument("--dir")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.read_hive:
        con = duckdb.connect()
        sql = (f"SELECT * FROM read_csv('{a.read_hive}/**/*.csv', hive_partitioning = true, hive_types_autocast = false, "
               "union_by_name = true)")
        print(write_rows(con, sql, a.out))
        return
    con, _ = connect(Path(a.dir))
    print(write_rows(con, QUERIES[a.answer][0], a.out))


def main():
    if "--answer" in sys.argv or "--read-hive" in sys.argv:
        return answer(sys.argv[1:])
    d, repeat = input_dir(__doc__)
    con, counts = connect(d)

    def runner(sql):
        # results streamed out as Arrow batches and discarded
        return lambda: sum(batch.num_rows for batch in con.sql(sql).to_arrow_reader(1 << 16))

    def partitioned_csv(sql):
        # q10 writes its rows as FerrisStreams' q10 does: CSV files in dt=/hm= directories
        out = Path(tempfile.gettempdir()) / "nexmark-duckdb-q10"

        def run():
            shutil.rmtree(out, ignore_errors=True)
            return con.execute(f"COPY ({sql}) TO '{out}' (FORMAT CSV, HEADER, PARTITION_BY (dt, hm))").fetchall()[0][0]

        return run

    runners = {q: ((partitioned_csv if q == "q10" else runner)(sql), tables) for q, (sql, tables) in QUERIES.items()}
    report(runners, counts, repeat)
    shutil.rmtree(Path(tempfile.gettempdir()) / "nexmark-duckdb-q10", ignore_errors=True)  # ~1 GB at 10M events


if __name__ == "__main__":
    main()
