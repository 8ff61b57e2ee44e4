#!/usr/bin/env bash
# Extract and load at scale.
#
#   bash bench/loads.sh                          # a 10,000,000-row table, a ~1 GB CSV
#   BENCH_LOAD_ROWS=1000000 BENCH_CSV_ROWS=1000000 bash bench/loads.sh
#
# (1) A generated PostgreSQL table (the shared server, schema weir_bench_load) into a DuckDB
#     file: `weir load` against dlt (PyPI, `sql_table` with its pyarrow and connectorx backends:
#     bench/loads_dlt.py), both replacing the table, the whole process timed, a fresh file
#     each run, and against Sling (both installed as bench/loads_common.sh says).
# (2) A ~1 GB CSV into a DuckDB file: `weir load` (the whole process) against DuckDB's own
#     `create table ... as select * from read_csv(...)` (timed inside Python, so without the
#     interpreter's start-up).
# (3) Memory: peak RSS of `weir load` for a tenth of the table and for all of it.
# (4) The CSV into PostgreSQL: `weir load` (binary COPY) against PostgreSQL's own COPY.
# Times are medians of $BENCH_REPEAT runs; peak RSS from /usr/bin/time.
REPEAT="${BENCH_REPEAT:-3}"
source "$(dirname "$0")/common.sh"
reference_python
LOAD_ROWS="${BENCH_LOAD_ROWS:-10000000}"
CSV_ROWS="${BENCH_CSV_ROWS:-18000000}"   # 1.03 GiB
source "$(dirname "$0")/loads_common.sh"
PG_URL="postgresql://postgres@127.0.0.1:5432/test"
schema=weir_bench_load
dir="$BENCH_DIR/loads"
rm -rf "$dir"
mkdir -p "$dir/loads"
cd "$dir"
sling_in "$dir"

t0=$(date +%s%N)
psql "$PG_URL" -q -v ON_ERROR_STOP=1 <<SQL
drop schema if exists $schema cascade;
create schema $schema;
create table $schema.orders as
select g as order_id,
       ((g * 7919) % 1000000)::int as customer_id,
       (array['completed', 'cancelled', 'returned'])[g % 3 + 1] as status,
       (((g * 37) % 100000) / 100.0)::numeric(12, 2) as amount,
       timestamp '2024-01-01' + (g % 31536000) * interval '1 second' as created_at,
       case when g % 13 = 0 then null else 'note ' || (g % 1000) end as note
from generate_series(1::bigint, $LOAD_ROWS) g;
create table $schema.orders_tenth as select * from $schema.orders where order_id <= $LOAD_ROWS / 10;
analyze $schema.orders;
SQL
t1=$(date +%s%N)
echo "## Extract and load: $LOAD_ROWS PostgreSQL rows, $CSV_ROWS CSV rows"
echo
echo "generated the PostgreSQL table: $(seconds "$t0" "$t1") s"

duckdb_project . bench_loads
cat >> profiles.yml <<YML
    pg:
      type: postgres
      host: 127.0.0.1
      port: 5432
      user: postgres
      dbname: test
      schema: $schema
      threads: 2
YML
cat > loads/bench.yml <<YML
loads:
  - name: orders
    source: {kind: postgres, url: '$PG_URL', table: $schema.orders}
    write_disposition: replace
  - name: orders_tenth
    source: {kind: postgres, url: '$PG_URL', table: $schema.orders_tenth}
    write_disposition: replace
  - name: big_csv
    source: {kind: csv, path: big.csv}
    write_disposition: replace
  - name: big_csv_pg
    source: {kind: csv, path: big.csv}
    destination: $schema.big_csv
    write_disposition: replace
YML

compare_loads "PostgreSQL -> DuckDB" "$PG_URL" "$schema" "$PG_URL?sslmode=disable" ""
tenth_runs=$(for _ in $(seq "$REPEAT"); do fresh; timed "$WEIR" load orders_tenth; done)
t_rss=$(echo "$tenth_runs" | max_of 2)
echo
echo "memory: weir load peak RSS $t_rss MB for $((LOAD_ROWS / 10)) rows, $w_rss MB for $LOAD_ROWS rows"

"$PY" - "$CSV_ROWS" <<'PY'
import duckdb, sys
c = duckdb.connect()
c.execute("set enable_progress_bar = false")
c.execute(f"""copy (
  select i as order_id, (i * 7919) % 1000000 as customer_id,
         ['completed', 'cancelled', 'returned'][i % 3 + 1] as status,
         cast((i * 37) % 100000 as decimal(12, 2)) / 100 as amount,
         timestamp '2024-01-01' + to_seconds(i % 31536000) as created_at,
         case when i % 13 = 0 then null else 'note ' || (i % 1000) end as note
  from range({int(sys.argv[1])}) t(i)) to 'big.csv' (header true)""")
PY
size_mb=$(( $(stat -c %s big.csv) / 1024 / 1024 ))
# DuckDB's own time, without and with the checkpoint that makes the table durable when the
# file is closed (what a `weir load` process pays before it exits).
base_runs=$(for _ in $(seq "$REPEAT"); do fresh; "$PY" - <<'PY'
import duckdb, time
c = duckdb.connect("base.duckdb")
c.execute("set enable_progress_bar = false")
t = time.perf_counter()
c.execute("create table t as select * from read_csv('big.csv')")
created = time.perf_counter() - t
c.close()
print(f"{created:.3f} {time.perf_counter() - t:.3f}")
PY
done)
b=$(echo "$base_runs" | median_of 1)
bc=$(echo "$base_runs" | median_of 2)
csv_runs=$(for _ in $(seq "$REPEAT"); do fresh; timed "$WEIR" load big_csv; done)
c=$(echo "$csv_runs" | median_of 1); c_rss=$(echo "$csv_runs" | max_of 2)
csv_rows=$(count bench.duckdb "select count(*) from raw.big_csv")
duckdb_version=$("$PY" -c "import duckdb; print(duckdb.__version__)")
echo
echo "| CSV ($size_mb MB, $csv_rows rows) -> DuckDB | wall (s) | vs read_csv | peak RSS (MB) |"
echo "|---|---:|---:|---:|"
echo "| DuckDB $duckdb_version: create table as select * from read_csv(...) | $b | 1.00x | |"
echo "| DuckDB $duckdb_version: the same, then close (checkpoint) | $bc | $(ratio "$bc" "$b") | |"
echo "| weir load (whole process) | $c | $(ratio "$c" "$b") ($(ratio "$c" "$bc") of the closed) | $c_rss |"

# (4) The same CSV into PostgreSQL: `weir load` (DuckDB reads the file, typed Arrow batches go
# over binary COPY) against PostgreSQL's own `COPY ... FROM` of the file into a table of the
# same types, sent by psql's `\copy`.
pg_base_runs=$(for _ in $(seq "$REPEAT"); do
  psql "$PG_URL" -q -c "drop table if exists $schema.base_csv; create table $schema.base_csv (order_id bigint, customer_id bigint, status text, amount double precision, created_at timestamp, note text)"
  t0=$(date +%s%N)
  psql "$PG_URL" -q -c "\\copy $schema.base_csv from 'big.csv' with (format csv, header true)"
  t1=$(date +%s%N)
  seconds "$t0" "$t1"
done)
pb=$(echo "$pg_base_runs" | median)
pg_runs=$(for _ in $(seq "$REPEAT"); do fresh; psql "$PG_URL" -q -c "drop table if exists $schema.big_csv"; timed "$WEIR" load big_csv_pg --target pg; done)
pw=$(echo "$pg_runs" | median_of 1); pw_rss=$(echo "$pg_runs" | max_of 2)
pg_rows=$(psql "$PG_URL" -Atc "select count(*) from $schema.big_csv")
echo
echo "| CSV ($size_mb MB, $pg_rows rows) -> PostgreSQL | wall (s) | vs COPY | peak RSS (MB) |"
echo "|---|---:|---:|---:|"
echo "| PostgreSQL: \\copy ... from the file (format csv) | $pb | 1.00x | |"
echo "| weir load (DuckDB reads, binary COPY writes) | $pw | $(ratio "$pw" "$pb") | $pw_rss |"
psql "$PG_URL" -q -c "drop schema $schema cascade"
