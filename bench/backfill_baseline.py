#!/usr/bin/env python3
"""DuckDB's own time to add one day to the backfill benchmark's mart, without Weir.

Replays, through DuckDB's Python API on the benchmark's database, what Weir runs for the batch
it last compiled (target/compiled/.../daily_revenue.sql, the 2025-01-01 batch): in one
transaction, the day's rows into a temporary table, the day deleted from the mart, the rows
inserted. Prints the median of N runs, "<seconds with connect> <seconds of the statements>".

    backfill_baseline.py PROJECT_DIR N
"""

import glob
import os
import statistics
import sys
import time

import duckdb


def main() -> None:
    project, n = sys.argv[1], int(sys.argv[2])
    [compiled] = glob.glob(os.path.join(project, "target/compiled/*/models/daily_revenue.sql"))
    with open(compiled) as f:
        sql = f.read()
    statements = [
        "begin",
        f"create temp table day_rows as ({sql})",
        "delete from main.daily_revenue where sale_date >= '2025-01-01' and sale_date < '2025-01-02'",
        "insert into main.daily_revenue select * from day_rows",
        "drop table day_rows",
        "commit",
    ]
    with_open, alone = [], []
    for _ in range(n + 1):
        t0 = time.perf_counter()
        con = duckdb.connect(os.path.join(project, "bench.duckdb"))
        t1 = time.perf_counter()
        for s in statements:
            con.execute(s)
        t2 = time.perf_counter()
        con.close()
        with_open.append(t2 - t0)
        alone.append(t2 - t1)
    # The first run warms the file cache, as the benchmark's warm-up run does for Weir.
    print(f"{statistics.median(with_open[1:]):.3f} {statistics.median(alone[1:]):.3f}")


if __name__ == "__main__":
    main()
