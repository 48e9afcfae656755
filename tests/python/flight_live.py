"""Subscribes to a FerrisStreams live stream over Arrow Flight with pyarrow, as an analyst would.

    python3 flight_live.py PORT STREAM KEY LAST_KEY [APPEND_FROM APPEND_TO]

Lists the server's flights (STREAM must be one), asks for STREAM's FlightInfo, subscribes with
DoGet, then (when given) appends the lines of APPEND_FROM to APPEND_TO, the file the job tails,
and reads until a row whose KEY column equals LAST_KEY arrives. Prints `schema: <names>` and
then every row received as one JSON object per line. FERRIS_AUTH_TOKEN, when set, is sent as
a bearer token. The whole call has a 60-second deadline.
"""
import json
import os
import sys

import pyarrow.flight as fl


def main() -> None:
    port, stream, key, last = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    token = os.environ.get("FERRIS_AUTH_TOKEN")
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    opts = fl.FlightCallOptions(timeout=60, headers=headers)
    client = fl.connect(f"grpc://127.0.0.1:{port}")
    names = [f.descriptor.path[0].decode() for f in client.list_flights(options=opts)]
    assert stream in names, f"{stream} not in {names}"
    info = client.get_flight_info(fl.FlightDescriptor.for_path(stream), opts)
    reader = client.do_get(info.endpoints[0].ticket, opts)
    print("schema:", ",".join(reader.schema.names), flush=True)
    if len(sys.argv) > 6:
        with open(sys.argv[5]) as src, open(sys.argv[6], "a") as dst:
            dst.write(src.read())
    rows = []
    while not any(r[key] == last for r in rows):
        try:
            chunk = reader.read_chunk()
        except StopIteration:
            break
        rows.extend(chunk.data.to_pylist())
    for r in rows:
        print(json.dumps(r, default=str))


if __name__ == "__main__":
    main()
