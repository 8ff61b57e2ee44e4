#!/usr/bin/env python3
"""The streams benchmark's reference: the same job in Flink SQL (PyFlink), parallelism 1,
reading the same JSON lines from a file, writing to a blackhole sink; prints the seconds from
submitting the job to its end.

    streams_flink.py events.jsonl tumble|hop|session|filtered
"""

import sys
import time

from pyflink.table import EnvironmentSettings, TableEnvironment

WINDOWS = {
    "tumble": "TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '1' SECOND)",
    "hop": "HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '1' MINUTE, INTERVAL '5' MINUTE)",
    "session": "SESSION(TABLE events PARTITION BY k, DESCRIPTOR(ts), INTERVAL '30' SECOND)",
    "filtered": "TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '1' SECOND)",
}
# Jobs with a `where` (the rest read every event).
FILTERS = {"filtered": " WHERE v % 10 <> 0"}


def main() -> None:
    path, window = sys.argv[1], sys.argv[2]
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    env.get_config().set("parallelism.default", "1")
    env.execute_sql(
        f"""CREATE TABLE events (k STRING, ts TIMESTAMP(3), v BIGINT,
              WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
            WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'json',
                  'json.timestamp-format.standard' = 'SQL')"""
    )
    env.execute_sql(
        "CREATE TABLE sink (k STRING, window_start TIMESTAMP(3), window_end TIMESTAMP(3), n BIGINT) WITH ('connector' = 'blackhole')"
    )
    start = time.perf_counter()
    env.execute_sql(
        f"INSERT INTO sink SELECT k, window_start, window_end, COUNT(*) FROM TABLE({WINDOWS[window]}){FILTERS.get(window, '')} "
        "GROUP BY k, window_start, window_end"
    ).wait()
    print(f"{time.perf_counter() - start:.3f}")


if __name__ == "__main__":
    main()
