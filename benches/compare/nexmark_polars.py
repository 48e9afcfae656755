#!/usr/bin/env python3
"""Runs Nexmark q0-q5, q7 and q8 on Polars (lazy, over the same Parquet files `ferris-bench`
generates) and prints events read per second and result rows, to put
`benches/results/nexmark-*.md` in ratio.

    pip install -r benches/compare/requirements.txt
    python3 benches/compare/nexmark_polars.py --events 10000000
"""
from datetime import timedelta
from pathlib import Path

import polars as pl

from nexmark_common import input_dir, report


def queries(d: Path):
    bid = lambda: pl.scan_parquet(d / "bid.parquet")
    auction = lambda: pl.scan_parquet(d / "auction.parquet")
    person = lambda: pl.scan_parquet(d / "person.parquet")

    def q5():
        b = bid().select("auction", "date_time").with_columns(pl.lit(list(range(5))).alias("i")).explode("i")
        b = b.with_columns((pl.col("date_time").dt.truncate("2s") - pl.duration(seconds=2 * pl.col("i"))).alias("ws"))
        ab = b.group_by("auction", "ws").agg(pl.len().alias("num"))
        m = ab.group_by("ws").agg(pl.col("num").max().alias("maxn"))
        return ab.join(m, on="ws").filter(pl.col("num") >= pl.col("maxn")).select("auction", "num", "ws")

    def q7():
        m = bid().group_by(pl.col("date_time").dt.truncate("10s").alias("ws")).agg(pl.col("price").max().alias("maxprice"))
        m = m.with_columns((pl.col("ws") + timedelta(seconds=10)).alias("wend"))
        j = bid().join(m, left_on="price", right_on="maxprice")
        return j.filter((pl.col("date_time") >= pl.col("wend") - timedelta(seconds=10)) & (pl.col("date_time") < pl.col("wend"))).select(
            "auction", "price", "bidder", "date_time")

    def q8():
        p = person().select("id", "name", pl.col("date_time").dt.truncate("10s").alias("ws")).unique()
        a = auction().select("seller", pl.col("date_time").dt.truncate("10s").alias("ws")).unique()
        return p.join(a, left_on=["id", "ws"], right_on=["seller", "ws"]).select("id", "name", "ws")

    return {
        "q0": (lambda: bid().select("auction", "bidder", "price", "date_time", "extra"), ["bid"]),
        "q1": (lambda: bid().select("auction", "bidder", (pl.col("price") * 0.908).alias("price"), "date_time", "extra"), ["bid"]),
        "q2": (lambda: bid().filter(pl.col("auction") % 123 == 0).select("auction", "price"), ["bid"]),
        "q3": (lambda: auction().filter(pl.col("category") == 10).join(
            person().filter(pl.col("state").is_in(["or", "id", "ca"])), left_on="seller", right_on="id").select("name", "city", "state", "id"),
            ["auction", "person"]),
        "q4": (lambda: auction().join(bid(), left_on="id", right_on="auction")
               .filter((pl.col("date_time_right") >= pl.col("date_time")) & (pl.col("date_time_right") <= pl.col("expires")))
               .group_by("id", "category").agg(pl.col("price").max().alias("final"))
               .group_by("category").agg(pl.col("final").mean()), ["auction", "bid"]),
        "q5": (q5, ["bid"]),
        "q7": (q7, ["bid"]),
        "q8": (q8, ["person", "auction"]),
    }


def main():
    d, repeat = input_dir(__doc__)
    counts = {t: pl.scan_parquet(d / f"{t}.parquet").select(pl.len()).collect().item() for t in ["bid", "auction", "person"]}
    # results collected in memory
    runs = {q: ((lambda build=build: build().collect().height), tables) for q, (build, tables) in queries(d).items()}
    report(runs, counts, repeat)


if __name__ == "__main__":
    main()
