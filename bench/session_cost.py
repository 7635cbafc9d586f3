"""What an empty session's start and stop costs, as a server with a session per request pays it.

    python bench/session_cost.py            # from the repository root, handit importable

Prints the median wall time of one ``start`` + ``stop`` (``perf_counter_ns`` around each
pair, the median of 7 runs of 2,000 pairs), sessions per second on one thread (20,000 back
to back), and the RSS and Python memory blocks gained over 100,000 sessions (one in 100
records a call). Checks that every session stopped, the calls arrived, and none is left
active, so a broken pipeline cannot look fast.
"""
from __future__ import annotations

import gc
import os
import statistics
import sys
import time

import handit


def step(n: int) -> int:
    return n + 1


def _rss_kb() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def main() -> None:
    start, stop = handit.start, handit.stop
    for _ in range(2000):  # warm up: the engine installed, caches filled
        stop(start("warm"))
    medians = []
    for _ in range(7):
        samples = []
        for _ in range(2000):
            t0 = time.perf_counter_ns()
            s = start("cycle")
            stop(s)
            samples.append(time.perf_counter_ns() - t0)
        medians.append(statistics.median(samples))
    n = 20_000
    t0 = time.perf_counter()
    for _ in range(n):
        stop(start("cycle"))
    rate = n / (time.perf_counter() - t0)
    gc.collect()
    rss0, blocks0 = _rss_kb(), sys.getallocatedblocks()
    calls = 0
    for i in range(100_000):
        s = start("cycle")
        if i % 100 == 0:
            step(i)
        stop(s)
        calls += s.stats["calls"]
    gc.collect()
    if calls != 1_000 or handit.current() is not None:
        raise SystemExit(f"broken: {calls} calls recorded (expected 1000), current session {handit.current()!r}")
    engine, source, _ = handit.sessions.engine_info() or ("", "", "")
    print(f"Python {sys.version.split()[0]}, {engine} engine, {source}")
    print(f"start+stop: median {statistics.median(medians) / 1e3:.1f} us "
          f"(runs: {', '.join(f'{m / 1e3:.1f}' for m in medians)})")
    print(f"sessions/s on one thread: {rate:,.0f}")
    print(f"over 100,000 sessions: RSS {_rss_kb() - rss0:+,} kB, Python memory blocks {sys.getallocatedblocks() - blocks0:+,}")


if __name__ == "__main__":
    main()
