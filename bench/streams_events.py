#!/usr/bin/env python3
"""Writes the streams benchmark's events as JSON lines: N events over 1,000 keys, event time
from the data (100,000 events per second of event time, so 100 per key in each 1-second
window), one event in fifty up to 400 ms out of order.

    streams_events.py N > events.jsonl
    streams_events.py --live RATE SECONDS | weir log produce live   # event time = now, paced
"""

import datetime
import random
import sys


def live(rate: int, seconds: int) -> None:
    """RATE events a second for SECONDS, stamped with the wall clock, in bursts of a tenth of a
    second: the latency benchmark's traffic."""
    import time

    rnd = random.Random(7)
    start = time.time()
    sent = 0
    while time.time() - start < seconds:
        due = int((time.time() - start) * rate)
        now = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        sys.stdout.write("".join('{"k":"k%d","ts":"%s","v":1}\n' % (rnd.randrange(1000), now) for _ in range(due - sent)))
        sys.stdout.flush()
        sent = due
        time.sleep(0.1)


def main() -> None:
    if sys.argv[1] == "--live":
        live(int(sys.argv[2]), int(sys.argv[3]))
        return
    n = int(sys.argv[1])
    rnd = random.Random(7)
    t0 = datetime.datetime(2026, 12, 2, 10, 0, 0)
    out = sys.stdout
    lines = []
    for i in range(n):
        ms = i // 100
        if i % 50 == 0:
            ms = max(0, ms - rnd.randrange(400))
        ts = (t0 + datetime.timedelta(milliseconds=ms)).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        lines.append('{"k":"k%d","ts":"%s","v":%d}\n' % (rnd.randrange(1000), ts, i % 100))
        if len(lines) == 100_000:
            out.write("".join(lines))
            lines.clear()
    out.write("".join(lines))


if __name__ == "__main__":
    main()
