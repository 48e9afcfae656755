#!/usr/bin/env python3
"""A stand-in for the guide's web services (webhooks, dashboards, lookup APIs) on loopback.

    python3 configs/guide/webhook.py PORT DIR

POST/PUT/PATCH /<name>: the body's rows (a JSON array, or JSON lines) are appended to
DIR/<name>.jsonl, one object per line; answers 200. GET /<name>: answers DIR/<name>.json (a JSON
array) as the lookup API. With GUIDE_TOKEN set, a request without `Authorization: Bearer
<token>` gets 401.
"""
import json, os, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, root = int(sys.argv[1]), sys.argv[2]
token = os.environ.get("GUIDE_TOKEN")
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def authorised(self):
        if token and self.headers.get("Authorization") != f"Bearer {token}":
            self.send_response(401)
            self.end_headers()
            return False
        return True

    def name(self):
        return self.path.strip("/").split("?")[0].replace("/", "_") or "root"

    def do_POST(self):
        if not self.authorised():
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        text = body.strip()
        rows = json.loads(text) if text.startswith("[") else [json.loads(l) for l in text.splitlines() if l.strip()]
        with lock, open(os.path.join(root, self.name() + ".jsonl"), "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_PUT = do_POST
    do_PATCH = do_POST

    def do_GET(self):
        if not self.authorised():
            return
        path = os.path.join(root, self.name() + ".json")
        if not os.path.exists(path):
            self.send_response(404)
            self.end_headers()
            return
        with open(path, "rb") as f:
            body = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


os.makedirs(root, exist_ok=True)
ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
