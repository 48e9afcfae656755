#!/usr/bin/env python3
"""Runs Nexmark q0-q5, q7 and q8 on DuckDB over the same Parquet files `ferris-bench` generates, streaming
the results out as Arrow batches and discarding them (as FerrisStreams' blackhole sink does).
Prints events read per second, to put `benches/results/nexmark-*.md` in ratio.

    pip install -r benches/compare/requirements.txt
    python3 benches/compare/nexmark_duckdb.py --events 10000000
"""
import os

import duckdb

from nexmark_common import input_dir, report

QUERIES = {
    "q0": ("SELECT auction, bidder, price, date_time, extra FROM bid", ["bid"]),
    "q1": ("SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid", ["bid"]),
    "q2": ("SELECT auction, price FROM bid WHERE auction % 123 = 0", ["bid"]),
    "q3": ("SELECT p.name, p.city, p.state, a.id FROM auction a JOIN person p ON a.seller = p.id "
           "WHERE a.category = 10 AND (p.state = 'or' OR p.state = 'id' OR p.state = 'ca')", ["auction", "person"]),
    "q4": ("SELECT q.category, AVG(q.final) FROM (SELECT MAX(b.price) AS final, a.category FROM auction a "
           "JOIN bid b ON a.id = b.auction WHERE b.date_time BETWEEN a.date_time AND a.expires "
           "GROUP BY a.id, a.category) q GROUP BY q.category", ["auction", "bid"]),
    # HOP(2 s, 10 s): each bid falls in 5 windows
    "q5": ("WITH ab AS (SELECT auction, COUNT(*) AS num, ws FROM (SELECT auction, time_bucket(INTERVAL 2 SECOND, date_time) "
           "- to_seconds(2 * i) AS ws FROM bid, range(5) r(i)) GROUP BY auction, ws) "
           "SELECT a.auction, a.num, a.ws FROM ab a JOIN (SELECT MAX(num) AS maxn, ws FROM ab GROUP BY ws) m "
           "ON a.ws = m.ws AND a.num >= m.maxn", ["bid"]),
    "q7": ("SELECT b.auction, b.price, b.bidder, b.date_time FROM bid b JOIN (SELECT MAX(price) AS maxprice, "
           "time_bucket(INTERVAL 10 SECOND, date_time) + INTERVAL 10 SECOND AS wend FROM bid GROUP BY 2) m "
           "ON b.price = m.maxprice AND b.date_time >= m.wend - INTERVAL 10 SECOND AND b.date_time < m.wend", ["bid"]),
    "q8": ("SELECT p.id, p.name, p.ws FROM (SELECT id, name, time_bucket(INTERVAL 10 SECOND, date_time) AS ws FROM person GROUP BY ALL) p "
           "JOIN (SELECT seller, time_bucket(INTERVAL 10 SECOND, date_time) AS ws FROM auction GROUP BY ALL) a "
           "ON p.id = a.seller AND p.ws = a.ws", ["person", "auction"]),
}


def main():
    d, repeat = input_dir(__doc__)
    con = duckdb.connect()
    con.execute(f"SET threads TO {os.cpu_count()}").fetchall()
    counts = {}
    for t in ["bid", "auction", "person"]:
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{d / (t + '.parquet')}')").fetchall()
        counts[t] = con.execute(f"SELECT COUNT(*) FROM {t}").fetchall()[0][0]

    def runner(sql):
        # results streamed out as Arrow batches and discarded
        return lambda: sum(batch.num_rows for batch in con.sql(sql).to_arrow_reader(1 << 16))

    report({q: (runner(sql), tables) for q, (sql, tables) in QUERIES.items()}, counts, repeat)


if __name__ == "__main__":
    main()
