"""Scheduling overhead from the tasks' own marks: every task's command writes one line,
`TASK START_NS END_NS`, read from the clock as its shell starts and just before it exits, so
both tools are measured over the same span. For a chain, the gap from each task's end to the
next task's start; for a fan-out, from the end that freed a slot to the start it allowed.
Prints one JSON line of figures.

    orchestrate_gaps.py TOOL MARKS_FILE DAG chain|fanout SLOTS
"""

import json
import statistics
import sys


def spans(path):
    out = []
    for line in open(path):
        parts = line.split()
        if len(parts) == 3:
            out.append((int(parts[1]) / 1e9, int(parts[2]) / 1e9))
    return out


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
    tool, marks, dag, kind, slots = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    s = spans(marks)
    g = gaps(s, kind, slots)
    wall = max(e for _, e in s) - min(b for b, _ in s)
    print(json.dumps({
        "tool": tool, "dag": dag, "tasks": len(s),
        "median_gap_ms": round(statistics.median(g) * 1000, 2),
        "p95_gap_ms": round(sorted(g)[int(len(g) * 0.95)] * 1000, 2),
        "wall_per_task_ms": round(wall / len(s) * 1000, 2),
        "wall_s": round(wall, 2),
    }))


if __name__ == "__main__":
    main()
