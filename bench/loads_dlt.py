#!/usr/bin/env python3
"""The reference for bench/loads.sh and bench/loads_mysql.sh: one PostgreSQL or MySQL table
into a DuckDB file with dlt.

    loads_dlt.py URL SCHEMA TABLE DUCKDB_FILE WORK_DIR [pyarrow|connectorx]

dlt's `sql_table` source with one of its two fast backends: `pyarrow` (SQLAlchemy rows put
into Arrow batches of 100,000; the default here) or `connectorx`, which dlt's docs recommend
for speed (ConnectorX reads the table into Arrow itself, over the binary protocol), written with
`write_disposition="replace"`, like the Weir load it is compared with. Prints the rows loaded.
"""

import sys

import dlt
from dlt.sources.sql_database import sql_table


def main() -> None:
    url, schema, table, duckdb_file, work = sys.argv[1:6]
    backend = sys.argv[6] if len(sys.argv) > 6 else "pyarrow"
    pipeline = dlt.pipeline(
        pipeline_name="bench_load",
        destination=dlt.destinations.duckdb(duckdb_file),
        dataset_name="raw",
        pipelines_dir=work,
    )
    # SQLAlchemy 2.1 reads postgresql:// as psycopg 3; the venv has psycopg2, as dlt documents,
    # and PyMySQL for MySQL.
    engine_url = url.replace("postgresql://", "postgresql+psycopg2://", 1).replace("mysql://", "mysql+pymysql://", 1)
    # ConnectorX takes the plain URL (its own drivers), the other backends SQLAlchemy's.
    kwargs = {"backend_kwargs": {"conn": url}} if backend == "connectorx" else {}
    source = sql_table(credentials=engine_url, schema=schema, table=table, backend=backend, chunk_size=100_000, **kwargs)
    pipeline.run(source, write_disposition="replace")
    rows = pipeline.last_trace.last_normalize_info.row_counts.get(table, 0)
    print(rows)


if __name__ == "__main__":
    main()
