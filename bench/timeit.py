#!/usr/bin/env python3
"""Times a command: one warm-up run, then N timed runs; prints "median_seconds peak_rss_mb".

    timeit.py N CMD [ARG...]      (run in the folder the command should run in)

Wall time comes from time.perf_counter around each run, peak memory from the children's
maximum resident set size (getrusage), so the figure covers the command alone.
"""

import resource
import statistics
import subprocess
import sys
import time


def main() -> None:
    n, cmd = int(sys.argv[1]), sys.argv[2:]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"{statistics.median(times):.3f} {peak_kb // 1024}")


if __name__ == "__main__":
    main()
