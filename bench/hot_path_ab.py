"""The timing-only hot path of two (or more) checkouts side by side, in thread CPU time (steadier on a busy machine).

Usage::

    python bench/hot_path_ab.py --checkout /path/to/before --checkout .          # the running Python (3.12+)
    python bench/hot_path_ab.py --python /work/venv/3.13/bin/python --checkout A --checkout B --rounds 10

Each round runs every checkout once, in turn, in a child process with that checkout
first on the path (its extensions built in place); the child measures the
micro-workload of ``bench/report.py`` (``run()``: 102,001 calls) untraced, under the
no-op sys.monitoring floor, under the floor that stores one TSC reading per event, and
in a handit session with ``capture="timing"`` (background drain held off, as
``bench/report.py``'s hot-path figure), ``--reps`` times each, interleaved. Every figure
is the minimum over all rounds of ``time.thread_time_ns`` around the workload: the
thread's own CPU time, which other processes' time slices on a loaded machine do not
enter (wall-clock minima did not settle at a load of 6 here). Each traced run checks
the number of calls that arrived (the floor: readings stored).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r'''
import gc, json, sys, time
sys.path.insert(1, BENCH)
import handit
from handit import _tracer
import _measure
import _workloads as wl

N = wl.expected_calls()

def untraced():
    t0 = time.thread_time_ns(); result = wl.run(); ns = time.thread_time_ns() - t0
    assert result == wl.run_result(), result
    return ns

def floor(tsc):
    fl = wl.floor_for("sysmon", tsc)
    fl.start()
    try:
        n0 = _tracer.tsc_floor_events()
        t0 = time.thread_time_ns(); result = wl.run(); ns = time.thread_time_ns() - t0
        n1 = _tracer.tsc_floor_events()
    finally:
        fl.stop()
    assert result == wl.run_result(), result
    assert not tsc or n1 - n0 >= 2 * N, (n1 - n0, N)
    return ns

def timing():
    handit.configure(capture="timing", engine="compiled", source="sysmon")
    try:
        with _measure.drain_held():
            s = handit.start("ab")
            try:
                t0 = time.thread_time_ns(); result = wl.run(); ns = time.thread_time_ns() - t0
            finally:
                handit.stop(s)
    finally:
        handit.reset_config()
    assert result == wl.run_result() and s.stats["calls"] == N, (result, s.stats)
    return ns

measures = {"untraced": untraced, "floor": lambda: floor(False), "tsc": lambda: floor(True), "handit": timing}
best = {k: float("inf") for k in measures}
for _ in range(REPS):
    for k, f in measures.items():
        gc.collect()
        best[k] = min(best[k], f() / N)
print(json.dumps(best))
'''


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--checkout", action="append", required=True, help="a checkout (repeat: measured side by side)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--reps", type=int, default=12, help="repetitions of each measurement in one round")
    args = parser.parse_args(argv)
    code = CHILD.replace("BENCH", repr(HERE)).replace("REPS", str(args.reps))
    best: dict[str, dict[str, float]] = collections.defaultdict(lambda: collections.defaultdict(lambda: float("inf")))
    for _ in range(args.rounds):
        for checkout in args.checkout:
            env = {k: v for k, v in os.environ.items() if not k.startswith("HANDIT_")}
            env["PYTHONPATH"] = os.path.abspath(checkout)
            out = subprocess.run([args.python, "-c", code], capture_output=True, text=True, env=env, timeout=600)
            if out.returncode != 0:
                raise SystemExit(f"{checkout}: {out.stderr[-2000:]}")
            for name, ns in json.loads(out.stdout.splitlines()[-1]).items():
                best[checkout][name] = min(best[checkout][name], ns)
    for checkout in args.checkout:
        b = best[checkout]
        added = {k: b[k] - b["untraced"] for k in ("floor", "tsc", "handit")}
        print(f"{checkout}: untraced {b['untraced']:.1f} ns a call; no-op floor +{added['floor']:.1f}, "
              f"TSC-storing floor +{added['tsc']:.1f}, handit timing +{added['handit']:.1f} "
              f"= {added['handit'] / added['tsc']:.2f}x the TSC-storing floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
