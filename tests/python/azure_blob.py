#!/usr/bin/env python3
"""Azure Blob Storage for the end-to-end tests, through azure-storage-blob (Microsoft's client)
against Azurite (`bash tests/services/azure.sh start`; its blob endpoint in AZURE_BLOB_ENDPOINT,
default http://127.0.0.1:10000/devstoreaccount1, with the emulator's well-known account).

    azure_blob.py create CONTAINER            creates the container (no error when it exists)
    azure_blob.py put CONTAINER NAME FILE     uploads FILE as blob NAME
    azure_blob.py list CONTAINER PREFIX       the blob names under PREFIX, one a line
    azure_blob.py rows CONTAINER PREFIX       the rows of every Parquet or JSON-lines blob under PREFIX, with the
                                              values of its Hive prefixes, as JSON lines
"""
import io
import json
import os
import sys

from azure.storage.blob import BlobServiceClient

ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def client():
    endpoint = os.environ.get("AZURE_BLOB_ENDPOINT", f"http://127.0.0.1:10000/{ACCOUNT}")
    conn = f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint={endpoint};"
    return BlobServiceClient.from_connection_string(conn)


def main():
    cmd, container = sys.argv[1], sys.argv[2]
    c = client().get_container_client(container)
    if cmd == "create":
        if not c.exists():
            c.create_container()
    elif cmd == "put":
        with open(sys.argv[4], "rb") as f:
            c.upload_blob(sys.argv[3], f, overwrite=True)
    elif cmd == "list":
        for b in c.list_blobs(name_starts_with=sys.argv[3]):
            print(b.name)
    elif cmd == "rows":
        import pyarrow.parquet as pq

        for b in c.list_blobs(name_starts_with=sys.argv[3]):
            data = c.download_blob(b.name).readall()
            # Hive prefixes (`region=eu/`) as string columns, as a reader of the dataset sees them
            hive = dict(seg.split("=", 1) for seg in b.name.split("/")[:-1] if "=" in seg)
            if b.name.endswith(".parquet"):
                rows = pq.read_table(io.BytesIO(data)).to_pylist()
            else:
                rows = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
            for row in rows:
                row.update(hive)
                print(json.dumps(row, default=str))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
    # pyarrow's threads can abort the interpreter's shutdown ("terminate called without an
    # active exception"): everything is printed, leave at once
    sys.stdout.flush()
    os._exit(0)
