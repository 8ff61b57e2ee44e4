#!/usr/bin/env bash
# Stream jobs, side by side with Flink SQL. Anyone can run it:
#
#   bash bench/streams.sh                       # 10M events
#   BENCH_EVENTS=1000000 bash bench/streams.sh  # smaller
#   BENCH_FLINK=0 bash bench/streams.sh         # Weir only
#
# The events (bench/streams_events.py): 1,000 keys, event time from the data, 100,000 events
# per second of event time, one in fifty up to 400 ms out of order. Weir appends them to its
# embedded log (`weir log produce`, timed apart) and runs each job with `weir stream run
# --drain`, from the first event to the last, writing results to a DuckDB file with
# checkpoints every 5 s. Flink (apache-flink from PyPI on the machine's Java) runs the same SQL
# at parallelism 1 over the same file, into a blackhole sink. Jobs: a 1-second tumbling count
# per key, a 5-minute hop sliding by 1 minute, per key a window that closes after a 30-second
# gap between events, and the tumbling count of the events a `where` keeps (nine in ten: the
# filter runs as SQL on an in-process DuckDB); each with a 1-second watermark. Times are wall-clock seconds of one run after a warm-up run; Weir's
# memory is the peak resident set (getrusage), Flink's the peak resident set of its JVM,
# sampled every 0.2 s.
REPEAT="${BENCH_REPEAT:-1}"
source "$(dirname "$0")/common.sh"
EVENTS="${BENCH_EVENTS:-10000000}"
FLINK="${BENCH_FLINK:-1}"
dir="$BENCH_DIR/streams"
# The events are kept between runs of the script (generating 10M takes a minute); the rest
# starts afresh.
[ "$(cat "$dir/events.count" 2>/dev/null)" = "$EVENTS" ] || rm -rf "$dir"
rm -rf "$dir/.weir" "$dir/streams" "$dir"/bench.duckdb*
mkdir -p "$dir/streams"
duckdb_project "$dir" streams_bench
cat > "$dir/streams/events.yml" <<'YML'
topics:
  - name: events
    columns: {k: varchar, ts: timestamp, v: bigint}
    watermark: ts - interval '1 second'
  - name: live
    columns: {k: varchar, ts: timestamp, v: bigint}
    watermark: ts - interval '1 second'
YML
window_sql() {
  printf "select k, window_start, window_end, count(*) as n\nfrom %s\n%bgroup by k, window_start, window_end\n" "$1" "${2:-}"
}
window_sql "tumble({{ stream('events') }}, ts, interval '1 second')" > "$dir/streams/tumble.sql"
window_sql "hop({{ stream('events') }}, ts, interval '1 minute', interval '5 minutes')" > "$dir/streams/hop.sql"
window_sql "session({{ stream('events') }}, ts, interval '30 seconds')" > "$dir/streams/session.sql"
window_sql "tumble({{ stream('events') }}, ts, interval '1 second')" "where v % 10 <> 0\n" > "$dir/streams/filtered.sql"

if [ ! -f "$dir/events.count" ]; then
  echo "Generating $EVENTS events..." >&2
  python3 bench/streams_events.py "$EVENTS" > "$dir/events.jsonl"
  echo "$EVENTS" > "$dir/events.count"
fi
start=$(date +%s%N)
(cd "$dir" && "$WEIR" log produce events -f events.jsonl >/dev/null)
produce=$(seconds "$start" "$(date +%s%N)")

rate() { python3 -c "print(f'{$EVENTS / $1 / 1e6:.2f}M')"; }
printf '| job | Weir s | Weir events/s | Weir peak MB | Flink s (job) | Flink events/s | Flink peak MB |\n|---|---|---|---|---|---|---|\n'
if [ "$FLINK" = 1 ]; then
  FLINK_VENV="$BENCH_DIR/flink-venv"
  [ -x "$FLINK_VENV/bin/python" ] || python3 -m venv "$FLINK_VENV"
  "$FLINK_VENV/bin/pip" install -q 'apache-flink==2.3.0' >&2
fi
for job in tumble hop session filtered; do
  read -r wt wm < <(cd "$dir" && python3 "$WEIR_ROOT/bench/timeit.py" "$REPEAT" --fresh .weir/streams --fresh bench.duckdb --fresh bench.duckdb.wal \
    "$WEIR" stream run "$job" --drain)
  ft="-" fr="-" fm="-"
  if [ "$FLINK" = 1 ]; then
    peak="$dir/flink-peak"
    echo 0 > "$peak"
    ( set +e +o pipefail
      while sleep 0.2; do
        kb=$(ps -C java -o rss= | awk '{s+=$1} END {print s+0}')
        if [ "$kb" -gt "$(cat "$peak")" ]; then echo "$kb" > "$peak"; fi
      done ) &
    sampler=$!
    ft=$("$FLINK_VENV/bin/python" bench/streams_flink.py "$dir/events.jsonl" "$job" 2>"$dir/flink-$job.err" | tail -1)
    kill "$sampler" 2>/dev/null || true
    fr=$(rate "$ft")
    fm=$(( $(cat "$peak") / 1024 ))
  fi
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$job" "$wt" "$(rate "$wt")" "$wm" "$ft" "$fr" "$fm"
done
echo "weir log produce of $EVENTS events: ${produce}s" >&2

# Latency: the tumbling job over live traffic (event time = the wall clock, $LIVE_RATE events
# a second for $LIVE_SECONDS s, appended in bursts every 0.1 s), checkpoints every 5 s; the job
# measures each result from the append of the event that closed its window to its commit.
LIVE_RATE="${BENCH_LIVE_RATE:-100000}"
LIVE_SECONDS="${BENCH_LIVE_SECONDS:-30}"
printf "{{ config(checkpoint_interval='5s') }}\n" > "$dir/streams/latency.sql"
window_sql "tumble({{ stream('live') }}, ts, interval '1 second')" >> "$dir/streams/latency.sql"
(cd "$dir" && "$WEIR" log produce live -f /dev/null >/dev/null)
(cd "$dir" && exec "$WEIR" stream run latency >/dev/null 2>&1) &
job=$!
sleep 1
python3 bench/streams_events.py --live "$LIVE_RATE" "$LIVE_SECONDS" | (cd "$dir" && "$WEIR" log produce live >/dev/null)
sleep 2
kill -TERM "$job"; wait "$job" || true
(cd "$dir" && "$WEIR" --log-format json stream status latency) | python3 -c "
import json, sys
s = json.load(sys.stdin)
l = s.get('result_latency_ms') or {}
print(f\"latency, {s['events']['read']} live events at $LIVE_RATE/s: results committed {l.get('p50')} ms (median), {l.get('p99')} ms (p99) after the closing event was appended\")
"
