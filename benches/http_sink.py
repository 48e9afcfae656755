"""HTTP sink throughput: FerrisStreams' http_sink posting a Parquet file's rows as JSON arrays to a
local endpoint, against a plain Python forwarder doing the same (pyarrow slices → json.dumps →
POST over one keep-alive connection), into the same receiver, in one session. Prints a markdown
table.

    python3 benches/http_sink.py --binary target/release/ferris-sql --rows 1000000

The receiver is Python's ThreadingHTTPServer in a process of its own (HTTP/1.1 keep-alive): it
reads each body, counts requests, bytes and rows (`"id":` occurrences) and answers 200. It is
part of both measurements, so the ratio compares the senders; the absolute figures are bounded
by it. Times are wall clock of the whole job (process start and planning included) for
FerrisStreams, of the loop for the peer; rows/s, higher is better. Every run is checked to have
delivered every row.
"""
import argparse
import http.client
import json
import multiprocessing
import os
import subprocess
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pyarrow.parquet as pq


def serve(port_q, stats):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n)
            with stats.get_lock():
                stats[0] += 1
                stats[1] += len(body)
                stats[2] += body.count(b'"id":')
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    port_q.put(srv.server_address[1])
    srv.serve_forever()


def make_input(path, rows):
    ids = pa.array(range(rows), pa.int64())
    table = pa.table({
        "id": ids,
        "customer": pa.array([i % 9973 for i in range(rows)], pa.int32()),
        "amount": pa.array([(i % 100000) / 100 for i in range(rows)], pa.float64()),
        "name": pa.array([f"customer-{i % 9973}" for i in range(rows)]),
    })
    pq.write_table(table, path)


def peer(path, port, per):
    table = pq.read_table(path)
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for off in range(0, table.num_rows, per):
        body = json.dumps(table.slice(off, per).to_pylist()).encode()
        conn.request("POST", "/hook", body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        assert r.status == 200, r.status
    conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/ferris-sql")
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    stats = multiprocessing.Array("q", 3)
    q = multiprocessing.Queue()
    proc = multiprocessing.Process(target=serve, args=(q, stats), daemon=True)
    proc.start()
    port = q.get()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "rows.parquet")
        make_input(src, args.rows)

        def reset():
            with stats.get_lock():
                stats[0] = stats[1] = stats[2] = 0

        for per in (500, 5000):
            reset()
            sql = (f"CREATE STREAM s AS SELECT * FROM src INTO hook WITH ('src.type' = 'file_source', 'src.path' = '{src}', "
                   f"'hook.type' = 'http_sink', 'hook.url' = 'http://127.0.0.1:{port}/hook', 'hook.batch_size' = '{per}');")
            job = os.path.join(tmp, "job.sql")
            with open(job, "w") as f:
                f.write(sql)
            t = time.perf_counter()
            subprocess.run([binary, "run", job, "--no-progress"], cwd=tmp, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ferris = time.perf_counter() - t
            assert stats[2] == args.rows, (stats[2], args.rows)
            reqs, nbytes = stats[0], stats[1]
            reset()
            t = time.perf_counter()
            peer(src, port, per)
            py = time.perf_counter() - t
            assert stats[2] == args.rows, (stats[2], args.rows)
            results.append((per, reqs, nbytes, ferris, py))
    proc.terminate()
    print(f"| rows per request | requests | MB sent | FerrisStreams | rows/s | requests/s | Python forwarder | rows/s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for per, reqs, nbytes, ferris, py in results:
        print(f"| {per} | {reqs} | {nbytes / 1e6:.0f} | {ferris:.2f} s | {args.rows / ferris / 1e6:.2f} M | {reqs / ferris:.0f} | "
              f"{py:.2f} s | {args.rows / py / 1e6:.2f} M | **{py / ferris:.1f}×** |")


if __name__ == "__main__":
    main()
