"""What checkpoints cost, measured on streaming jobs (run by benches/checkpoints.sh).

Each query reads Nexmark bids (and auctions) from JSON Lines files that the job *tails*
(`watch = true`: an unbounded source, so barriers flow every `checkpoint.interval`), the files
complete before the start and closed by two far-future rows that move the watermark past every
window. The job writes to a file sink; the time is from the start of `ferris-sql run` to the
moment its output holds as many rows as the same query gives on the bounded files. Modes:
`checkpoint.interval = 1h` (no checkpoint during the run: the baseline), `1s` (at least once),
and `1s` with `use_transactions` (exactly once: output published at each checkpoint).
Prints a markdown table: seconds (best of --repeat), events/s, the ratio to the baseline, peak
RSS, checkpoints taken with their mean and longest duration (barrier to manifest written), and
the size of the last one's state.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

QUERIES = [
    ("hop", "SELECT auction, COUNT(*) AS num, window_start FROM bid GROUP BY HOP(date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND), auction"),
    ("tumble", "SELECT bidder, COUNT(*) AS n, SUM(price) AS total, MAX(price) AS top, window_start FROM bid GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND), bidder"),
    (
        "interval_join",
        "SELECT b.auction, b.price, a.seller FROM bid b JOIN auction a ON b.auction = a.id "
        "AND b.date_time BETWEEN a.date_time AND a.date_time + INTERVAL '10' SECOND",
    ),
    # Nexmark q7 as Flink's suite runs it on a stream: `bid` read once for both scans, the
    # window maximum joined back to its bids within the window's 10 seconds
    (
        "q7",
        "SELECT b.auction, b.price, b.bidder, b.date_time FROM bid b "
        "JOIN (SELECT MAX(price) AS maxprice, window_end AS wend FROM bid GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND)) m "
        "ON b.price = m.maxprice AND b.date_time >= m.wend - INTERVAL '10' SECOND AND b.date_time < m.wend",
    ),
    # Nexmark q5 as written: the HOP counts per auction, the maximum of each window over them
    # (windows of windows), and the counts that reach it (a semi join on the window)
    (
        "q5",
        "WITH auction_bids AS (SELECT auction, COUNT(*) AS num, window_start, window_end FROM bid "
        "GROUP BY HOP(date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND), auction) "
        "SELECT a.auction, a.num, a.window_start FROM auction_bids a "
        "JOIN (SELECT MAX(num) AS maxn, window_start, window_end FROM auction_bids GROUP BY window_start, window_end) m "
        "ON a.window_start = m.window_start AND a.window_end = m.window_end AND a.num >= m.maxn",
    ),
    # window functions on a stream: each bidder's previous price, bid number and running total
    (
        "over",
        "SELECT bidder, price, date_time, LAG(price) OVER (PARTITION BY bidder ORDER BY date_time) AS prev, "
        "ROW_NUMBER() OVER (PARTITION BY bidder ORDER BY date_time) AS n, SUM(price) OVER (PARTITION BY bidder ORDER BY date_time) AS total FROM bid",
    ),
    # a running average per bidder: the aggregate's state (count, sum) carried per key
    (
        "running_avg",
        "SELECT bidder, price, date_time, AVG(price) OVER (PARTITION BY bidder ORDER BY date_time) AS avg_price FROM bid",
    ),
    # window functions reading later rows: the next bid's price and an average over the 10 bids
    # before and the one after, over all bids (one row ahead: the first far-future row lets the
    # last real ones out, so the output reaches the bounded answer's size)
    (
        "lead",
        "SELECT bidder, price, date_time, LEAD(price) OVER (ORDER BY date_time) AS next_price, "
        "AVG(price) OVER (ORDER BY date_time ROWS BETWEEN 10 PRECEDING AND 1 FOLLOWING) AS around FROM bid",
    ),
]
BID = "auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, date_time TIMESTAMP, extra VARCHAR"
AUCTION = (
    "id BIGINT, item_name VARCHAR, description VARCHAR, initial_bid BIGINT, reserve BIGINT, date_time TIMESTAMP, "
    "expires TIMESTAMP, seller BIGINT, category BIGINT, extra VARCHAR"
)
MODES = [
    ("none (1h)", ", 'checkpoint.interval' = '1h'"),
    ("1s", ", 'checkpoint.interval' = '1s'"),
    ("1s exactly-once", ", 'checkpoint.interval' = '1s', 'use_transactions' = 'true'"),
]


def with_sentinel(src, dst):
    """Copies `src` (JSON Lines) to `dst` and appends a copy of its last row a day later."""
    last = None
    with open(src, "rb") as i, open(dst, "wb") as o:
        for line in i:
            o.write(line)
            last = line
    row = json.loads(last)
    with open(dst, "ab") as o:
        # two far-future rows: the second moves the watermark past the first, so that the
        # first leaves the event-time sort and lets out the rows held for a later row (LEAD)
        for day in ("01", "02"):
            row["date_time"] = f"2099-01-{day}T00:00:00.000"
            o.write((json.dumps(row) + "\n").encode())


def job_sql(name, query, files, keys, watch):
    sources = (
        f"'bid.type' = 'file_source', 'bid.path' = '{files}/bid.jsonl', 'bid.format' = 'jsonlines', 'bid.event_time' = 'date_time', "
        f"'bid.schema' = '{BID}'"
    )
    if "JOIN auction" in query:
        sources += (
            f", 'auction.type' = 'file_source', 'auction.path' = '{files}/auction.jsonl', 'auction.format' = 'jsonlines', "
            f"'auction.event_time' = 'date_time', 'auction.schema' = '{AUCTION}'"
        )
        if watch:
            sources += ", 'auction.watch' = 'true'"
    if watch:
        sources += ", 'bid.watch' = 'true', 'bid.batch.size' = '8192'"
    return f"CREATE STREAM {name} AS {query} INTO out WITH ({sources}, 'out.type' = 'file_sink', 'out.path' = 'out.jsonl'{keys});\n"


def lines(path):
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def fresh(work, sql):
    """Clears `work` of an earlier run's output, checkpoints and staging, and writes `sql`."""
    out = os.path.join(work, "out.jsonl")
    if os.path.exists(out):
        os.remove(out)
    subprocess.run(["rm", "-rf", os.path.join(work, "checkpoints"), os.path.join(work, ".ferris-staging")], check=True)
    with open(os.path.join(work, "job.sql"), "w") as f:
        f.write(sql)


def run_stream(binary, work, sql, want):
    """Runs `sql` until its output holds `want` rows; returns (seconds, report)."""
    fresh(work, sql)
    start = time.monotonic()
    p = subprocess.Popen(
        [binary, "run", "--report-json", "--no-progress", "job.sql"],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RUST_LOG": "warn"},
    )
    out = os.path.join(work, "out.jsonl")
    size, n = -1, 0
    while n < want and p.poll() is None and time.monotonic() - start < 600:
        time.sleep(0.05)
        now = os.path.getsize(out) if os.path.exists(out) else 0
        if now != size:
            size, n = now, lines(out)
    secs = time.monotonic() - start
    p.send_signal(signal.SIGINT)
    stdout, _ = p.communicate(timeout=120)
    report = json.loads(stdout.decode().strip().splitlines()[-1])
    return secs, report


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True, help="the Nexmark files (bid.jsonl, auction.jsonl)")
    ap.add_argument("--binary", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--queries", help="comma-separated names (hop,tumble,interval_join,q7,q5,over,running_avg,lead); default: all")
    ap.add_argument("--modes", help="comma-separated modes to run (none,1s,exactly-once); default: all")
    args = ap.parse_args()
    queries = [q for q in QUERIES if not args.queries or q[0] in args.queries.split(",")]
    short = {"none (1h)": "none", "1s": "1s", "1s exactly-once": "exactly-once"}
    modes = [m for m in MODES if not args.modes or short[m[0]] in args.modes.split(",")]
    work = tempfile.mkdtemp(prefix="ferris-ck-")
    files = os.path.join(work, "input")
    os.makedirs(files)
    for t in ("bid", "auction"):
        with_sentinel(os.path.join(args.dir, f"{t}.jsonl"), os.path.join(files, f"{t}.jsonl"))
    print("| query | checkpoints | seconds | events/s | vs none | peak RSS MB | checkpoints taken | mean ms | longest ms | last state KiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, query in queries:
        # the answer's size, from the bounded files (without the far-future rows)
        with open(os.path.join(work, "job.sql"), "w") as f:
            f.write(job_sql(name, query, os.path.abspath(args.dir), "", False))
        if os.path.exists(os.path.join(work, "out.jsonl")):
            os.remove(os.path.join(work, "out.jsonl"))
        subprocess.run([args.binary, "run", "--no-progress", "job.sql"], cwd=work, check=True, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        want = lines(os.path.join(work, "out.jsonl"))
        base = None
        for mode, keys in modes:
            best = None
            for _ in range(args.repeat):
                secs, report = run_stream(args.binary, work, job_sql(name, query, files, keys, True), want)
                if best is None or secs < best[0]:
                    best = (secs, report)
            secs, report = best
            base = base or secs
            events = sum(s["records"] for s in report["sources"])
            n = report.get("checkpoints", 0)
            mean = report.get("checkpoint_total_ms", 0) / n if n else 0
            print(
                f"| {name} | {mode} | {secs:.2f} | {events / secs / 1e6:.2f} M | {base / secs:.2f}× | {report.get('peak_rss_mb', 0):.0f} | "
                f"{n} | {mean:.0f} | {report.get('checkpoint_max_ms', 0)} | {report.get('checkpoint_bytes', 0) / 1024:.0f} |",
                flush=True,
            )
    if args.queries:
        subprocess.run(["rm", "-rf", work])
        return
    print()
    print("| recovery | checkpoints | kill → restored process started | kill → first new output |")
    print("|---|---|---|---|")
    name, query = QUERIES[1]
    for mode, keys in MODES[1:]:
        started, first = recovery(args.binary, work, job_sql(name, query, files, keys, True))
        shown = f"{first * 1000:.0f} ms" if first is not None else "none (the input was done before the kill: use more --events)"
        print(f"| {name}, killed after 2.5 s | {mode} | {started * 1000:.0f} ms | {shown} |", flush=True)
    subprocess.run(["rm", "-rf", work])


def recovery(binary, work, sql):
    """Starts `sql`, SIGKILLs it after 2.5 s, restarts it at once: seconds from the kill to
    the restarted process running, and to its first output beyond what was there (None when
    none came: the input was done before the kill)."""
    out = os.path.join(work, "out.jsonl")
    fresh(work, sql)
    cmd = [binary, "run", "--no-progress", "job.sql"]
    env = {**os.environ, "RUST_LOG": "warn"}
    p = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    time.sleep(2.5)
    p.kill()
    killed = time.monotonic()
    p.wait()
    before = os.path.getsize(out) if os.path.exists(out) else 0
    q = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    started = time.monotonic() - killed
    while (os.path.getsize(out) if os.path.exists(out) else 0) <= before and q.poll() is None and time.monotonic() - killed < 30:
        time.sleep(0.005)
    grew = (os.path.getsize(out) if os.path.exists(out) else 0) > before
    first = time.monotonic() - killed if grew else None
    q.send_signal(signal.SIGINT)
    q.wait(timeout=120)
    return started, first


if __name__ == "__main__":
    sys.exit(main())
