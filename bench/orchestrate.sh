#!/usr/bin/env bash
# Scheduling overhead: a 1,000-task chain and a 1,000-task fan-out of no-op shell tasks
# (`true`), run by `weir pipeline run` and by Airflow (apache-airflow from PyPI, `airflow
# standalone`: LocalExecutor, SQLite), measured the same way from each tool's own record of
# when each task started and ended (bench/orchestrate_gaps.py): for the chain, the median time
# from one task's end to the next one's start; for the fan-out, from the end that freed a slot
# to the start it allowed.
#
#   bash bench/orchestrate.sh                          # Weir, 1,000 tasks; Airflow, 100 tasks
#   BENCH_TASKS=200 BENCH_AIRFLOW_TASKS=30 bash bench/orchestrate.sh
#   BENCH_AIRFLOW=0 bash bench/orchestrate.sh          # Weir only
#
# Airflow takes about a second per chained task, so its DAGs default to 100 tasks; the figures
# compared are per task. Both run 16 tasks at once in the fan-out.
source "$(dirname "$0")/common.sh"
TASKS="${BENCH_TASKS:-1000}"
AF_TASKS="${BENCH_AIRFLOW_TASKS:-100}"
SLOTS=16
dir="$BENCH_DIR/orchestrate"
rm -rf "$dir"
mkdir -p "$dir/pipelines"
printf 'name: bench_orchestrate\nprofile: bench_orchestrate\n' > "$dir/dbt_project.yml"
printf 'bench_orchestrate:\n  target: dev\n  outputs:\n    dev: {type: duckdb, path: bench.duckdb}\n' > "$dir/profiles.yml"
printf 'orchestrator:\n  parallelism: %s\n' "$SLOTS" > "$dir/weir.yml"
python3 - "$dir/pipelines" "$TASKS" <<'PY'
import sys
out, n = sys.argv[1], int(sys.argv[2])
with open(f"{out}/chain.yml", "w") as f:
    f.write("tasks:\n")
    for i in range(n):
        after = f", after: t{i - 1}" if i else ""
        f.write(f"  t{i}: {{shell: 'true'{after}}}\n")
with open(f"{out}/fanout.yml", "w") as f:
    f.write("tasks:\n")
    for i in range(n):
        f.write(f"  t{i}: {{shell: 'true'}}\n")
PY
echo "== Weir: $TASKS-task chain and fan-out"
for dag in chain fanout; do
  /usr/bin/time -f "%M" -o "$dir/$dag.rss" "$WEIR" --project-dir "$dir" --log-format json pipeline run "$dag" > "$dir/$dag.jsonl"
  python3 bench/orchestrate_gaps.py weir "$dir/$dag.jsonl" "$dag" "$dag" "$SLOTS" | tee -a "$dir/results.jsonl"
  echo "   peak RSS $(( $(cat "$dir/$dag.rss") / 1024 )) MB"
done

# The scheduler's memory with many finished runs stored: a backfill of an hourly pipeline
# fills the store, then `weir serve` schedules and answers list requests over it.
RUNS="${BENCH_RUNS:-10000}"
mem="$dir/memory"
mkdir -p "$mem/pipelines"
cp "$dir/dbt_project.yml" "$dir/profiles.yml" "$mem/"
printf "schedule: '@hourly'\nmax_active_runs: 16\ntasks:\n  a: {shell: 'true'}\n  b: {shell: 'true', after: a}\n" > "$mem/pipelines/hourly.yml"
end=$(python3 -c "import datetime as d; print((d.datetime(2020, 1, 1) + d.timedelta(hours=$RUNS)).isoformat())")
echo "== Weir: backfill of $RUNS hourly runs (2 tasks each), 16 at a time"
t0=$(date +%s%N)
/usr/bin/time -f "%M" -o "$mem/backfill.rss" "$WEIR" --project-dir "$mem" pipeline backfill hourly --start 2020-01-01 --end "$end" --parallel 16 > "$mem/backfill.log"
t1=$(date +%s%N)
secs=$(seconds "$t0" "$t1")
echo "   $(tail -1 "$mem/backfill.log" | sed 's/^[^ ]*  //')"
echo "   $secs s, $(python3 -c "print(round($RUNS / $secs))") runs/s, peak RSS $(( $(cat "$mem/backfill.rss") / 1024 )) MB"
port=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
WEIR_API_TOKEN=bench "$WEIR" --project-dir "$mem" serve --bind "127.0.0.1:$port" > "$mem/serve.log" 2>&1 &
serve=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/api/v1/health" > /dev/null && break; sleep 0.2; done
for _ in $(seq 1 20); do
  curl -sf -H "Authorization: Bearer bench" "http://127.0.0.1:$port/api/v1/pipelines/hourly/runs?limit=1000" > /dev/null
  curl -sf -H "Authorization: Bearer bench" "http://127.0.0.1:$port/api/v1/pipelines" > /dev/null
done
sleep 5
stored=$(curl -sf -H "Authorization: Bearer bench" "http://127.0.0.1:$port/api/v1/pipelines/hourly/runs?limit=1000&state=success" | python3 -c "import json, sys; print(len(json.load(sys.stdin)))")
hwm=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$serve/status")
kill -TERM "$serve"; wait "$serve" || true
echo "== Weir: weir serve over $RUNS finished runs: peak RSS $hwm MB (listing returned $stored runs per page)"
echo "{\"tool\": \"weir\", \"dag\": \"serve_memory\", \"runs\": $RUNS, \"peak_rss_mb\": $hwm, \"backfill_s\": $secs}" >> "$dir/results.jsonl"

if [ "${BENCH_AIRFLOW:-1}" = "1" ]; then
  AF_VENV="${WEIR_AIRFLOW_VENV:-$HOME/.cache/weir/airflow-venv}"
  if [ ! -x "$AF_VENV/bin/airflow" ]; then
    python3 -m venv "$AF_VENV"
    "$AF_VENV/bin/pip" install --quiet "apache-airflow>=3,<3.4"
  fi
  # `airflow standalone` starts its parts as `airflow ...` from PATH.
  export PATH="$AF_VENV/bin:$PATH"
  export AIRFLOW_HOME="$dir/airflow"
  mkdir -p "$AIRFLOW_HOME/dags"
  export AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__PARALLELISM=$SLOTS AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG=$SLOTS
  export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=5
  python3 - "$AIRFLOW_HOME/dags" "$AF_TASKS" <<'PY'
import sys
out, n = sys.argv[1], int(sys.argv[2])
head = "from datetime import datetime\nfrom airflow.sdk import DAG\nfrom airflow.providers.standard.operators.bash import BashOperator\n"
with open(f"{out}/bench_dags.py", "w") as f:
    f.write(head)
    for dag in ("chain", "fanout"):
        f.write(f"\nwith DAG('{dag}', schedule=None, start_date=datetime(2024, 1, 1), catchup=False):\n")
        f.write(f"    tasks = [BashOperator(task_id=f't{{i}}', bash_command='true') for i in range({n})]\n")
        if dag == "chain":
            f.write("    for a, b in zip(tasks, tasks[1:]):\n        a >> b\n")
PY
  "$AF_VENV/bin/airflow" standalone > "$dir/airflow.log" 2>&1 &
  af=$!
  trap 'kill $af 2>/dev/null; pkill -f "$AIRFLOW_HOME" 2>/dev/null || true' EXIT
  # Wait until both DAGs are parsed.
  for _ in $(seq 1 120); do
    if "$AF_VENV/bin/airflow" dags list 2>/dev/null | grep -q fanout; then break; fi
    sleep 5
  done
  # The API server must be up before the first trigger counts as the scheduler's work.
  sleep 10
  for dag in chain fanout; do
    echo "== Airflow: $AF_TASKS-task $dag"
    "$AF_VENV/bin/airflow" dags trigger "$dag" > /dev/null
    # The run's state, read from Airflow's own metadata database.
    for _ in $(seq 1 2000); do
      state=$(python3 -c "import sqlite3, sys; r = sqlite3.connect(sys.argv[1]).execute('select state from dag_run where dag_id = ? order by id desc limit 1', (sys.argv[2],)).fetchone(); print(r[0] if r else '')" "$AIRFLOW_HOME/airflow.db" "$dag")
      case "$state" in success|failed) break ;; esac
      sleep 2
    done
    python3 bench/orchestrate_gaps.py airflow "$AIRFLOW_HOME/airflow.db" "$dag" "$dag" "$SLOTS" | tee -a "$dir/results.jsonl"
  done
fi
