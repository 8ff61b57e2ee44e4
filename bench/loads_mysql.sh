#!/usr/bin/env bash
# A MySQL (MariaDB) table into DuckDB at scale.
#
#   bash bench/loads_mysql.sh                          # 10,000,000 rows
#   BENCH_LOAD_ROWS=1000000 bash bench/loads_mysql.sh
#
# A generated orders table (the shared MariaDB, database weir_bench_load; the same six
# columns as bench/loads.sh's PostgreSQL table) into a fresh DuckDB file, replacing the table,
# the whole process timed: `weir load` against dlt (`sql_table`, pyarrow backend, PyMySQL:
# bench/loads_dlt.py) and Sling, installed as bench/loads_common.sh says. Times are medians of
# $BENCH_REPEAT runs; peak RSS from /usr/bin/time.
REPEAT="${BENCH_REPEAT:-3}"
source "$(dirname "$0")/common.sh"
LOAD_ROWS="${BENCH_LOAD_ROWS:-10000000}"
source "$(dirname "$0")/loads_common.sh"
db=weir_bench_load
MY_URL="mysql://root@127.0.0.1:3306/$db"
dir="$BENCH_DIR/loads_mysql"
rm -rf "$dir"
mkdir -p "$dir/loads"
cd "$dir"
sling_in "$dir"

t0=$(date +%s%N)
mariadb -h 127.0.0.1 -u root <<SQL
drop database if exists $db;
create database $db;
use $db;
create table orders (order_id bigint primary key, customer_id int, status varchar(16), amount decimal(12, 2),
                     created_at datetime, note varchar(32));
insert into orders
select seq, (seq * 7919) % 1000000, elt(seq % 3 + 1, 'completed', 'cancelled', 'returned'),
       ((seq * 37) % 100000) / 100, timestamp '2024-01-01 00:00:00' + interval (seq % 31536000) second,
       if(seq % 13 = 0, null, concat('note ', seq % 1000))
from seq_1_to_$LOAD_ROWS;
SQL
t1=$(date +%s%N)
echo "## Extract and load: $LOAD_ROWS MySQL (MariaDB) rows"
echo
echo "generated the MariaDB table: $(seconds "$t0" "$t1") s"

cat > dbt_project.yml <<'YML'
name: bench_loads_mysql
profile: bench_loads_mysql
YML
cat > profiles.yml <<'YML'
bench_loads_mysql:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: bench.duckdb
      threads: 2
YML
cat > loads/bench.yml <<YML
loads:
  - name: orders
    source: {kind: mysql, url: '$MY_URL', table: orders}
    write_disposition: replace
YML

weir_runs=$(for _ in $(seq "$REPEAT"); do fresh; timed "$WEIR" load orders; done)
weir_rows=$(count bench.duckdb "select count(*) from raw.orders")
w=$(echo "$weir_runs" | median_of 1); w_rss=$(echo "$weir_runs" | max_of 2)
dlt_runs=$(for _ in $(seq "$REPEAT"); do fresh; timed "$VENV/bin/python" "$WEIR_ROOT/bench/loads_dlt.py" "$MY_URL" "$db" orders dlt.duckdb dlt_work; done)
dlt_rows=$(count dlt.duckdb "select count(*) from raw.orders")
d=$(echo "$dlt_runs" | median_of 1); d_rss=$(echo "$dlt_runs" | max_of 2)
sling+=(SRC="$MY_URL" DST="duckdb://$dir/sling.duckdb" "$SLING")
sling_runs=$(for _ in $(seq "$REPEAT"); do fresh; timed "${sling[@]}" run --src-conn SRC --src-stream "$db.orders" --tgt-conn DST --tgt-object raw.orders --mode full-refresh; done)
sling_rows=$(count sling.duckdb "select count(*) from raw.orders")
s_time=$(echo "$sling_runs" | median_of 1); s_rss=$(echo "$sling_runs" | max_of 2)
sling_version=$("${sling[@]}" --version | sed -n 's/^Version: //p')
echo
echo "| MySQL (MariaDB) -> DuckDB | rows | wall (s) | rows/s | vs weir | peak RSS (MB) |"
echo "|---|---:|---:|---:|---:|---:|"
echo "| weir load | $weir_rows | $w | $(rate "$weir_rows" "$w") | 1.00x | $w_rss |"
echo "| dlt $dlt_version (sql_table, pyarrow backend, PyMySQL) | $dlt_rows | $d | $(rate "$dlt_rows" "$d") | $(ratio "$d" "$w") | $d_rss |"
echo "| Sling $sling_version (DuckDB CLI $SLING_DUCKDB) | $sling_rows | $s_time | $(rate "$sling_rows" "$s_time") | $(ratio "$s_time" "$w") | $s_rss |"
mariadb -h 127.0.0.1 -u root -e "drop database $db"
