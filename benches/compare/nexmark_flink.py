#!/usr/bin/env python3
"""Runs the Nexmark queries on Apache Flink SQL (a local mini-cluster, streaming mode,
parallelism 2) over the same JSON Lines files `ferris-bench` generates, each into Flink's
`blackhole` sink. Prints, per query, the wall time of the job and events read per second,
with and without Flink's start-up (measured once, on a 1 000-bid file), to put
`benches/results/nexmark-*.md` (`--format jsonl`) in ratio.

    bash benches/compare/flink.sh --events 5000000      # installs apache-flink in a venv, then runs this
"""
import json
import os
import tempfile
import time
from pathlib import Path

from pyflink.table import EnvironmentSettings, TableEnvironment

from nexmark_common import input_dir

SCHEMAS = {
    "bid": "auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, date_time TIMESTAMP(3), extra STRING, "
           "p_time AS PROCTIME()",
    "auction": "id BIGINT, item_name STRING, description STRING, initial_bid BIGINT, reserve BIGINT, date_time TIMESTAMP(3), "
               "expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra STRING",
    "person": "id BIGINT, name STRING, email_address STRING, credit_card STRING, city STRING, state STRING, "
              "date_time TIMESTAMP(3), extra STRING",
}

HOP = "TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))"

# Flink's own Nexmark SQL (nexmark-flink), the same queries as benches/nexmark/q*.sql.
QUERIES = {
    "q0": ("SELECT auction, bidder, price, date_time, extra FROM bid", ["bid"]),
    "q1": ("SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid", ["bid"]),
    "q2": ("SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0", ["bid"]),
    "q3": ("SELECT p.name, p.city, p.state, a.id FROM auction a JOIN person p ON a.seller = p.id "
           "WHERE a.category = 10 AND (p.state = 'or' OR p.state = 'id' OR p.state = 'ca')", ["auction", "person"]),
    "q4": ("SELECT q.category, AVG(q.final) AS avg_final FROM (SELECT MAX(b.price) AS final, a.category FROM auction a "
           "JOIN bid b ON a.id = b.auction WHERE b.date_time BETWEEN a.date_time AND a.expires "
           "GROUP BY a.id, a.category) q GROUP BY q.category", ["auction", "bid"]),
    "q5": (f"SELECT ab.auction, ab.num, ab.starttime FROM (SELECT auction, COUNT(*) AS num, window_start AS starttime, "
           f"window_end AS endtime FROM {HOP} GROUP BY auction, window_start, window_end) ab JOIN (SELECT MAX(cb.num) AS maxn, "
           f"cb.starttime, cb.endtime FROM (SELECT COUNT(*) AS num, window_start AS starttime, window_end AS endtime FROM {HOP} "
           f"GROUP BY auction, window_start, window_end) cb GROUP BY cb.starttime, cb.endtime) mb "
           f"ON ab.starttime = mb.starttime AND ab.endtime = mb.endtime AND ab.num >= mb.maxn", ["bid"]),
    "q7": ("SELECT b.auction, b.price, b.bidder, b.date_time FROM bid b JOIN (SELECT MAX(price) AS maxprice, window_end AS wend "
           "FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) GROUP BY window_start, window_end) m "
           "ON b.price = m.maxprice WHERE b.date_time >= m.wend - INTERVAL '10' SECOND AND b.date_time < m.wend", ["bid"]),
    "q8": ("SELECT p.id, p.name, p.starttime FROM (SELECT id, name, window_start AS starttime, window_end AS endtime "
           "FROM TABLE(TUMBLE(TABLE person, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) GROUP BY id, name, window_start, window_end) p "
           "JOIN (SELECT seller, window_start AS starttime, window_end AS endtime FROM TABLE(TUMBLE(TABLE auction, "
           "DESCRIPTOR(date_time), INTERVAL '10' SECOND)) GROUP BY seller, window_start, window_end) a "
           "ON p.id = a.seller AND p.starttime = a.starttime AND p.endtime = a.endtime", ["person", "auction"]),
    "q12": ("SELECT bidder, COUNT(*) AS bid_count, window_start, window_end FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(p_time), "
            "INTERVAL '10' SECOND)) GROUP BY bidder, window_start, window_end", ["bid"]),
}


def environment(d):
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    env.get_config().set("parallelism.default", os.environ.get("FLINK_PARALLELISM", "2"))
    for t, cols in SCHEMAS.items():
        env.execute_sql(
            f"CREATE TEMPORARY TABLE {t} ({cols}, WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) WITH ("
            f"'connector' = 'filesystem', 'path' = '{d / (t + '.jsonl')}', 'format' = 'json', "
            f"'json.timestamp-format.standard' = 'ISO-8601')"
        )
    return env


def run(env, name, sql):
    """Runs `sql` into a blackhole; the wall time in seconds."""
    t = time.perf_counter()
    env.execute_sql(f"CREATE TABLE sink_{name}_{int(t * 1000)} WITH ('connector' = 'blackhole') AS {sql}").wait()
    return time.perf_counter() - t


def main():
    d, repeat = input_dir(__doc__)
    counts = {t: sum(1 for _ in open(d / (t + ".jsonl"))) for t in SCHEMAS}
    # Flink's start-up: q0 over 1 000 bids (same tables, tiny files).
    with tempfile.TemporaryDirectory() as tiny:
        tiny = Path(tiny)
        for t in SCHEMAS:
            with open(d / (t + ".jsonl")) as src, open(tiny / (t + ".jsonl"), "w") as dst:
                for _, line in zip(range(1000), src):
                    dst.write(line)
        startup = min(run(environment(tiny), "startup", QUERIES["q0"][0]) for _ in range(2))
    print(f"Flink start-up (q0 over 1 000 bids): {startup:.2f} s; parallelism {os.environ.get('FLINK_PARALLELISM', '2')}")
    print(f"{'query':6s} {'events':>12s} {'seconds':>9s} {'events/s':>12s} {'ev/s after start-up':>20s}")
    results = {}
    for q, (sql, tables) in QUERIES.items():
        only = os.environ.get("FLINK_QUERIES")
        if only and q not in only.split(","):
            continue
        best = min(run(environment(d), q, sql) for _ in range(repeat))
        events = sum(counts[t] for t in tables)
        steady = events / max(best - startup, 1e-9)
        results[q] = {"events": events, "seconds": best, "events_per_s": events / best, "after_startup": steady}
        print(f"{q:6s} {events:>12d} {best:>9.2f} {events / best:>12.0f} {steady:>20.0f}", flush=True)
    print(json.dumps({"startup_s": startup, "queries": results}))


if __name__ == "__main__":
    main()
