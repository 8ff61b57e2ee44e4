#!/usr/bin/env python3
"""DuckDB's own time for one full scan of the checks benchmark's orders table.

The scan reads every column once (count, min and max of each), through DuckDB's Python API on
the benchmark's file. Prints the median of N runs in seconds, connecting included.

    checks_baseline.py DATABASE N
"""

import statistics
import sys
import time

import duckdb


def main() -> None:
    path, n = sys.argv[1], int(sys.argv[2])
    con = duckdb.connect(path, read_only=True)
    columns = [r[0] for r in con.execute("select column_name from information_schema.columns where table_name = 'orders'").fetchall()]
    con.close()
    aggregates = ", ".join(f"count({c}), min({c}), max({c})" for c in columns)
    sql = f"select {aggregates} from main.orders"
    times = []
    for _ in range(n + 1):
        start = time.perf_counter()
        con = duckdb.connect(path, read_only=True)
        con.execute(sql).fetchall()
        con.close()
        times.append(time.perf_counter() - start)
    print(f"{statistics.median(times[1:]):.3f}")


if __name__ == "__main__":
    main()
