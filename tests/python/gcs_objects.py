#!/usr/bin/env python3
"""Google Cloud Storage for the end-to-end tests, through its JSON API (the standard library's
HTTP client) against fake-gcs-server (`bash tests/services/gcs.sh start`; address in
GCS_ENDPOINT, default http://127.0.0.1:4443).

    gcs_objects.py mkbucket BUCKET           creates the bucket
    gcs_objects.py put BUCKET NAME FILE      uploads FILE as object NAME
"""
import json
import os
import sys
import urllib.parse
import urllib.request

BASE = os.environ.get("GCS_ENDPOINT", "http://127.0.0.1:4443")


def call(url, data, ctype):
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": ctype})
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


def main():
    cmd, bucket = sys.argv[1], sys.argv[2]
    if cmd == "mkbucket":
        call(f"{BASE}/storage/v1/b", json.dumps({"name": bucket}).encode(), "application/json")
    elif cmd == "put":
        with open(sys.argv[4], "rb") as f:
            body = f.read()
        name = urllib.parse.quote(sys.argv[3], safe="")
        call(f"{BASE}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}", body, "application/octet-stream")
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
