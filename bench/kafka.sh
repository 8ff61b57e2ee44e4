#!/usr/bin/env bash
# Stream jobs over Kafka, beside the same jobs over the embedded log. Anyone can run it:
#
#   bash bench/kafka.sh                          # 2M events
#   BENCH_EVENTS=500000 bash bench/kafka.sh      # smaller
#
# The broker is noida-db (scripts/install-kafka.sh), a Kafka-protocol broker, started on a free
# loopback port with its data under the bench folder; confluent-kafka (librdkafka, the C
# client Weir uses too) is the reference client. The events are the streams benchmark's
# (bench/streams_events.py: 1,000 keys, event time from the data), padded to 100 bytes of
# JSON, in a topic of 2 partitions keyed by `k`.
#
# Measured, each after a warm-up run:
#   - confluent-kafka's producer, then its consumer (read_committed, `consume(10000)` batches)
#     pinned to one core: what the broker gives its own kind of client;
#   - `weir stream run tumble --drain` (a 1-second tumbling count per key into DuckDB) pinned
#     to one core and on both, over Kafka and over the embedded log;
#   - the same job writing its results to a Kafka topic (`sink='topic'`, one transaction per
#     checkpoint, every 5 s);
#   - the same job shared by workers (`--worker --drain`, each after `weir stream reset`): one
#     worker; two workers pinned to a core each; and one worker repartitioning (the events in a
#     topic declared keyed by `v`, so the job's groups by `k` go through the internal topic);
#   - latency: the job over live traffic (event time = the wall clock, BENCH_LIVE_RATE events
#     a second for BENCH_LIVE_SECONDS s, produced by confluent-kafka), from the append of the
#     event that closed a window to the commit of its result.
REPEAT="${BENCH_REPEAT:-1}"
source "$(dirname "$0")/common.sh"
bash scripts/install-kafka.sh >/dev/null
EVENTS="${BENCH_EVENTS:-2000000}"
LIVE_RATE="${BENCH_LIVE_RATE:-50000}"
LIVE_SECONDS="${BENCH_LIVE_SECONDS:-30}"
PY="$WEIR_KAFKA_VENV/bin/python"
BROKER="$(ls "$WEIR_KAFKA_VENV"/lib/python3*/site-packages/noida_db/noida-db)"
dir="$BENCH_DIR/kafka"
rm -rf "$dir"
mkdir -p "$dir/streams"
duckdb_project "$dir" kafka_bench
port=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
export BOOTSTRAP="127.0.0.1:$port"
"$BROKER" start --only kafka --kafka-port "$port" --data-dir "$dir/broker" >"$dir/broker.log" 2>&1 &
broker=$!
trap 'kill -TERM $broker 2>/dev/null || true' EXIT
until python3 -c "import socket; socket.create_connection(('127.0.0.1', $port))" 2>/dev/null; do sleep 0.1; done
printf 'kafka:\n  bootstrap_servers: %s\n' "$BOOTSTRAP" > "$dir/weir.yml"
cat > "$dir/streams/events.yml" <<'YML'
topics:
  - name: events
    log: kafka
    partitions: 2
    key: k
    columns: {k: varchar, ts: timestamp, v: bigint}
    watermark: ts - interval '1 second'
  - name: embedded_events
    partitions: 2
    key: k
    columns: {k: varchar, ts: timestamp, v: bigint}
    watermark: ts - interval '1 second'
  - name: events_by_v
    log: kafka
    partitions: 2
    key: v
    columns: {k: varchar, ts: timestamp, v: bigint}
    watermark: ts - interval '1 second'
  - name: live
    log: kafka
    partitions: 2
    key: k
    columns: {k: varchar, ts: timestamp, v: bigint}
    watermark: ts - interval '1 second'
YML
job() { printf "{{ config(checkpoint_interval='5s'%s) }}\nselect k, window_start, window_end, count(*) as n\nfrom tumble({{ stream('%s') }}, ts, interval '1 second')\ngroup by k, window_start, window_end\n" "$3" "$2" > "$dir/streams/$1.sql"; }
job tumble events ""
job embedded embedded_events ""
job to_topic events ", sink='topic', topic='counts'"
job latency live ""
job workers events ""
job repartitioned events_by_v ""

# 100 bytes each: the streams benchmark's event with a `note` to pad it.
python3 bench/streams_events.py "$EVENTS" | python3 -c "
import sys
for line in sys.stdin:
    line = line.rstrip('\n')
    sys.stdout.write(line[:-1] + ',\"note\":\"' + 'x' * max(0, 100 - len(line) - 11) + '\"}\n')
" > "$dir/events.jsonl"
echo "events: $EVENTS, $(head -1 "$dir/events.jsonl" | wc -c) bytes each with the newline" >&2
(cd "$dir" && "$WEIR" log produce events -f /dev/null >/dev/null && "$WEIR" log produce events_by_v -f /dev/null >/dev/null && "$WEIR" log produce embedded_events -f events.jsonl >/dev/null)

rate() { python3 -c "print(f'{$EVENTS / $1:,.0f}')"; }
printf '| what | seconds | events/s | peak MB |\n|---|---|---|---|\n'
produce() {
  "$PY" - "$dir/events.jsonl" "$1" <<'PY'
import json, os, sys, time
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": os.environ["BOOTSTRAP"], "partitioner": "murmur2_random", "linger.ms": 20,
              "batch.num.messages": 10000, "queue.buffering.max.messages": 1000000})
lines = open(sys.argv[1], "rb").read().splitlines()
topic = sys.argv[2]
start = time.time()
for line in lines:
    key = line[6:line.index(b'"', 6)]
    while True:
        try:
            p.produce(topic, key=key, value=line)
            break
        except BufferError:
            p.poll(0.01)
p.flush()
print(f"{time.time() - start:.3f}")
PY
}
produced=$(produce events)
printf '| confluent-kafka producer | %s | %s | |\n' "$produced" "$(rate "$produced")"
produce events_by_v >/dev/null
consumed() {
  taskset -c 0 "$PY" - <<'PY'
import os, time
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": os.environ["BOOTSTRAP"], "group.id": "bench", "isolation.level": "read_committed",
              "enable.auto.commit": False, "enable.partition.eof": True, "receive.message.max.bytes": 1000000000})
c.assign([TopicPartition("events", p, 0) for p in (0, 1)])
start, n, ended = time.time(), 0, set()
while len(ended) < 2:
    for m in c.consume(10000, 5):
        if m.error():
            ended.add(m.partition())
        else:
            n += 1
print(f"{time.time() - start:.3f}")
PY
}
consumed >/dev/null
t=$(consumed)
printf '| confluent-kafka consumer, one core | %s | %s | |\n' "$t" "$(rate "$t")"
for run in "tumble:one core:taskset -c 0" "tumble:two cores:" "embedded:two cores:" "embedded:one core:taskset -c 0" "to_topic:two cores:"; do
  IFS=: read -r name cores pin <<<"$run"
  read -r wt wm < <(cd "$dir" && python3 "$WEIR_ROOT/bench/timeit.py" "$REPEAT" --fresh .weir/streams --fresh bench.duckdb --fresh bench.duckdb.wal \
    $pin "$WEIR" stream run "$name" --drain)
  case "$name" in
    tumble) what="Weir job over Kafka into DuckDB, $cores" ;;
    embedded) what="Weir job over the embedded log into DuckDB, $cores" ;;
    to_topic) what="Weir job over Kafka into a Kafka topic (transactions), $cores" ;;
  esac
  printf '| %s | %s | %s | %s |\n' "$what" "$wt" "$(rate "$wt")" "$wm"
done

# Workers: each run starts over (`reset` forgets their checkpoints and rewinds the group).
worker() { printf '%s %s stream run %s --worker --drain' "$2" "$WEIR" "$1"; }
reset() { printf '%s stream reset %s >/dev/null && ' "$WEIR" "$1"; }
for run in "workers:one worker, two cores:$(reset workers)$(worker workers "")" \
  "workers:two workers, one core each:$(reset workers){ $(worker workers "taskset -c 0") & $(worker workers "taskset -c 1") & wait; }" \
  "repartitioned:one worker repartitioning, two cores:$(reset repartitioned)$(worker repartitioned "")"; do
  IFS=: read -r name what cmd <<<"$run"
  read -r wt wm < <(cd "$dir" && python3 "$WEIR_ROOT/bench/timeit.py" "$REPEAT" bash -c "$cmd")
  printf '| Weir job over Kafka into DuckDB, %s | %s | %s | %s |\n' "$what" "$wt" "$(rate "$wt")" "$wm"
  read_all=$(cd "$dir" && "$WEIR" --log-format json stream status "$name" | python3 -c 'import json, sys; print(json.load(sys.stdin)["events"]["read"])')
  echo "$name ($what): the workers' status says $read_all events read" >&2
done

# Latency over live traffic.
(cd "$dir" && "$WEIR" log produce live -f /dev/null >/dev/null)
(cd "$dir" && exec "$WEIR" stream run latency >/dev/null 2>&1) &
running=$!
sleep 2
python3 bench/streams_events.py --live "$LIVE_RATE" "$LIVE_SECONDS" | "$PY" -c "
import os, sys
from confluent_kafka import Producer
p = Producer({'bootstrap.servers': os.environ['BOOTSTRAP'], 'partitioner': 'murmur2_random', 'linger.ms': 5})
for line in sys.stdin.buffer:
    line = line.rstrip(b'\n')
    p.produce('live', key=line[6:line.index(b'\"', 6)], value=line)
    p.poll(0)
p.flush()
"
sleep 3
kill -TERM "$running"; wait "$running" || true
(cd "$dir" && "$WEIR" --log-format json stream status latency) | python3 -c "
import json, sys
s = json.load(sys.stdin)
l = s.get('result_latency_ms') or {}
print(f\"latency over Kafka, {s['events']['read']} live events at $LIVE_RATE/s: results committed {l.get('p50')} ms (median), {l.get('p99')} ms (p99) after the closing event was appended\")
"
