"""A stand-in Iceberg REST catalog server for the tests, on pyiceberg's own catalog.

    python3 iceberg_rest.py DIR PORT

No REST catalog server can be installed here (Polaris, Lakekeeper, Nessie and the Iceberg
project's REST fixture come from Maven, Docker Hub or GitHub releases, none reachable), so the
tests use this one: the REST catalog protocol's endpoints that table writers use (config,
namespaces, create/load/commit table), answered by pyiceberg's `SqlCatalog` (SQLite in DIR,
warehouse DIR/wh) with pyiceberg's own request and response models — commits are validated
and applied by pyiceberg, the same code its REST client's users rely on. Errors follow the
spec's ErrorModel (404 for a missing namespace or table, 409 for a conflict). Prints `ready`
once it listens.
"""
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchNamespaceError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import CommitTableRequest
from pyiceberg.transforms import parse_transform

LOCK = threading.Lock()
CATALOG = None


def load_result(table):
    return {"metadata-location": table.metadata_location, "metadata": json.loads(table.metadata.model_dump_json()), "config": {}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def reply(self, status, body=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def error(self, status, kind, message):
        self.reply(status, {"error": {"message": message, "type": kind, "code": status}})

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b"{}"

    def route(self):
        parts = [unquote(p) for p in self.path.split("?")[0].strip("/").split("/")]
        if parts[:1] != ["v1"]:
            return self.error(404, "NotFound", self.path)
        parts = parts[1:]
        try:
            with LOCK:
                return self.dispatch(parts)
        except (NoSuchTableError,) as e:
            return self.error(404, "NoSuchTableException", str(e))
        except (NoSuchNamespaceError,) as e:
            return self.error(404, "NoSuchNamespaceException", str(e))
        except (TableAlreadyExistsError, NamespaceAlreadyExistsError) as e:
            return self.error(409, "AlreadyExistsException", str(e))
        except CommitFailedException as e:
            return self.error(409, "CommitFailedException", str(e))
        except Exception as e:  # a bug of the stand-in or a bad request: say which
            return self.error(400, "BadRequestException", f"{type(e).__name__}: {e}")

    def dispatch(self, parts):
        method = self.command
        if parts == ["config"]:
            return self.reply(200, {"defaults": {}, "overrides": {}})
        if parts == ["namespaces"] and method == "POST":
            req = json.loads(self.body())
            CATALOG.create_namespace(tuple(req["namespace"]), req.get("properties") or {})
            return self.reply(200, {"namespace": req["namespace"], "properties": req.get("properties") or {}})
        if len(parts) == 2 and parts[0] == "namespaces":
            ns = tuple(parts[1].split("\x1f"))
            props = CATALOG.load_namespace_properties(ns)
            return self.reply(200 if method == "GET" else 204, {"namespace": list(ns), "properties": props} if method == "GET" else None)
        if len(parts) == 3 and parts[0] == "namespaces" and parts[2] == "tables" and method == "POST":
            ns = tuple(parts[1].split("\x1f"))
            req = json.loads(self.body())
            schema = Schema.model_validate(req["schema"])
            fields = []
            for i, f in enumerate((req.get("partition-spec") or {}).get("fields", [])):
                fields.append(PartitionField(source_id=f["source-id"], field_id=f.get("field-id", 1000 + i), transform=parse_transform(f["transform"]), name=f["name"]))
            table = CATALOG.create_table(ns + (req["name"],), schema=schema, partition_spec=PartitionSpec(*fields), properties=req.get("properties") or {})
            return self.reply(200, load_result(table))
        if len(parts) == 4 and parts[0] == "namespaces" and parts[2] == "tables":
            ident = tuple(parts[1].split("\x1f")) + (parts[3],)
            table = CATALOG.load_table(ident)
            if method == "POST":
                req = CommitTableRequest.model_validate_json(self.body())
                resp = CATALOG.commit_table(table, req.requirements, req.updates)
                return self.reply(200, json.loads(resp.model_dump_json()))
            return self.reply(200 if method == "GET" else 204, load_result(table) if method == "GET" else None)
        return self.error(404, "NotFound", f"{method} {self.path}")

    do_GET = route
    do_POST = route
    do_HEAD = route


def main() -> None:
    global CATALOG
    root, port = os.path.abspath(sys.argv[1]), int(sys.argv[2])
    os.makedirs(os.path.join(root, "wh"), exist_ok=True)
    CATALOG = SqlCatalog("rest", uri=f"sqlite:///{root}/catalog.db", warehouse=f"file://{root}/wh")
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
