#!/usr/bin/env bash
# What the schema registry's formats cost per message beside plain JSON, in the streams
# benchmark's job. Anyone can run it:
#
#   bash bench/serializers.sh                        # 1M events
#   BENCH_EVENTS=200000 bash bench/serializers.sh    # smaller
#
# The events are the streams benchmark's (bench/streams_events.py: 1,000 keys, three columns
# k varchar, ts timestamp, v bigint). For each format (json, avro, json_schema, protobuf) a
# project declares the topic `events` in it on the embedded log; timed:
#   - `weir log produce events` of the same JSON lines: reading each line, and for the
#     registry's formats writing it as a message of the schema of the topic's columns
#     (registered once), then appending;
#   - `weir stream run tumble --drain`: the 1-second tumbling count per key over every event,
#     reading each message with the schema its id names (Avro decoded by a reader compiled
#     once per schema id; JSON Schema's payload read as JSON; Protobuf decoded by
#     prost-reflect, then read as JSON).
#   - `weir load events_in`: the same events as a CSV file loaded into the topic (`to: topic`):
#     DuckDB reads the file into a stage table, and each row is written as an event of the
#     topic's columns in its format and published in one commit; beside it, the same load
#     into a table (the `table` row).
# All are wall-clock seconds, the median of $REPEAT runs; the difference from JSON divided
# by the events is the format's cost per message. Bytes per event are the log's size on disk.
REPEAT="${BENCH_REPEAT:-3}"
source "$(dirname "$0")/common.sh"
EVENTS="${BENCH_EVENTS:-1000000}"
base="$BENCH_DIR/serializers"
mkdir -p "$base"
if [ "$(cat "$base/events.count" 2>/dev/null)" != "$EVENTS" ]; then
  python3 bench/streams_events.py "$EVENTS" > "$base/events.jsonl"
  python3 - "$base/events.jsonl" > "$base/events.csv" <<'PY'
import json, sys
print("k,ts,v")
for line in open(sys.argv[1]):
    e = json.loads(line)
    print(f"{e['k']},{e['ts']},{e['v']}")
PY
  echo "$EVENTS" > "$base/events.count"
fi

printf '| format | produce s | produce events/s | job s | job events/s | job µs/event beside JSON | bytes/event | load s | load rows/s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n'
json_job=""
# A load of the CSV, timed with fresh state each run ($1: the project).
load() {
  for _ in $(seq "$REPEAT"); do
    rm -rf "$1/.weir" "$1/bench.duckdb" "$1/bench.duckdb.wal"
    start=$(date +%s%N)
    (cd "$1" && "$WEIR" load events_in >/dev/null)
    seconds "$start" "$(date +%s%N)"
  done | median
}
dir="$base/table"
rm -rf "$dir" && mkdir -p "$dir/loads"
duckdb_project "$dir" serializers_bench
printf 'loads:\n  - name: events_in\n    source: {kind: csv, path: %s}\n' "$base/events.csv" > "$dir/loads/events.yml"
table_load=$(load "$dir")
python3 -c "import sys; s=float(sys.argv[1]); n=int(sys.argv[2]); print(f'| table (no topic) | | | | | | | {s:.2f} | {n / s / 1e3:,.0f}k |')" "$table_load" "$EVENTS"
for format in json avro json_schema protobuf; do
  dir="$base/$format"
  rm -rf "$dir"
  mkdir -p "$dir/streams"
  duckdb_project "$dir" serializers_bench
  printf 'topics:\n  - name: events\n    format: %s\n    columns: {k: varchar, ts: timestamp, v: bigint}\n    watermark: ts - interval '"'"'1 second'"'"'\n' \
    "$format" > "$dir/streams/events.yml"
  printf "select k, window_start, window_end, count(*) as n\nfrom tumble({{ stream('events') }}, ts, interval '1 second')\ngroup by k, window_start, window_end\n" \
    > "$dir/streams/tumble.sql"
  produce=$(for _ in $(seq "$REPEAT"); do
    rm -rf "$dir/.weir"
    start=$(date +%s%N)
    (cd "$dir" && "$WEIR" log produce events -f "$base/events.jsonl" >/dev/null)
    seconds "$start" "$(date +%s%N)"
  done | median)
  bytes=$(du -sb "$dir/.weir/log" | cut -f1)
  read -r job _ < <(cd "$dir" && python3 "$WEIR_ROOT/bench/timeit.py" "$REPEAT" --fresh .weir/streams --fresh bench.duckdb --fresh bench.duckdb.wal \
    "$WEIR" stream run tumble --drain)
  [ -n "$json_job" ] || json_job="$job"
  mkdir -p "$dir/loads"
  printf 'loads:\n  - name: events_in\n    source: {kind: csv, path: %s}\n    to: topic\n    topic: events\n' "$base/events.csv" > "$dir/loads/events.yml"
  loaded=$(load "$dir")
  python3 - "$format" "$produce" "$job" "$json_job" "$bytes" "$EVENTS" "$loaded" <<'PY'
import sys
fmt, produce, job, json_job, size, n, loaded = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
extra = "-" if fmt == "json" else f"{(job - json_job) / n * 1e6:+.2f}"
print(f"| {fmt} | {produce:.2f} | {n / produce / 1e3:,.0f}k | {job:.2f} | {n / job / 1e3:,.0f}k | {extra} | {size / n:.1f} | {loaded:.2f} | {n / loaded / 1e3:,.0f}k |")
PY
done
