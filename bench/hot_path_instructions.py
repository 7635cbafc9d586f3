"""The timing-only hot path in instructions per call, counted by callgrind (repeatable on a busy machine).

Usage::

    python bench/hot_path_instructions.py                      # this checkout, the running Python (3.12+)
    python bench/hot_path_instructions.py --python /work/venv/3.13/bin/python --handit /path/to/checkout

The micro-workload of ``bench/report.py`` (``rec(50)``, 51 calls each) runs under
``valgrind --tool=callgrind`` with 200 and then 400 repetitions, once untraced, once
under the no-op sys.monitoring callback, once under the callback that stores one TSC
reading per event (the floor of issue 9.7) and once in a handit session with
``capture="timing"``; the difference of the totals divided by the 10,200 calls between
them is the marginal cost of one call, start-up and fixed costs cancelling out; the
instructions of the callbacks themselves (``sysmon_py_start``/``sysmon_py_return``, and
the floor's) are read from ``callgrind_annotate --inclusive=yes``. Each traced run checks
that every call arrived. Instructions are not time (``rdtsc`` is one instruction of ~20
cycles), so the wall-clock ratio is ``bench/report.py``'s; this one says where the
instructions went, the same on every run.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile

from argmix_instructions import callgrind, checkout_args  # bench/ is sys.path[0] when this file is run

WORKLOAD = r'''
import sys
import handit
from handit import _tracer

def rec(depth, label, weight):
    if depth == 0:
        return weight
    return rec(depth - 1, label, weight) + 1

def run(reps):
    total = 0.0
    for _ in range(reps):
        total += rec(50, "abc", 1.5)
    return total

mode, reps = sys.argv[1], int(sys.argv[2])
run(5)
if mode == "untraced":
    total = run(reps)
elif mode in ("floor", "floor-tsc"):
    mon = sys.monitoring
    cb = _tracer.tsc_floor_callback if mode == "floor-tsc" else _tracer.noop_callback
    mon.use_tool_id(4, "floor")
    mon.register_callback(4, mon.events.PY_START, cb)
    mon.register_callback(4, mon.events.PY_RETURN, cb)
    mon.set_events(4, mon.events.PY_START | mon.events.PY_RETURN)
    n0 = _tracer.tsc_floor_events()
    total = run(reps)
    n1 = _tracer.tsc_floor_events()
    mon.set_events(4, 0)
    mon.free_tool_id(4)
    if mode == "floor-tsc":
        assert n1 - n0 == 2 * (1 + 51 * reps), (n1 - n0, reps)
else:
    handit.configure(capture="timing", engine="compiled", source="sysmon")
    with handit.session("warm"):
        run(5)
    with handit.session("hot") as s:
        total = run(reps)
    assert s.stats["calls"] == 1 + 51 * reps, s.stats
assert total == reps * 51.5, total
'''

MODES = ("untraced", "floor", "floor-tsc", "handit")
LOW, HIGH = 200, 400
CALLBACKS = {  # the callbacks whose instructions (inclusive) are counted, by mode
    "floor-tsc": re.compile(r"_c_tsc_floor$"),
    "handit": re.compile(r"_c_py_(start|return)(_first)?$"),
}


def instructions(python: str, handit_dir: str, mode: str, reps: int) -> tuple[int, int]:
    """Instructions callgrind counts for one run of the workload: in all, and in the mode's callbacks."""
    with tempfile.TemporaryDirectory() as tmp:
        total = callgrind(python, handit_dir, WORKLOAD, [mode, str(reps)], tmp)
        if mode not in CALLBACKS:
            return total, 0
        annotated = subprocess.run(
            ["callgrind_annotate", "--inclusive=yes", "--auto=no", "--threshold=100", f"{tmp}/cg.out"],
            capture_output=True, text=True, check=True, cwd=tmp,  # (paths relative to the cwd are split off)
        ).stdout
        own = 0
        for line in annotated.splitlines():  # whole functions only: "N (p%)  file:function [object]"
            m = re.match(r"\s*([\d,]+) \([^)]*\)\s+\S+:(\S+) \[", line)
            if m and CALLBACKS[mode].search(m.group(2)):
                own += int(m.group(1).replace(",", ""))
        return total, own


def main(argv: list[str] | None = None) -> int:
    args = checkout_args(__doc__, argv)
    calls = (HIGH - LOW) * 51
    per_call = {}
    for mode in MODES:
        low = instructions(args.python, args.handit, mode, LOW)
        high = instructions(args.python, args.handit, mode, HIGH)
        per_call[mode] = ((high[0] - low[0]) / calls, (high[1] - low[1]) / calls)
    base = per_call["untraced"][0]
    print(f"untraced   {base:8.1f} instructions a call")
    for mode in MODES[1:]:
        total, own = per_call[mode]
        print(f"{mode:10s} +{total - base:7.1f} instructions a call" + (f", {own:.1f} in its callbacks" if own else ""))
    print("(handit's total includes the drain's encoding and the summary's per-call work; its callbacks are the hot path)")
    print(f"handit's callbacks / the clock-storing floor's: {per_call['handit'][1] / per_call['floor-tsc'][1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
