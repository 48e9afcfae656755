"""Puts and reads objects on the tests' S3 server with boto3 and pyarrow, as a data engineer would.

    python3 s3_objects.py ENDPOINT mkbucket BUCKET
    python3 s3_objects.py ENDPOINT put BUCKET KEY FILE
    python3 s3_objects.py ENDPOINT keys BUCKET PREFIX        # one key per line
    python3 s3_objects.py ENDPOINT rows BUCKET PREFIX        # every row, one JSON object per line

`rows` reads every object under PREFIX by its extension (.parquet with pyarrow.parquet,
.csv[.gz] with pyarrow's CSV reader, .jsonl[.gz] line by line with json) and adds the Hive columns of its
key (`country=DE/`) as strings, the way a reader of a Hive-partitioned dataset sees them.
Credentials are the test account's (`testing`).
"""
import gzip
import io
import json
import os
import sys

import boto3
import pyarrow.csv as pcsv
import pyarrow.parquet as pq


def client(endpoint):
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")


def keys(s3, bucket, prefix):
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", [])]
    return sorted(out)


def plain(table):
    """Timestamps as ISO text (Python's datetime has no nanoseconds), the rest as read."""
    import pyarrow as pa
    import pyarrow.compute as pc
    for i, f in enumerate(table.schema):
        if pa.types.is_timestamp(f.type):
            table = table.set_column(i, f.name, pc.cast(table.column(i), pa.string()))
    return table


def table_of(key, body):
    if key.endswith(".gz"):
        body = gzip.decompress(body)
        key = key[:-3]
    if key.endswith(".parquet"):
        return plain(pq.read_table(io.BytesIO(body))).to_pylist()
    if key.endswith(".csv"):
        return pcsv.read_csv(io.BytesIO(body)).to_pylist()
    # JSON lines as written (pyarrow would turn ISO timestamps into datetimes)
    return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


def main() -> None:
    endpoint, cmd, bucket = sys.argv[1], sys.argv[2], sys.argv[3]
    s3 = client(endpoint)
    if cmd == "mkbucket":
        s3.create_bucket(Bucket=bucket)
    elif cmd == "put":
        with open(sys.argv[5], "rb") as f:
            s3.put_object(Bucket=bucket, Key=sys.argv[4], Body=f.read())
    elif cmd == "keys":
        for k in keys(s3, bucket, sys.argv[4]):
            print(k)
    elif cmd == "rows":
        for k in keys(s3, bucket, sys.argv[4]):
            body = s3.get_object(Bucket=bucket, Key=k)["Body"].read()
            hive = dict(seg.split("=", 1) for seg in k.split("/")[:-1] if "=" in seg)
            for row in table_of(k, body):
                row.update(hive)
                print(json.dumps(row, default=str))
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
    # pyarrow's threads can abort the interpreter's shutdown ("terminate called without an
    # active exception"): everything is printed, leave at once
    sys.stdout.flush()
    os._exit(0)
