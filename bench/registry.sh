#!/usr/bin/env bash
# The schema registry of `weir serve`: registrations and lookups by id per second over
# loopback, with keep-alive clients. Anyone can run it:
#
#   bash bench/registry.sh                       # 2,000 schemas, 20,000 lookups
#   BENCH_SCHEMAS=500 bash bench/registry.sh     # smaller
#
# `weir serve` runs on a temporary project with its metadata store in SQLite (the default);
# the clients are Python's http.client on one kept-alive connection each (what a serializer's
# client does), N of them at once as separate processes. Measured:
#   - registrations: distinct Avro records (8 fields each, told apart by their doc) under one
#     subject per client with compatibility NONE, then BACKWARD (each checked against the
#     latest version);
#   - lookups: GET /schemas/ids/{id} of random registered ids, as deserializers do on a cache
#     miss (Confluent's clients cache them afterwards), beside GET /registry/ (an empty
#     answer: what the HTTP round trip and the Python client cost alone);
#   - the same on a PostgreSQL store (the shared server, in a schema of the bench's own).
# Confluent's registry (Java) and Karapace cannot run here (no Kafka-free mode, Python 3.12),
# so the figures stand alone.
REPEAT="${BENCH_REPEAT:-1}"
source "$(dirname "$0")/common.sh"
SCHEMAS="${BENCH_SCHEMAS:-2000}"
LOOKUPS="${BENCH_LOOKUPS:-20000}"
dir="$BENCH_DIR/registry"
rm -rf "$dir"
mkdir -p "$dir"
duckdb_project "$dir" registry_bench
export WEIR_API_TOKEN=bench-token

client() {
  # $1: what (register-none, register-backward, lookup), $2: clients at once, $3: subject.
  python3 - "$@" <<'PY'
import http.client, json, multiprocessing, os, random, sys, time
what, clients, subject = sys.argv[1], int(sys.argv[2]), sys.argv[3]
port, schemas, lookups = int(os.environ["PORT"]), int(os.environ["SCHEMAS"]), int(os.environ["LOOKUPS"])
headers = {"Authorization": "Bearer bench-token", "Content-Type": "application/vnd.schemaregistry.v1+json"}

def record(i):
    # One text per i (its doc), the same 8 fields: each a new version that passes BACKWARD.
    fields = [{"name": f"f{j}", "type": "long" if j % 2 else "string"} for j in range(8)]
    return json.dumps({"type": "record", "name": "R", "namespace": "bench", "doc": f"version {i}", "fields": fields})

def work(part):
    c = http.client.HTTPConnection("127.0.0.1", port)
    n = 0
    if what.startswith("register"):
        for i in range(part, schemas, clients):
            body = json.dumps({"schema": record(i)})
            c.request("POST", f"/registry/subjects/{subject}-{part}/versions", body, headers)
            r = c.getresponse(); r.read()
            assert r.status == 200, (r.status, r.reason)
            n += 1
    elif what == "baseline":
        for _ in range(lookups // clients):
            c.request("GET", "/registry/", headers=headers)
            r = c.getresponse(); r.read()
            n += 1
    else:
        rng = random.Random(part)
        for _ in range(lookups // clients):
            c.request("GET", f"/registry/schemas/ids/{rng.randint(1, schemas)}", headers=headers)
            r = c.getresponse(); r.read()
            assert r.status == 200, r.status
            n += 1
    return n

start = time.time()
with multiprocessing.Pool(clients) as pool:
    done = sum(pool.map(work, range(clients)))
took = time.time() - start
print(f"{done} {took:.3f} {done / took:,.0f}")
PY
}

run_on() {
  # $1: label, $2: the project's weir.yml (where its metadata store is).
  rm -rf "$dir/.weir"
  printf '%s' "$2" > "$dir/weir.yml"
  port=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  export PORT=$port SCHEMAS LOOKUPS
  (cd "$dir" && exec "$WEIR" serve --bind "127.0.0.1:$port" >"$dir/serve.log" 2>&1) &
  server=$!
  until curl -sf "http://127.0.0.1:$port/api/v1/health" >/dev/null; do sleep 0.1; done
  curl -sf -X PUT -H "Authorization: Bearer bench-token" -d '{"compatibility":"NONE"}' "http://127.0.0.1:$port/registry/config" >/dev/null
  for clients in 1 2; do
    read -r n t r < <(client register-none "$clients" "none$clients")
    printf '| %s | register, NONE, %s client(s) | %s | %s s | %s/s |\n' "$1" "$clients" "$n" "$t" "$r"
  done
  curl -sf -X PUT -H "Authorization: Bearer bench-token" -d '{"compatibility":"BACKWARD"}' "http://127.0.0.1:$port/registry/config" >/dev/null
  read -r n t r < <(client register-backward 1 backward)
  printf '| %s | register, BACKWARD (checked against the latest), 1 client | %s | %s s | %s/s |\n' "$1" "$n" "$t" "$r"
  read -r n t r < <(client baseline 1 x)
  printf '| %s | GET /registry/ (the HTTP round trip and client alone), 1 client | %s | %s s | %s/s |\n' "$1" "$n" "$t" "$r"
  for clients in 1 2; do
    read -r n t r < <(client lookup "$clients" x)
    printf '| %s | lookup by id, %s client(s) | %s | %s s | %s/s |\n' "$1" "$clients" "$n" "$t" "$r"
  done
  kill -TERM "$server"; wait "$server" || true
}

schema="weir_registry_bench_$$"
trap 'kill "${server:-}" 2>/dev/null || true; psql -q -h 127.0.0.1 -U postgres -d test -c "drop schema if exists $schema cascade" >/dev/null 2>&1 || true' EXIT
printf '| store | what | requests | seconds | requests/s |\n|---|---|---|---|---|\n'
run_on SQLite ""
run_on PostgreSQL "$(printf 'metadata_store:\n  url: postgresql://postgres@127.0.0.1:5432/test\n  schema: %s\n' "$schema")"
