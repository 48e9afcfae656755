"""What the Nexmark comparison scripts share: their command line and the timing table."""
import argparse, time
from pathlib import Path

root = Path(__file__).resolve().parents[2]
# --queries: the ones to run (all when empty)
_only = []


def input_dir(description):
    """Parses --events, --repeat, --dir and --queries; returns (directory of the generated files,
    repeat)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", help="the generated files (default target/nexmark/EVENTS)")
    ap.add_argument("--queries", default="", help="comma-separated queries to run (default: all)")
    a = ap.parse_args()
    _only.extend(q.strip() for q in a.queries.split(",") if q.strip())
    return (Path(a.dir) if a.dir else root / "target" / "nexmark" / str(a.events)), a.repeat


def report(queries, counts, repeat):
    """Runs each query `repeat` times (`run()` returns its row count), keeps the fastest, and
    prints events read per second: `queries` maps a name to (run, tables read)."""
    print(f"{'query':6s} {'events':>12s} {'seconds':>9s} {'events/s':>14s} {'rows':>10s}")
    for q, (run, tables) in queries.items():
        if _only and q not in _only:
            continue
        best, rows = None, 0
        for _ in range(repeat):
            t = time.perf_counter()
            rows = run()
            s = time.perf_counter() - t
            best = s if best is None else min(best, s)
        events = sum(counts[t] for t in tables)
        print(f"{q:6s} {events:>12d} {best:>9.3f} {events / best:>14.0f} {rows:>10d}")
