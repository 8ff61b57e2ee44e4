"""Writes a pipeline's history into a Weir SQLite store, as a scheduler would have left it:
N runs a minute apart, newest now, each of the pipeline's tasks a few seconds after the one
before it, one run in twenty failed at a task. Used by bench/ui.sh.

    python3 bench/ui_history.py STORE.db PIPELINE RUNS
"""

import datetime
import random
import sqlite3
import sys

store, pipeline, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
db = sqlite3.connect(store)
tasks = [f"t{c}_{i}" for c in range(5) for i in range(10)]
now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
iso = lambda t: t.isoformat(timespec="milliseconds").replace("+00:00", "Z")
rng = random.Random(7)
run_rows, task_rows = [], []
for n in range(runs):
    start = now - datetime.timedelta(minutes=runs - n)
    failed_at = rng.randrange(10) if n % 20 == 7 else None
    run_id = f"scheduled__{iso(start)}"
    end = start
    for t in tasks:
        chain_pos = int(t.split("_")[1])
        t_start = start + datetime.timedelta(seconds=3 * chain_pos)
        t_end = t_start + datetime.timedelta(seconds=rng.uniform(0.5, 3))
        end = max(end, t_end)
        if failed_at is None or chain_pos < failed_at:
            state = "success"
        elif chain_pos == failed_at:
            state = "failed"
        else:
            state = "upstream_failed"
        started = iso(t_start) if state != "upstream_failed" else None
        finished = iso(t_end) if state != "upstream_failed" else None
        task_rows.append((pipeline, run_id, t, state, 1, started, finished, None, 1))
    state = "failed" if failed_at is not None else "success"
    run_rows.append((pipeline, run_id, "scheduled", state, iso(start), iso(start + datetime.timedelta(minutes=1)),
                     "{}", iso(start), iso(start), iso(end), None, None))
with db:
    db.executemany("insert into weir_pipeline_runs (pipeline, run_id, run_type, state, interval_start, interval_end, params, "
                   "queued_at, started_at, finished_at, message, owner) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", run_rows)
    db.executemany("insert into weir_task_instances (pipeline, run_id, task, state, try_number, started_at, finished_at, "
                   "message, max_tries) values (?, ?, ?, ?, ?, ?, ?, ?, ?)", task_rows)
print(f"{len(run_rows)} runs, {len(task_rows)} task instances")
