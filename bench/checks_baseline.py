#!/usr/bin/env python3
"""DuckDB's own time for one full scan of the checks benchmark's orders table.

The scan reads every column once (count, min and max of each), through DuckDB's Python API on
the benchmark's file. Each timed run is a fresh process, as each `weir check` and `soda scan`
run is: the time is taken inside it from just before connecting to the fetched result, so the
interpreter's start and DuckDB's import are left out. Prints two medians of N runs in seconds:
fresh processes, then runs repeated inside one warm process (which reuses its heap and skips
the page faults a new process pays).

    checks_baseline.py DATABASE N
"""

import statistics
import subprocess
import sys
import time

import duckdb

RUN = """
import sys, time, duckdb
sql = sys.stdin.read()
start = time.perf_counter()
con = duckdb.connect(sys.argv[1], read_only=True)
con.execute("set enable_progress_bar = false")
con.execute(sql).fetchall()
con.close()
print(time.perf_counter() - start)
"""


def main() -> None:
    path, n = sys.argv[1], int(sys.argv[2])
    con = duckdb.connect(path, read_only=True)
    columns = [r[0] for r in con.execute("select column_name from information_schema.columns where table_name = 'orders'").fetchall()]
    con.close()
    aggregates = ", ".join(f"count({c}), min({c}), max({c})" for c in columns)
    sql = f"select {aggregates} from main.orders"
    fresh = []
    for _ in range(n + 1):
        out = subprocess.run([sys.executable, "-c", RUN, path], input=sql, capture_output=True, text=True, check=True)
        fresh.append(float(out.stdout.split()[-1]))
    warm = []
    for _ in range(n + 1):
        start = time.perf_counter()
        con = duckdb.connect(path, read_only=True)
        con.execute(sql).fetchall()
        con.close()
        warm.append(time.perf_counter() - start)
    print(f"{statistics.median(fresh[1:]):.3f} {statistics.median(warm[1:]):.3f}")


if __name__ == "__main__":
    main()
