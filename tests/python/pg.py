#!/usr/bin/env python3
"""PostgreSQL for the end-to-end tests, through psycopg (the real client library).

    pg.py URL exec "SQL; SQL"      run statements (autocommit)
    pg.py URL rows "SELECT …"      the rows as JSON lines: numerics as numbers, timestamps in ISO 8601
    pg.py URL kill-connections     ends every other session of the database (a server-side disconnect)
    pg.py URL churn SECS "SQL"     runs the statement again and again (autocommit) for SECS seconds
"""
import datetime
import decimal
import json
import sys
import time

import psycopg


def value(v):
    if isinstance(v, decimal.Decimal):
        return float(v) if v != v.to_integral_value() else int(v)
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, list):
        return [value(x) for x in v]
    return v


def main():
    url, cmd = sys.argv[1], sys.argv[2]
    with psycopg.connect(url, autocommit=True) as conn:
        if cmd == "exec":
            conn.execute(sys.argv[3])
        elif cmd == "rows":
            cur = conn.execute(sys.argv[3])
            names = [d.name for d in cur.description]
            for row in cur:
                print(json.dumps({n: value(v) for n, v in zip(names, row)}))
        elif cmd == "kill-connections":
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        elif cmd == "churn":
            until = time.monotonic() + float(sys.argv[3])
            while time.monotonic() < until:
                conn.execute(sys.argv[4])
        else:
            sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
