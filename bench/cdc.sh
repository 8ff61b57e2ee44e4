#!/usr/bin/env bash
# Change data capture from PostgreSQL into DuckDB mirrors. Anyone can run it:
#
#   bash bench/cdc.sh                                              # 10M rows, 10,000 transactions
#   BENCH_CDC_ROWS=1000000 BENCH_CDC_SECONDS=10 bash bench/cdc.sh  # smaller, shorter
#
# A private PostgreSQL (initdb + pg_ctl on a free loopback port, wal_level=logical, fsync off)
# holds `accounts` (id bigint primary key, customer, balance numeric(12,2), status, note,
# updated_at timestamp, in UTC) with BENCH_CDC_ROWS rows; a project mirrors it with a `mode: cdc`
# load into a DuckDB file.
#
# 1. Snapshot: `weir load bench` on a new mirror (the slot's exported snapshot copied in),
#    beside a plain `weir load` of the same table (the loads' rate on the same rows).
# 2. Throughput: with no follower running, pgbench runs BENCH_CDC_TRANSACTIONS transactions
#    from two clients, each updating 60 rows, deleting 20 and inserting 20; then `weir load
#    bench` catches the mirror up. Changes are the row changes the server counted
#    (pg_stat_user_tables: inserted + updated + deleted); the rate is changes over the
#    catch-up's wall time. The mirror is then compared with the source (count, sum of balance).
# 4. Change events: pgbench runs the same transactions again and the catch-up is timed as in
#    2 (on the mirror as 3 left it); then `events: true` is added to the load (the mirror stays:
#    no snapshot events), pgbench runs them once more, and the catch-up, now also publishing
#    every change to the event log in Debezium's envelope, is timed the same way; then a
#    stream job over them (`cdc()`, running aggregates per status) is drained with `weir
#    stream run --drain`.
# 3. Latency: `weir cdc run bench --batch-wait-ms 200` follows while pgbench writes 50
#    transactions a second, each updating the rows of a range of 100 ids (up to 5,000
#    changes/s; some ids were deleted above, and the rate printed is the one the server
#    counted) for BENCH_CDC_SECONDS;
#    each row's latency is its mirror `_weir_loaded_at` (taken when its batch is cut, before
#    the merge's own time) minus the `updated_at` its transaction wrote (clock_timestamp()).
# 5. Incremental snapshot of the whole table while pgbench writes, then mirror = source.
REPEAT=1
source "$(dirname "$0")/common.sh"
ROWS="${BENCH_CDC_ROWS:-10000000}"
TRANSACTIONS="${BENCH_CDC_TRANSACTIONS:-10000}"
SECONDS_LIVE="${BENCH_CDC_SECONDS:-30}"
dir="$BENCH_DIR/cdc"
rm -rf "$dir"
mkdir -p "$dir/loads"
PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
# The server's files live where the postgres user may go (as root it runs as postgres).
pg=$(mktemp -d)
[ "$(id -u)" = 0 ] && chown postgres: "$pg"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg "$PGBIN/initdb" -D "$pg/data" -A trust -U postgres --no-sync -E UTF8 >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$pg/data" -l "$pg/server.log" -w start \
  -o "-p $port -k $pg -c listen_addresses=127.0.0.1 -c wal_level=logical -c fsync=off -c max_wal_size=8GB -c shared_buffers=512MB" >/dev/null
trap 'as_pg "$PGBIN/pg_ctl" -D "$pg/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$pg"' EXIT
psql() { "$PGBIN/psql" -X -q -At -h 127.0.0.1 -p "$port" -U postgres -d postgres "$@"; }
pgbench() { "$PGBIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres -n "$@" postgres; }

psql -c "create table accounts (id bigint primary key, customer int, balance numeric(12,2), status text, note text, updated_at timestamp);
         insert into accounts select g, g % 1000, (g % 10000) / 100.0, 'open', md5(g::text), now() at time zone 'UTC' from generate_series(1, $ROWS) g;
         create sequence new_ids start $((ROWS + 1));"
psql -c "vacuum analyze accounts"
duckdb_project "$dir" cdc_bench
cat > "$dir/loads/bench.yml" <<YML
loads:
  - name: bench
    source: {kind: postgres, url: "postgresql://postgres@127.0.0.1:$port/postgres", mode: cdc, tables: [accounts]}
YML
changes() { psql -c "select n_tup_ins + n_tup_upd + n_tup_del from pg_stat_user_tables where relname = 'accounts'"; }
# The mirror against the source: row count and sum of balance.
compare() {
  local src dst
  src=$(psql -c "select count(*), sum(balance) from accounts" | tr '|' ' ')
  dst=$(mirror "select count(*), sum(balance) from raw.accounts")
  [ "$src" = "$dst" ] && echo "mirror = source: $src" || echo "MIRROR DIFFERS: source $src, mirror $dst"
}

snapshot_and_plain_load postgres "postgresql://postgres@127.0.0.1:$port/postgres" accounts

cat > "$dir/mixed.sql" <<SQL
\set id random(1, $ROWS - 100)
begin;
update accounts set balance = balance + 1, status = 'active', updated_at = clock_timestamp() at time zone 'UTC' where id between :id and :id + 59;
delete from accounts where id between :id + 60 and :id + 79;
insert into accounts select nextval('new_ids'), 1, 0, 'new', 'inserted', clock_timestamp() at time zone 'UTC' from generate_series(1, 20);
commit;
SQL
before=$(changes)
pgbench -c 2 -j 2 -t $((TRANSACTIONS / 2)) -f "$dir/mixed.sql" >/dev/null
sleep 2
made=$(( $(changes) - before ))
wal=$(psql -c "select pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)) from pg_replication_slots")
start=$(date +%s%N)
summary=$(cd "$dir" && "$WEIR" load bench 2>&1 | grep -o '[0-9]* upserted, [0-9]* deleted.*batch(es)' || true)
catch=$(seconds "$start" "$(date +%s%N)")
echo "| catch-up | $made changes ($wal of WAL) | ${catch} s | $(python3 -c "print(f'{$made / $catch:,.0f}')") changes/s | $summary |"
compare

cat > "$dir/live.sql" <<SQL
\set id random(1, $ROWS - 100)
update accounts set balance = balance + 1, updated_at = clock_timestamp() at time zone 'UTC' where id between :id and :id + 99;
SQL
(cd "$dir" && exec "$WEIR" cdc run bench --batch-wait-ms 200 >"$dir/follow.log" 2>&1) &
follower=$!
sleep 2
live_start=$(psql -c "select now() at time zone 'UTC'")
before=$(changes)
pgbench -c 2 -j 2 --rate 50 -T "$SECONDS_LIVE" -f "$dir/live.sql" >/dev/null
sleep 2
live_rate=$(( ($(changes) - before) / SECONDS_LIVE ))
kill -TERM "$follower"; wait "$follower" || true
read -r n p50 p99 max < <(mirror "select count(*), round(quantile_cont(ms, 0.5)), round(quantile_cont(ms, 0.99)), round(max(ms))
  from (select (epoch(_weir_loaded_at) - epoch(updated_at)) * 1000 as ms from raw.accounts where updated_at >= cast('$live_start' as timestamp))")
echo "| latency at $live_rate changes/s | $n rows | p50 ${p50} ms | p99 ${p99} ms | max ${max} ms |"

# 4. The same backlog twice more: caught up as in 2 (the mirror as the latency run left it),
#    then with each change also published as an event; then a job over the events.
catch_up() {
  local before made start catch
  before=$(changes)
  pgbench -c 2 -j 2 -t $((TRANSACTIONS / 2)) -f "$dir/mixed.sql" >/dev/null
  sleep 2
  made=$(( $(changes) - before ))
  start=$(date +%s%N)
  (cd "$dir" && "$WEIR" load bench >/dev/null 2>&1)
  catch=$(seconds "$start" "$(date +%s%N)")
  echo "$made $catch"
}
read -r made catch < <(catch_up)
echo "| catch-up again, without events | $made changes | ${catch} s | $(python3 -c "print(f'{$made / $catch:,.0f}')") changes/s | |"
printf '    events: true\n' >> "$dir/loads/bench.yml"
mkdir -p "$dir/streams"
cat > "$dir/streams/by_status.sql" <<'SQL'
select status, count(*) as accounts, sum(balance) as balance
from {{ cdc('bench', 'public.accounts') }}
group by status
SQL
read -r made catch < <(catch_up)
events=$(cd "$dir" && "$WEIR" --log-format json log topics | python3 -c "import json, sys; print(sum(t['events'] for t in json.load(sys.stdin) if t['topic'] == 'bench.public.accounts'))")
echo "| catch-up with events | $made changes, $events events | ${catch} s | $(python3 -c "print(f'{$made / $catch:,.0f}')") changes/s | |"
start=$(date +%s%N)
(cd "$dir" && "$WEIR" stream run by_status --drain >/dev/null 2>&1)
job=$(seconds "$start" "$(date +%s%N)")
echo "| job over the events | $events events | ${job} s | $(python3 -c "print(f'{$events / $job:,.0f}')") events/s | |"

# 5. Incremental snapshot: the mirror drifts (a tenth of its rows deleted and another tenth
#    changed in the warehouse), then `weir cdc snapshot bench accounts` reads the whole table
#    again in chunks of 20,000 rows, interleaved with the stream, while pgbench writes as in 3;
#    the rate is the table's rows over the command's wall time. Then the mirror is caught up
#    and compared with the source.
sed -i '/events: true/d' "$dir/loads/bench.yml"
rm -rf "$dir/streams"
compare
(cd "$dir" && "$WEIR" sql "delete from raw.accounts where id % 10 = 3" && "$WEIR" sql "update raw.accounts set balance = -1 where id % 10 = 7") >/dev/null
before=$(changes)
# The program itself in the background (not the function), for `kill` to reach it.
"$PGBIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres -n -c 2 -j 2 --rate 50 -T 3600 -f "$dir/live.sql" postgres >/dev/null 2>&1 &
writers=$!
start=$(date +%s%N)
(cd "$dir" && "$WEIR" cdc snapshot bench accounts >"$dir/snapshot.log" 2>&1)
took=$(seconds "$start" "$(date +%s%N)")
kill "$writers" 2>/dev/null; wait "$writers" 2>/dev/null || true
# A statement pgbench left running still commits (its backend finds the client gone only
# after): the catch-up below starts once none is left.
while [ "$(psql -c "select count(*) from pg_stat_activity where application_name = 'pgbench' and state <> 'idle'")" != 0 ]; do sleep 0.2; done
sleep 1
rate=$(python3 -c "print(round(($(changes) - $before) / $took))")
rows=$(psql -c "select count(*) from accounts")
echo "| incremental snapshot while writing ($rate changes/s) | $rows rows | ${took} s | $(python3 -c "print(f'{$rows / $took:,.0f}')") rows/s | |"
(cd "$dir" && "$WEIR" load bench >/dev/null 2>&1)
compare
