"""Scheduling overhead from task start/end times: for a chain, the gap from each task's end
to the next task's start; for a fan-out, the gap from the end that freed a slot to the start
it allowed. Reads Weir's `--log-format json` events (task_started / task_finished lines) or an
Airflow metadata database (task_instance rows), prints one JSON line of figures."""

import json
import sqlite3
import statistics
import sys
from datetime import datetime


def parse(ts):
    # Python 3.11 reads RFC 3339 with up to microseconds; cut nanoseconds to that.
    if "." in ts:
        head, frac = ts.split(".", 1)
        digits = "".join(c for c in frac if c.isdigit())
        zone = frac[len(digits):]
        ts = f"{head}.{digits[:6]}{zone}"
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def weir_spans(path, run_filter=None):
    starts, ends = {}, {}
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        e = json.loads(line)
        if e.get("event") == "task_started":
            starts.setdefault(e["task"], parse(e["ts"]))
        elif e.get("event") == "task_finished":
            ends[e["task"]] = parse(e["ts"])
    return [(starts[t], ends[t]) for t in starts if t in ends]


def airflow_spans(db, dag):
    con = sqlite3.connect(db)
    rows = con.execute(
        "select start_date, end_date from task_instance where dag_id = ? and start_date is not null and end_date is not null",
        (dag,),
    ).fetchall()
    return [(parse(s.replace(" ", "T")), parse(e.replace(" ", "T"))) for s, e in rows]


def gaps(spans, kind, slots):
    spans = sorted(spans)
    if kind == "chain":
        return [b[0] - a[1] for a, b in zip(spans, spans[1:])]
    # Fan-out: once the first `slots` tasks started, each start waited for some end.
    ends = sorted(e for _, e in spans)
    out = []
    for s, _ in spans[slots:]:
        before = [e for e in ends if e <= s]
        if before:
            out.append(s - before[-1])
    return out


def main():
    source, where, name, kind, slots = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    spans = weir_spans(where) if source == "weir" else airflow_spans(where, name)
    g = gaps(spans, kind, slots)
    wall = max(e for _, e in spans) - min(s for s, _ in spans)
    runs = [e - s for s, e in spans]
    print(json.dumps({
        "tool": source, "dag": name, "tasks": len(spans),
        "median_gap_ms": round(statistics.median(g) * 1000, 2),
        "p95_gap_ms": round(sorted(g)[int(len(g) * 0.95)] * 1000, 2),
        "median_task_s": round(statistics.median(runs), 4),
        "wall_s": round(wall, 2),
    }))


if __name__ == "__main__":
    main()
