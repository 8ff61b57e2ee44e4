#!/usr/bin/env python3
"""Times a command: one warm-up run, then N timed runs; prints "median_seconds peak_rss_mb".

    timeit.py N [--fresh PATH]... CMD [ARG...]   (run in the folder the command should run in)

Each --fresh PATH (a file or folder) is deleted before every run, so each run starts cold
(`--fresh target` for a compiler's output and caches).

Wall time comes from time.perf_counter around each run, peak memory from the children's
maximum resident set size (getrusage), so the figure covers the command alone.
"""

import os
import resource
import shutil
import statistics
import subprocess
import sys
import time


def main() -> None:
    n, args = int(sys.argv[1]), sys.argv[2:]
    fresh = []
    while len(args) >= 2 and args[0] == "--fresh":
        fresh.append(args[1])
        args = args[2:]
    cmd = args

    def clear() -> None:
        for path in fresh:
            shutil.rmtree(path, ignore_errors=True)
            try:
                os.remove(path)
            except OSError:
                pass

    clear()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times = []
    for _ in range(n):
        clear()
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"{statistics.median(times):.3f} {peak_kb // 1024}")


if __name__ == "__main__":
    main()
