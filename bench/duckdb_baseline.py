#!/usr/bin/env python3
"""DuckDB's own time for a project's SQL, without any tool around it.

Reads the manifest and run results that `weir run` wrote for a project and replays each model's
compiled SQL, in the order it ran, as one `create or replace table|view ... as (...)` statement in
a fresh DuckDB file through DuckDB's Python API. The total is the floor a tool's per-model
overhead is measured against.

    duckdb_baseline.py PROJECT_DIR DB_FILE   ->  prints "<models> <seconds>"
"""

import json
import os
import sys
import time

import duckdb


def main() -> None:
    project, db_file = sys.argv[1], sys.argv[2]
    target = os.path.join(project, "target")
    with open(os.path.join(target, "manifest.json")) as f:
        nodes = json.load(f)["nodes"]
    with open(os.path.join(target, "run_results.json")) as f:
        results = [r for r in json.load(f)["results"] if r["unique_id"].startswith("model.")]
    # The order the models ran in (one thread): by the start of each one's compile step.
    results.sort(key=lambda r: r["timing"][0]["started_at"] if r["timing"] else "")
    order = [r["unique_id"] for r in results]
    statements = []
    for uid in order:
        n = nodes[uid]
        with open(os.path.join(target, "compiled", n["package_name"], n["original_file_path"])) as f:
            sql = f.read()
        kind = "view" if n["config"]["materialized"] == "view" else "table"
        schema = n["schema"]
        statements.append((schema, f'create or replace {kind} "{schema}"."{n["alias"]}" as (\n{sql}\n)'))
    if os.path.exists(db_file):
        os.remove(db_file)
    con = duckdb.connect(db_file)
    start = time.perf_counter()
    for schema in sorted({s for s, _ in statements}):
        con.execute(f'create schema if not exists "{schema}"')
    for _, sql in statements:
        con.execute(sql)
    elapsed = time.perf_counter() - start
    con.close()
    print(len(statements), f"{elapsed:.3f}")


if __name__ == "__main__":
    main()
