#!/usr/bin/env bash
# Scheduling overhead: a chain and a fan-out of tasks that do nothing but read the clock, run
# by `weir pipeline run` and by Airflow (apache-airflow from PyPI, `airflow standalone`:
# LocalExecutor, SQLite). Every task's command writes when its shell started and when it is
# about to exit (`date +%s%N`), so both tools are measured over the same span: from the end of
# one task's process to the start of the next one's (bench/orchestrate_gaps.py), which takes
# in noticing the end, recording it, deciding, and starting the next process.
#
#   bash bench/orchestrate.sh                          # Weir, 1,000 tasks; Airflow, 100 tasks
#   BENCH_TASKS=200 BENCH_AIRFLOW_TASKS=30 bash bench/orchestrate.sh
#   BENCH_AIRFLOW=0 bash bench/orchestrate.sh          # Weir only
#
# Weir runs on its SQLite store as shipped (a commit is synced at the next checkpoint) and with
# `?synchronous=full` (every commit synced, as Airflow's SQLite database does). Airflow runs as
# installed (`scheduler_idle_sleep_time` 1 s) and tuned for latency (0.05 s). Airflow takes
# about a second per chained task as installed, so its DAGs default to 100 tasks; the figures
# compared are per task. Both run 16 tasks at once in the fan-out. Every process the script
# starts is stopped by its process group before it exits, and checked gone.
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
marks="$dir/marks"
mkdir -p "$marks"
# The command each task runs, filled in with the task's name and the marks file.
export TASK_CMD='s=$(date +%%s%%N); echo "%s $s $(date +%%s%%N)" >> %s'
python3 - "$dir/pipelines" "$TASKS" "$marks" <<'PY'
import os, sys
out, n, marks = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def cmd(task, dag):
    return os.environ["TASK_CMD"] % (task, f"{marks}/weir-{dag}.txt")
for dag in ("chain", "fanout"):
    with open(f"{out}/{dag}.yml", "w") as f:
        f.write("tasks:\n")
        for i in range(n):
            after = f"\n    after: t{i - 1}" if dag == "chain" and i else ""
            q = cmd(f"t{i}", dag).replace("'", "''")
            f.write(f"  t{i}:\n    shell: '{q}'{after}\n")
PY
for store in default synced; do
  if [ "$store" = synced ]; then
    printf 'metadata_store: "sqlite:.weir/weir-synced.db?synchronous=full"\n' >> "$dir/weir.yml"
  fi
  echo "== Weir ($store store): $TASKS-task chain and fan-out"
  for dag in chain fanout; do
    rm -f "$marks/weir-$dag.txt"
    /usr/bin/time -f "%M" -o "$dir/$dag.rss" "$WEIR" --project-dir "$dir" pipeline run "$dag" > "$dir/$dag.log"
    python3 bench/orchestrate_gaps.py "weir-$store" "$marks/weir-$dag.txt" "$dag" "$dag" "$SLOTS" | tee -a "$dir/results.jsonl"
    echo "   peak RSS $(( $(cat "$dir/$dag.rss") / 1024 )) MB"
  done
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

# Processes other than this script's own (its process group) that carry $AIRFLOW_HOME in their
# environment: Airflow's parts and whatever they started, in whatever session.
own_group=$(ps -o pgid= -p $$ | tr -d ' ')
airflow_processes() {
  local f pid
  for f in /proc/[0-9]*/environ; do
    grep -qsz "^AIRFLOW_HOME=$AIRFLOW_HOME\$" "$f" || continue
    pid=${f#/proc/}; pid=${pid%/environ}
    [ "$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')" = "$own_group" ] && continue
    echo "$pid"
  done
}

# Stops the process group started with setsid, then any Airflow process left outside it, and
# fails if one is still there.
stop_airflow() {
  [ -n "${af_group:-}" ] || return 0
  kill -TERM -- "-$af_group" 2>/dev/null || true
  for _ in $(seq 1 30); do
    pgrep -g "$af_group" > /dev/null || break
    sleep 1
  done
  kill -KILL -- "-$af_group" 2>/dev/null || true
  af_group=""
  local left
  for _ in 1 2 3 4 5; do
    left=$(airflow_processes)
    [ -n "$left" ] || return 0
    kill -KILL $left 2>/dev/null || true
    sleep 1
  done
  left=$(airflow_processes)
  if [ -n "$left" ]; then
    echo "Airflow processes are still running: $left" >&2
    return 1
  fi
}

if [ "${BENCH_AIRFLOW:-1}" = "1" ]; then
  AF_VENV="${WEIR_AIRFLOW_VENV:-$HOME/.cache/weir/airflow-venv}"
  if [ ! -x "$AF_VENV/bin/airflow" ]; then
    python3 -m venv "$AF_VENV"
    "$AF_VENV/bin/pip" install --quiet "apache-airflow>=3,<3.4"
  fi
  # `airflow standalone` starts its parts as `airflow ...` from PATH.
  export PATH="$AF_VENV/bin:$PATH"
  export AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__PARALLELISM=$SLOTS AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG=$SLOTS
  export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=5
  trap 'stop_airflow' EXIT
  for setup in installed tuned; do
    export AIRFLOW_HOME="$dir/airflow-$setup"
    mkdir -p "$AIRFLOW_HOME/dags"
    if [ "$setup" = tuned ]; then
      # Airflow's guide to scheduler performance: a shorter idle sleep for lower latency.
      export AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME=0.05
    fi
    python3 - "$AIRFLOW_HOME/dags" "$AF_TASKS" "$marks" "$setup" <<'PY'
import os, sys
out, n, marks, setup = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
head = "from datetime import datetime\nfrom airflow.sdk import DAG\nfrom airflow.providers.standard.operators.bash import BashOperator\n"
with open(f"{out}/bench_dags.py", "w") as f:
    f.write(head)
    for dag in ("chain", "fanout"):
        cmds = [os.environ["TASK_CMD"] % (f"t{i}", f"{marks}/airflow-{setup}-{dag}.txt") for i in range(n)]
        f.write(f"\nwith DAG('{dag}', schedule=None, start_date=datetime(2024, 1, 1), catchup=False):\n")
        f.write(f"    tasks = [BashOperator(task_id=f't{{i}}', bash_command=c) for i, c in enumerate({cmds!r})]\n")
        if dag == "chain":
            f.write("    for a, b in zip(tasks, tasks[1:]):\n        a >> b\n")
PY
    setsid "$AF_VENV/bin/airflow" standalone > "$dir/airflow-$setup.log" 2>&1 &
    af_group=$!
    # Wait until both DAGs are parsed.
    for _ in $(seq 1 120); do
      if "$AF_VENV/bin/airflow" dags list 2>/dev/null | grep -q fanout; then break; fi
      sleep 5
    done
    # The API server must be up before the first trigger counts as the scheduler's work.
    sleep 10
    for dag in chain fanout; do
      echo "== Airflow ($setup): $AF_TASKS-task $dag"
      rm -f "$marks/airflow-$setup-$dag.txt"
      "$AF_VENV/bin/airflow" dags trigger "$dag" > /dev/null
      # The run's state, read from Airflow's own metadata database.
      for _ in $(seq 1 2000); do
        state=$(python3 -c "import sqlite3, sys; r = sqlite3.connect(sys.argv[1]).execute('select state from dag_run where dag_id = ? order by id desc limit 1', (sys.argv[2],)).fetchone(); print(r[0] if r else '')" "$AIRFLOW_HOME/airflow.db" "$dag")
        case "$state" in success|failed) break ;; esac
        sleep 2
      done
      python3 bench/orchestrate_gaps.py "airflow-$setup" "$marks/airflow-$setup-$dag.txt" "$dag" "$dag" "$SLOTS" | tee -a "$dir/results.jsonl"
    done
    stop_airflow
  done
fi
