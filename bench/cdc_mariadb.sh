#!/usr/bin/env bash
# Change data capture from MariaDB's binlog into DuckDB mirrors. Anyone can run it:
#
#   bash bench/cdc_mariadb.sh                                                # 10M rows
#   BENCH_CDC_ROWS=1000000 BENCH_CDC_SECONDS=10 bash bench/cdc_mariadb.sh    # smaller, shorter
#
# A private MariaDB (mariadb-install-db + mariadbd on a free loopback port, row binlog with
# full images and metadata, no fsync of the binlog or the redo log) holds `accounts` (id
# bigint primary key, customer, balance decimal(12,2), status, note, updated_at datetime(6),
# in UTC) with BENCH_CDC_ROWS rows; a project mirrors it with a `mode: cdc` load into a
# DuckDB file.
#
# 1. Snapshot: `weir load bench` on a new mirror (a consistent snapshot copied in), beside a
#    plain `weir load` of the same table (the loads' rate on the same rows).
# 2. Throughput: with no follower running, two `mariadb` clients run BENCH_CDC_TRANSACTIONS
#    transactions, each updating 60 rows, deleting 20 and inserting 20; then `weir load bench`
#    catches the mirror up. Changes are the row changes the server counted (Handler_write +
#    Handler_update + Handler_delete); the rate is changes over the catch-up's wall time.
#    The mirror is then compared with the source (count, sum of balance).
# 3. Latency: `weir cdc run bench --batch-wait-ms 200` follows while one client updates a
#    range of 100 rows, then sleeps 20 ms, 50 times per BENCH_CDC_SECONDS (the rate printed
#    is those changes over the time they took); each row's latency is its mirror `_weir_loaded_at`
#    minus the `updated_at` its statement wrote (UTC_TIMESTAMP(6)).
REPEAT=1
source "$(dirname "$0")/common.sh"
ROWS="${BENCH_CDC_ROWS:-10000000}"
TRANSACTIONS="${BENCH_CDC_TRANSACTIONS:-10000}"
SECONDS_LIVE="${BENCH_CDC_SECONDS:-30}"
dir="$BENCH_DIR/cdc_mariadb"
rm -rf "$dir"
mkdir -p "$dir/loads"
my=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mariadb-install-db --no-defaults --datadir="$my/data" --auth-root-authentication-method=normal --skip-test-db >/dev/null
/usr/sbin/mariadbd --no-defaults --datadir="$my/data" --socket="$my/sock" --pid-file="$my/pid" --user="$(id -un)" \
  --port="$port" --bind-address=127.0.0.1 --server-id=1 --log-bin="$my/data/bin" --binlog-format=ROW \
  --binlog-row-image=FULL --binlog-row-metadata=FULL --innodb-flush-log-at-trx-commit=0 --sync-binlog=0 \
  --innodb-buffer-pool-size=2G --max-binlog-size=1G >"$my/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$my"' EXIT
sql() { mariadb -h 127.0.0.1 -P "$port" -u root -N -B shop "$@"; }
for _ in $(seq 100); do mariadb -h 127.0.0.1 -P "$port" -u root -e "create database if not exists shop" 2>/dev/null && break; sleep 0.1; done

sql -e "create table accounts (id bigint primary key, customer int, balance decimal(12,2), status varchar(10), note varchar(40), updated_at datetime(6));
        insert into accounts select seq, seq % 1000, (seq % 10000) / 100.0, 'open', md5(seq), utc_timestamp(6) from seq_1_to_$ROWS;"
duckdb_project "$dir" cdc_bench
cat > "$dir/loads/bench.yml" <<YML
loads:
  - name: bench
    source: {kind: mariadb, url: "mysql://root@127.0.0.1:$port/shop", mode: cdc, tables: [accounts]}
YML

snapshot_and_plain_load mariadb "mysql://root@127.0.0.1:$port/shop" accounts

# Two writers, each its own half of the ids and of the new ids.
writer() {
  python3 - "$1" "$2" "$ROWS" <<'PY'
import random, sys
client, count, rows = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(client)
new = rows + 1 + client * 10_000_000
for _ in range(count):
    i = rng.randrange(1, rows - 100)
    print("begin;")
    print(f"update accounts set balance = balance + 1, status = 'active', updated_at = utc_timestamp(6) where id between {i} and {i + 59};")
    print(f"delete from accounts where id between {i + 60} and {i + 79};")
    print("insert into accounts values " + ", ".join(f"({new + k}, 1, 0, 'new', 'inserted', utc_timestamp(6))" for k in range(20)) + ";")
    new += 20
    print("commit;")
PY
}
changes() { sql -e "select sum(variable_value) from information_schema.global_status where variable_name in ('HANDLER_WRITE', 'HANDLER_UPDATE', 'HANDLER_DELETE')"; }
binlog_bytes() { sql -e "show binary logs" | awk '{ s += $2 } END { print s }'; }
before=$(binlog_bytes)
rows_before=$(changes)
writer 0 $((TRANSACTIONS / 2)) | sql &
other=$!
writer 1 $((TRANSACTIONS / 2)) | sql
wait "$other"
binlog=$(( $(binlog_bytes) - before ))
made=$(( $(changes) - rows_before ))
start=$(date +%s%N)
summary=$(cd "$dir" && "$WEIR" load bench 2>&1 | grep -o '[0-9]* upserted, [0-9]* deleted.*batch(es)' || true)
catch=$(seconds "$start" "$(date +%s%N)")
echo "| catch-up | $made changes ($(numfmt --to=iec "$binlog")B of binlog) | ${catch} s | $(python3 -c "print(f'{$made / $catch:,.0f}')") changes/s | $summary |"
src=$(sql -e "select count(*), sum(balance) from accounts" | tr '\t' ' ')
dst=$(mirror "select count(*), sum(balance) from raw.accounts")
[ "$src" = "$dst" ] && echo "mirror = source: $src" || echo "MIRROR DIFFERS: source $src, mirror $dst"

(cd "$dir" && exec "$WEIR" cdc run bench --batch-wait-ms 200 >"$dir/follow.log" 2>&1) &
follower=$!
sleep 2
live_start=$(sql -e "select utc_timestamp(6)")
python3 - "$ROWS" "$SECONDS_LIVE" <<'PY' | sql
import random, sys
rows, seconds = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(7)
for _ in range(seconds * 50):
    i = rng.randrange(1, rows - 100)
    print(f"update accounts set balance = balance + 1, updated_at = utc_timestamp(6) where id between {i} and {i + 99};")
    print("do sleep(0.02);")
PY
live_end=$(sql -e "select utc_timestamp(6)")
sleep 2
kill -TERM "$follower"; wait "$follower" || true
read -r n p50 p99 max < <(mirror "select count(*), round(quantile_cont(ms, 0.5)), round(quantile_cont(ms, 0.99)), round(max(ms))
  from (select (epoch(_weir_loaded_at) - epoch(updated_at)) * 1000 as ms from raw.accounts where updated_at >= cast('$live_start' as timestamp))")
rate=$(python3 -c "from datetime import datetime as d; f='%Y-%m-%d %H:%M:%S.%f'; print(round($SECONDS_LIVE * 5000 / (d.strptime('$live_end', f) - d.strptime('$live_start', f)).total_seconds()))")
echo "| latency at about $rate changes/s | $n rows | p50 ${p50} ms | p99 ${p99} ms | max ${max} ms |"
