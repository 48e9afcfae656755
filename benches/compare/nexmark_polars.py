#!/usr/bin/env python3
"""Runs the Nexmark queries on Polars (lazy, over the same Parquet files `ferris-bench` generates)
and prints events read per second and result rows, to put `benches/results/nexmark-*.md` in ratio.
The queries are the ones `nexmark_duckdb.py` runs (q0-q22 but q12, which reads the clock), each
computing the same rows as its DuckDB SQL; results are collected in memory and discarded, but for
q10, which writes CSV files in Hive directories by day and minute (`dt=…/hm=…/`) into a temporary
directory deleted after the run. q13 reads `side_input.csv` next to the Parquet files.

Where Polars has no SQL construct the query is written the idiomatic way: window functions as
`over()` (q6's `ROWS BETWEEN 10 PRECEDING` as a rolling mean, q19's `ROW_NUMBER()` as an ordinal
rank), `ROW_NUMBER() … <= 1` as the row at `arg_max`/`arg_min` per group (q9, q18), q11's session
windows as a sort by bidder and time, a new session where the gap reaches 10 s, and a cumulative
sum of those starts. Where the order ties (bids of one millisecond, equal prices), DuckDB and Polars
may keep different ones of the tied rows, as `tests/e2e/nexmark.rs` allows.

    pip install -r benches/compare/requirements.txt
    python3 benches/compare/nexmark_polars.py --events 10000000
    python3 benches/compare/nexmark_polars.py --events 1000000 --repeat 1 --queries q9,q11

Tested with Polars 2.1.0 (q10's `pl.PartitionBy` is recent and marked unstable).
"""
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

import polars as pl

from nexmark_common import input_dir, report

# q21: the url's channel_id parameter, and the codes of the four big channels
CHANNEL_ID = "(&|^)channel_id=([^&]*)"
CHANNEL_CODES = {"apple": "0", "google": "1", "facebook": "2", "baidu": "3"}


def ranks():
    """q15/q16: bids, bidders and auctions in three price ranks (DuckDB's RANKS, same names and
    order). `n_unique` would count a NULL; the generated bids have none."""
    p = pl.col("price")
    conds = [None, p < 10_000, (p >= 10_000) & (p < 1_000_000), p >= 1_000_000]
    name = lambda what, i: f"rank{i}_{what}" if i else f"total_{what}"
    bids = [(pl.len() if c is None else c.sum()).alias(name("bids", i)) for i, c in enumerate(conds)]
    return bids + [(pl.col(col) if c is None else pl.col(col).filter(c)).n_unique().alias(name(what, i))
                   for what, col in (("bidders", "bidder"), ("auctions", "auction")) for i, c in enumerate(conds)]


def queries(d: Path):
    bid = lambda: pl.scan_parquet(d / "bid.parquet")
    auction = lambda: pl.scan_parquet(d / "auction.parquet")
    person = lambda: pl.scan_parquet(d / "person.parquet")
    side_input = lambda: pl.scan_csv(d / "side_input.csv", schema={"key": pl.Int64, "value": pl.String})
    day = pl.col("date_time").dt.strftime("%Y-%m-%d").alias("day")

    # q4, q6, q9: the bids in their auction's lifetime (the bid's date_time and extra get "_right")
    lifetime_bids = lambda: auction().join(bid(), left_on="id", right_on="auction").filter(
        (pl.col("date_time_right") >= pl.col("date_time")) & (pl.col("date_time_right") <= pl.col("expires")))

    def q5():
        b = bid().select("auction", "date_time").with_columns(pl.lit(list(range(5))).alias("i")).explode("i")
        b = b.with_columns((pl.col("date_time").dt.truncate("2s") - pl.duration(seconds=2 * pl.col("i"))).alias("ws"))
        ab = b.group_by("auction", "ws").agg(pl.len().alias("num"))
        m = ab.group_by("ws").agg(pl.col("num").max().alias("maxn"))
        return ab.join(m, on="ws").filter(pl.col("num") >= pl.col("maxn")).select("auction", "num", pl.col("ws").alias("window_start"))

    def q6():
        # each seller's last 11 closed auctions (ROWS BETWEEN 10 PRECEDING AND CURRENT ROW)
        q = lifetime_bids().group_by("id", "seller").agg(pl.col("price").max().alias("final"), pl.col("date_time_right").max().alias("date_time"))
        return q.select("seller", pl.col("final").rolling_mean(11, min_samples=1).over("seller", order_by=["date_time", "id"]).alias("avg_price"))

    def q7():
        m = bid().group_by(pl.col("date_time").dt.truncate("10s").alias("ws")).agg(pl.col("price").max().alias("maxprice"))
        m = m.with_columns((pl.col("ws") + timedelta(seconds=10)).alias("wend"))
        j = bid().join(m, left_on="price", right_on="maxprice")
        return j.filter((pl.col("date_time") >= pl.col("wend") - timedelta(seconds=10)) & (pl.col("date_time") < pl.col("wend"))).select(
            "auction", "price", "bidder", "date_time")

    def q8():
        p = person().select("id", "name", pl.col("date_time").dt.truncate("10s").alias("ws")).unique()
        a = auction().select("seller", pl.col("date_time").dt.truncate("10s").alias("ws")).unique()
        return p.join(a, left_on=["id", "ws"], right_on=["seller", "ws"]).select("id", "name", pl.col("ws").alias("window_start"))

    def q9():
        # ROW_NUMBER() … <= 1 ordered by price desc, time asc: the auction's bids at its highest price, then
        # the row of the earliest of them (arg_min; a tie in both, as in DuckDB, picks any)
        w = lifetime_bids().filter(pl.col("price") == pl.col("price").max().over("id"))
        w = w.group_by("id").agg(pl.all().get(pl.col("date_time_right").arg_min()))
        return w.select("id", "item_name", "description", "initial_bid", "reserve", "date_time", "expires", "seller", "category", "extra",
                        pl.col("id").alias("auction"), "bidder", "price",
                        pl.col("date_time_right").alias("bid_date_time"), pl.col("extra_right").alias("bid_extra"))

    def q11():
        # session windows: sorted by bidder and time, a bid starts a session when the bidder changes or
        # 10 s or more passed since the previous bid; the running count of starts numbers the sessions
        b = bid().select("bidder", "date_time").sort("bidder", "date_time")
        start = (pl.col("bidder") != pl.col("bidder").shift()) | (pl.col("date_time") - pl.col("date_time").shift() >= timedelta(seconds=10))
        b = b.with_columns(start.fill_null(True).cum_sum().alias("session"))
        return b.group_by("session").agg(pl.col("bidder").first(), pl.len().alias("bid_count"), pl.col("date_time").min().alias("starttime"),
                                         (pl.col("date_time").max() + timedelta(seconds=10)).alias("endtime")).drop("session")

    def q14():
        # the band on a float product (DuckDB: a decimal); exact here, as 0.908 * price is never within 0.001 of a bound
        price, hour = pl.col("price") * 0.908, pl.col("date_time").dt.hour()
        part = (pl.when((hour >= 8) & (hour <= 18)).then(pl.lit("dayTime")).when((hour <= 6) | (hour >= 20)).then(pl.lit("nightTime"))
                .otherwise(pl.lit("otherTime")))
        return bid().filter((price > 1_000_000) & (price < 50_000_000)).select(
            "auction", "bidder", price.alias("price"), part.alias("bid_time_type"), "date_time", "extra",
            pl.col("extra").str.count_matches("c", literal=True).alias("c_counts"))

    def q17():
        p = pl.col("price")
        return bid().group_by("auction", day).agg(
            pl.len().alias("total_bids"), (p < 10_000).sum().alias("rank1_bids"), ((p >= 10_000) & (p < 1_000_000)).sum().alias("rank2_bids"),
            (p >= 1_000_000).sum().alias("rank3_bids"), p.min().alias("min_price"), p.max().alias("max_price"), p.mean().alias("avg_price"),
            p.sum().alias("sum_price"))

    def q20():
        b = bid().join(auction().filter(pl.col("category") == 10), left_on="auction", right_on="id")
        return b.select("auction", "bidder", "price", "channel", "url", pl.col("date_time").alias("bid_date_time"), pl.col("extra").alias("bid_extra"),
                        "item_name", "description", "initial_bid", "reserve", pl.col("date_time_right").alias("auction_date_time"), "expires", "seller",
                        "category", pl.col("extra_right").alias("auction_extra"))

    def q21():
        # Flink's REGEXP_EXTRACT, like str.extract, is NULL without a match
        channel = pl.col("channel").str.to_lowercase()
        return bid().filter(pl.col("url").str.contains(CHANNEL_ID) | channel.is_in(list(CHANNEL_CODES))).select(
            "auction", "bidder", "price", "channel",
            channel.replace_strict(CHANNEL_CODES, default=pl.col("url").str.extract(CHANNEL_ID, 2)).alias("channel_id"))

    def q22():
        # Flink's SPLIT_INDEX counts from 0 and is NULL past the end
        parts = pl.col("url").str.split("/")
        return bid().select("auction", "bidder", "price", "channel", *(parts.list.get(i, null_on_oob=True).alias(f"dir{i - 2}") for i in (3, 4, 5)))

    return {
        "q0": (lambda: bid().select("auction", "bidder", "price", "date_time", "extra"), ["bid"]),
        "q1": (lambda: bid().select("auction", "bidder", (pl.col("price") * 0.908).alias("price"), "date_time", "extra"), ["bid"]),
        "q2": (lambda: bid().filter(pl.col("auction") % 123 == 0).select("auction", "price"), ["bid"]),
        "q3": (lambda: auction().filter(pl.col("category") == 10).join(
            person().filter(pl.col("state").is_in(["or", "id", "ca"])), left_on="seller", right_on="id").select("name", "city", "state", "id"),
            ["auction", "person"]),
        "q4": (lambda: lifetime_bids().group_by("id", "category").agg(pl.col("price").max().alias("final"))
               .group_by("category").agg(pl.col("final").mean().alias("avg_final")), ["auction", "bid"]),
        "q5": (q5, ["bid"]),
        "q7": (q7, ["bid"]),
        "q8": (q8, ["person", "auction"]),
        "q6": (q6, ["auction", "bid"]),
        "q9": (q9, ["auction", "bid"]),
        # written to CSV files by main(), not collected
        "q10": (lambda: bid().select("auction", "bidder", "price", "date_time", "extra", pl.col("date_time").dt.strftime("%Y-%m-%d").alias("dt"),
                                     pl.col("date_time").dt.strftime("%H:%M").alias("hm")), ["bid"]),
        "q11": (q11, ["bid"]),
        "q13": (lambda: bid().join(side_input(), left_on=pl.col("auction") % 10_000, right_on="key").select(
            "auction", "bidder", "price", "date_time", "value"), ["bid"]),
        "q14": (q14, ["bid"]),
        "q15": (lambda: bid().group_by(day).agg(ranks()), ["bid"]),
        "q16": (lambda: bid().group_by("channel", day).agg(pl.col("date_time").dt.strftime("%H:%M").max().alias("minute"), *ranks()), ["bid"]),
        "q17": (q17, ["bid"]),
        # ROW_NUMBER() … <= 1 ordered by time desc: the row of each bidder's latest bid on an auction (arg_max)
        "q18": (lambda: bid().group_by("bidder", "auction").agg(pl.all().get(pl.col("date_time").arg_max())).select(
            "auction", "bidder", "price", "channel", "url", "date_time", "extra"), ["bid"]),
        "q19": (lambda: bid().with_columns(pl.col("price").rank("ordinal", descending=True).over("auction").alias("rank_number"))
                .filter(pl.col("rank_number") <= 10), ["bid"]),
        "q20": (q20, ["bid", "auction"]),
        "q21": (q21, ["bid"]),
        "q22": (q22, ["bid"]),
    }


def partitioned_csv(build, out: Path):
    """q10: writes the rows as FerrisStreams' q10 does (DuckDB: `COPY … PARTITION_BY (dt, hm)`): CSV
    files with a header under out/dt=…/hm=…/ (':' written %3A, as DuckDB does), the key columns left
    out of the files; returns the rows written, counted in the files (a few % of the run: the sink
    returns no count, DuckDB's COPY does)."""
    def run():
        shutil.rmtree(out, ignore_errors=True)
        build().sink_csv(pl.PartitionBy(out, key=["dt", "hm"], include_key=False), mkdir=True)
        return pl.scan_csv(out / "**" / "*.csv").select(pl.len()).collect().item()

    return run


def main():
    d, repeat = input_dir(__doc__)
    counts = {t: pl.scan_parquet(d / f"{t}.parquet").select(pl.len()).collect().item() for t in ["bid", "auction", "person"]}
    out = Path(tempfile.mkdtemp(prefix="nexmark-polars-q10-"))
    try:
        # results collected in memory, but q10's
        runs = {q: (partitioned_csv(build, out / "q10") if q == "q10" else (lambda build=build: build().collect().height), tables)
                for q, (build, tables) in queries(d).items()}
        report(runs, counts, repeat)
    finally:
        shutil.rmtree(out, ignore_errors=True)  # ~1 GB at 10M events


if __name__ == "__main__":
    main()
