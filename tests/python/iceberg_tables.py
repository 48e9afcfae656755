"""Reads back the Iceberg tables the engine wrote, with pyiceberg, as a data engineer would.

    python3 iceberg_tables.py [--s3 ENDPOINT] [--sql URI NAME | --rest URI] TABLE rows OUT.parquet [COLUMN OP VALUE]
    python3 iceberg_tables.py [--s3 ENDPOINT] [--sql URI NAME | --rest URI] TABLE describe
    python3 iceberg_tables.py [--s3 ENDPOINT] [--sql URI NAME | --rest URI] TABLE plan COLUMN OP VALUE

TABLE is a table's directory (`/tmp/wh/db/t`, `s3://lake/wh/db/t`: a filesystem catalog's
table, opened with `StaticTable` through its `version-hint.text`) or, with `--sql`, a
`namespace.table` of pyiceberg's `SqlCatalog` named NAME in the PostgreSQL database URI, or
with `--rest`, of the REST catalog at URI (pyiceberg's `RestCatalog` client).

`rows` writes every row of the current snapshot (those a scan with the filter
`COLUMN OP VALUE` returns, when given) to OUT.parquet (pyarrow), for the test to compare with
DataFusion's answer. `describe` prints one JSON object: the snapshots (id, parent,
summary), the partition spec, and every data file of the current snapshot with its partition,
row count and column statistics (bounds decoded by the column's type). `plan` prints how many data files a scan with the filter
`COLUMN OP VALUE` plans (partition and statistics pruning).
"""
import argparse
import json

import pyarrow.parquet as pq
from pyiceberg.expressions import EqualTo, GreaterThan, GreaterThanOrEqual, LessThan
from pyiceberg.table import StaticTable


def s3_props(endpoint):
    if not endpoint:
        return {}
    return {"s3.endpoint": endpoint, "s3.access-key-id": "testing", "s3.secret-access-key": "testing", "s3.region": "us-east-1"}


def load(args):
    props = s3_props(args.s3)
    if args.rest:
        from pyiceberg.catalog.rest import RestCatalog

        return RestCatalog("rest", uri=args.rest, **props).load_table(args.table)
    if args.sql:
        from pyiceberg.catalog.sql import SqlCatalog

        uri, name = args.sql
        uri = uri.replace("postgresql://", "postgresql+psycopg://", 1)
        catalog = SqlCatalog(name, uri=uri, **props)
        return catalog.load_table(args.table)
    return StaticTable.from_metadata(args.table, properties=props)


def plain(value):
    if isinstance(value, bytes):
        return value.hex()
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def row_filter(column, op, value):
    try:
        value = int(value)
    except ValueError:
        pass
    return {"=": EqualTo, ">": GreaterThan, ">=": GreaterThanOrEqual, "<": LessThan}[op](column, value)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--s3")
    p.add_argument("--sql", nargs=2, metavar=("URI", "NAME"))
    p.add_argument("--rest")
    p.add_argument("table")
    p.add_argument("cmd", choices=["rows", "describe", "plan"])
    p.add_argument("more", nargs="*")
    args = p.parse_args()
    table = load(args)
    if args.cmd == "rows":
        scan = table.scan(row_filter=row_filter(*args.more[1:4])) if len(args.more) == 4 else table.scan()
        pq.write_table(scan.to_arrow(), args.more[0])
    elif args.cmd == "describe":
        from pyiceberg.conversions import from_bytes

        md = table.metadata
        schema = table.schema()

        def bound(field_id, raw):
            return plain(from_bytes(schema.find_field(field_id).field_type, raw))

        files = []
        for task in table.scan().plan_files():
            f = task.file
            files.append(
                {
                    "path": f.file_path,
                    "partition": {k: plain(v) for k, v in f.partition.__dict__.items() if not k.startswith("_")} if f.partition else {},
                    "partition_values": [plain(v) for v in f.partition] if f.partition else [],
                    "record_count": f.record_count,
                    "file_size": f.file_size_in_bytes,
                    "null_counts": {str(k): v for k, v in (f.null_value_counts or {}).items()},
                    "value_counts": {str(k): v for k, v in (f.value_counts or {}).items()},
                    "lower": {str(k): bound(k, v) for k, v in (f.lower_bounds or {}).items()},
                    "upper": {str(k): bound(k, v) for k, v in (f.upper_bounds or {}).items()},
                }
            )
        out = {
            "format_version": md.format_version,
            "location": md.location,
            "schema": [{"id": f.field_id, "name": f.name, "type": str(f.field_type)} for f in table.schema().fields],
            "spec": [{"name": f.name, "transform": str(f.transform), "source": f.source_id} for f in table.spec().fields],
            "snapshots": [
                {"id": s.snapshot_id, "parent": s.parent_snapshot_id, "summary": dict(s.summary.additional_properties) | {"operation": str(s.summary.operation)}}
                for s in md.snapshots
            ],
            "files": files,
        }
        print(json.dumps(out, default=str))
    elif args.cmd == "plan":
        print(len(list(table.scan(row_filter=row_filter(*args.more)).plan_files())))


if __name__ == "__main__":
    main()
