#!/usr/bin/env bash
# Data-quality checks at scale: 50 checks on a generated orders table (100M rows by default),
# against one full scan of that table in DuckDB and against Soda Core on the same checks.
#
#   bash bench/checks.sh                      # 100,000,000 rows
#   BENCH_ROWS=10000000 bash bench/checks.sh
#
# It measures (1) DuckDB's own time for one full scan of the table (a count, min and max of
# every column, through DuckDB's Python API, a fresh process per run as for the tools:
# bench/checks_baseline.py); (2) `weir check`, the
# whole process, and (3) `soda scan`, on two sets of 50 checks: bench/checks.yml, with costly
# kinds (an exact duplicate count, a regex, string lengths, two exact percentiles), and
# bench/checks_scan.yml, whose cost is the scan. SodaCL and Weir's check language agree on
# every line, so both tools read the same files. Times are medians of $BENCH_REPEAT runs after
# a warm-up run; peak RSS from /usr/bin/time.
REPEAT="${BENCH_REPEAT:-3}"
source "$(dirname "$0")/common.sh"
reference_python
SODA_VENV="${WEIR_SODA_VENV:-$HOME/.cache/weir/soda-venv}"
dir="$BENCH_DIR/checks"
if [ ! -x "$SODA_VENV/bin/soda" ]; then
  python3 -m venv "$SODA_VENV"
  "$SODA_VENV/bin/pip" install --quiet "soda-core-duckdb==3.5.6"
fi

rm -rf "$dir"
mkdir -p "$dir/models" "$dir/checks"
duckdb_project "$dir" bench_checks
cat > "$dir/models/orders.sql" <<'SQL'
{{ config(materialized='table') }}
select
    i as order_id,
    (i * 7919) % 1000000 as customer_id,
    timestamp '2024-01-01' + to_seconds(i * 31708800 // {{ var('rows') }}) as created_at,
    case when i % 10 < 8 then 'completed' when i % 10 = 8 then 'cancelled' else 'returned' end as status,
    ['US', 'DE', 'FR', 'GB', 'JP', 'BR', 'IN'][i % 7 + 1] as country_code,
    cast((i * 37) % 100000 as decimal(12, 2)) / 100 as total_amount,
    cast(i % 9 + 1 as integer) as quantity,
    case when i % 13 = 0 then null else 'user' || (i % 100000) || '@example.com' end as email,
    ((i * 11) % 50) / 100.0 as discount
from range({{ var('rows') }}) t(i)
SQL

vars="{rows: $ROWS}"
cd "$dir"
t0=$(date +%s%N)
"$WEIR" run --vars "$vars" >/dev/null
t1=$(date +%s%N)
echo "## 50 checks on $ROWS orders"
echo
echo "generated orders: $(seconds "$t0" "$t1") s"
echo

# (1) One full scan, DuckDB alone.
read -r scan warm_scan < <("$PY" "$WEIR_ROOT/bench/checks_baseline.py" bench.duckdb "$REPEAT")

# Soda Core's DuckDB (pinned below 1.1) cannot read a file written by DuckDB 2.0: the table
# goes through Parquet into a file of its own.
"$PY" -c "import duckdb; c = duckdb.connect('bench.duckdb'); c.execute('set enable_progress_bar=false'); c.execute(\"copy main.orders to 'orders.parquet' (format parquet)\")"
"$SODA_VENV/bin/python" -c "import duckdb; c = duckdb.connect('soda.duckdb'); c.execute('set enable_progress_bar=false'); c.execute(\"create table orders as select * from 'orders.parquet'\")"
rm orders.parquet
cat > soda.yml <<'YML'
data_source bench:
  type: duckdb
  path: soda.duckdb
YML
soda_duckdb=$("$SODA_VENV/bin/python" -c "import duckdb; print(duckdb.__version__)")

weir_check() {
  local t0 t1
  t0=$(date +%s%N)
  "$WEIR" check --vars "$vars" > check.log 2>&1 || true
  t1=$(date +%s%N)
  seconds "$t0" "$t1"
}
soda_scan() {
  local t0 t1
  t0=$(date +%s%N)
  "$SODA_VENV/bin/soda" scan -d bench -c soda.yml checks/orders.yml > soda.log 2>&1 || true
  t1=$(date +%s%N)
  seconds "$t0" "$t1"
}
ratio() { python3 -c "print(f'{$1 / $2:.2f}x')"; }

echo "| run | wall (s) | vs one scan | peak RSS (MB) |"
echo "|---|---:|---:|---:|"
echo "| DuckDB: one full scan (count, min, max of every column), fresh process | $scan | 1.00x | |"
echo "| DuckDB: the same, repeated in one warm process | $warm_scan | $(ratio "$warm_scan" "$scan") | |"
notes=""
for set in checks checks_scan; do
  cp "$WEIR_ROOT/bench/$set.yml" checks/orders.yml
  weir_check >/dev/null
  /usr/bin/time -f "%M" -o rss.txt "$WEIR" check --vars "$vars" >/dev/null 2>&1 || true
  w_rss=$(( $(cat rss.txt) / 1024 ))
  w=$(for _ in $(seq "$REPEAT"); do weir_check; done | median)
  queries=$(grep -o '[0-9]* queries' check.log | head -1)
  summary=$(grep -o 'PASS=.*' check.log | tail -1)
  soda_scan >/dev/null
  /usr/bin/time -f "%M" -o rss.txt "$SODA_VENV/bin/soda" scan -d bench -c soda.yml checks/orders.yml >/dev/null 2>&1 || true
  s_rss=$(( $(cat rss.txt) / 1024 ))
  s=$(for _ in $(seq "$REPEAT"); do soda_scan; done | median)
  soda_summary=$(grep -E -o '[0-9]+/[0-9]+ checks? (PASSED|FAILED|WARNED)|All is good|Oops!.*' soda.log | head -2 | tr '\n' ' ')
  echo "| weir check, bench/$set.yml ($queries) | $w | $(ratio "$w" "$scan") | $w_rss |"
  echo "| soda scan, bench/$set.yml (DuckDB $soda_duckdb) | $s | $(ratio "$s" "$scan") | $s_rss |"
  notes="$notes
bench/$set.yml: weir $summary; soda: $soda_summary; weir / soda: $(ratio "$w" "$s")"
done
echo "$notes"
