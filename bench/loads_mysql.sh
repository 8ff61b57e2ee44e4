#!/usr/bin/env bash
# A MySQL (MariaDB) table into DuckDB at scale.
#
#   bash bench/loads_mysql.sh                          # 10,000,000 rows
#   BENCH_LOAD_ROWS=1000000 bash bench/loads_mysql.sh
#
# A generated orders table (the shared MariaDB, database weir_bench_load; the same six
# columns as bench/loads.sh's PostgreSQL table) into a fresh DuckDB file, replacing the table,
# the whole process timed: `weir load` against dlt (`sql_table`, pyarrow backend with PyMySQL, and connectorx:
# bench/loads_dlt.py) and Sling, installed as bench/loads_common.sh says. Times are medians of
# $BENCH_REPEAT runs; peak RSS from /usr/bin/time.
REPEAT="${BENCH_REPEAT:-3}"
source "$(dirname "$0")/common.sh"
reference_python
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

duckdb_project . bench_loads_mysql
cat > loads/bench.yml <<YML
loads:
  - name: orders
    source: {kind: mysql, url: '$MY_URL', table: orders}
    write_disposition: replace
YML

compare_loads "MySQL (MariaDB) -> DuckDB" "$MY_URL" "$db" "$MY_URL" ", PyMySQL"
mariadb -h 127.0.0.1 -u root -e "drop database $db"
