#!/usr/bin/env bash
# Incremental processing at scale: a generated orders table (100M rows by default) and a daily
# microbatch mart over it.
#
#   bash bench/backfill.sh                  # 100,000,000 rows
#   BENCH_ROWS=10000000 bash bench/backfill.sh
#
# It measures (1) a 366-day `weir backfill` of 2024 on two threads: wall time, CPU use (over
# 100% means both cores worked) and the progress it reports; (2) adding one new day
# (2025-01-01) to the mart, against DuckDB's own time for that day's SQL, run by
# bench/backfill_baseline.py through DuckDB's Python API on the same file. Times are the median
# of $BENCH_REPEAT runs after a warm-up run.
REPEAT="${BENCH_REPEAT:-5}"
source "$(dirname "$0")/common.sh"
reference_python
dir="$BENCH_DIR/backfill"

rm -rf "$dir"
mkdir -p "$dir/models"
duckdb_project "$dir" bench_backfill
# 367 days of orders (2024 is a leap year, plus 2025-01-01), in arrival order.
cat > "$dir/models/orders.sql" <<'SQL'
{{ config(materialized='table', event_time='created_at') }}
select
    i as order_id,
    timestamp '2024-01-01' + to_seconds(i * 31708800 // {{ var('rows') }}) as created_at,
    (i * 7919) % 1000000 as customer_id,
    ['US', 'DE', 'FR', 'GB', 'JP', 'BR', 'IN'][i % 7 + 1] as country_code,
    case when i % 10 < 8 then 'completed' when i % 10 = 8 then 'cancelled' else 'returned' end as status,
    cast((i * 37) % 100000 as decimal(12, 2)) / 100 as total_amount
from range({{ var('rows') }}) t(i)
SQL
cat > "$dir/models/daily_revenue.sql" <<'SQL'
{{ config(materialized='incremental', incremental_strategy='microbatch', event_time='sale_date',
          batch_size='day', begin='2024-01-01') }}
select
    date_trunc('day', created_at) as sale_date,
    country_code,
    count(*) as order_count,
    sum(total_amount) as revenue
from {{ ref('orders') }}
where status = 'completed'
group by 1, 2
SQL

vars="{rows: $ROWS}"
cd "$dir"
t0=$(date +%s%N)
"$WEIR" run -s orders --vars "$vars" >/dev/null
t1=$(date +%s%N)
echo "## Microbatch backfill ($ROWS orders)"
echo
echo "generated orders: $(python3 -c "print(f'{($t1 - $t0) / 1e9:.1f}')") s"
echo

# (1) The whole of 2024, 366 daily batches, on two threads.
/usr/bin/time -f "%e %U %S %M" -o time.txt "$WEIR" backfill daily_revenue --start 2024-01-01 --end 2025-01-01 --threads 2 --vars "$vars" > backfill.log 2>&1
read -r wall user sys rss < time.txt
last=$(grep -o 'batch 366/366.*' backfill.log | tail -1)
cpu=$(python3 -c "print(f'{($user + $sys) / $wall * 100:.0f}')")
echo "| backfill | batches | wall (s) | batches/s | CPU (% of one core) | peak RSS (MB) |"
echo "|---|---:|---:|---:|---:|---:|"
echo "| 2024, daily, --threads 2 | 366 | $wall | $(python3 -c "print(f'{366 / $wall:.1f}')") | $cpu | $(( rss / 1024 )) |"
echo
echo "last progress line: \`$last\`"
echo

# (2) One new day. Restated each time, so every timed run does the same work.
one_day() {
  local t0 t1
  t0=$(date +%s%N)
  "$WEIR" backfill daily_revenue --start 2025-01-01 --end 2025-01-02 --restate --vars "$vars" >/dev/null 2>&1
  t1=$(date +%s%N)
  seconds "$t0" "$t1"
}
one_day >/dev/null
w_day=$(for _ in $(seq "$REPEAT"); do one_day; done | median)
read -r b_open b_sql < <("$PY" "$WEIR_ROOT/bench/backfill_baseline.py" "$dir" "$REPEAT")
echo "| adding 2025-01-01 | wall (s) |"
echo "|---|---:|"
echo "| DuckDB's own time for the day's SQL (statements only) | $b_sql |"
echo "| DuckDB's own time, opening the database included | $b_open |"
echo "| weir backfill (the whole process) | $w_day |"
echo
echo "weir / DuckDB (opening included): $(python3 -c "print(f'{$w_day / $b_open:.2f}x')")"
