"""What asyncio task markers cost, in instructions counted by callgrind (repeatable on a busy machine).

Usage::

    python bench/asyncio_instructions.py --base /path/to/a/checkout/without/markers
    python bench/asyncio_instructions.py --base /path/to/main --python /work/venv/3.13/bin/python

Two workloads run inside one session under ``valgrind --tool=callgrind``, each with N and
3N repetitions, for this checkout and for ``--base`` (both built for the Python used); the
difference of the totals divided by 2N is the marginal cost of one repetition, start-up
and the session's fixed costs cancelling out:

- ``plain``: a call of a plain function (``f(i)``): what every traced call costs, which
  markers must leave alone;
- ``task``: ``await loop.create_task(job(i))`` of a one-line coroutine: the task marker
  (written in ``create_task``, encoded by the drain) on top of the task's own calls.

Each run checks that every call arrived. The table gives both checkouts side by side and
the difference (this checkout minus the base).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKLOAD = r'''
import asyncio
import sys
import handit

def f(i):
    return i

async def job(i):
    return i

async def tasks(n):
    loop = asyncio.get_running_loop()
    total = 0
    for i in range(n):
        total += await loop.create_task(job(i))
    return total

def plain(n):
    total = 0
    for i in range(n):
        total += f(i)
    return total

kind, n = sys.argv[1], int(sys.argv[2])
handit.configure(engine="compiled")
with handit.session("warm"):  # caches filled
    plain(10)
    asyncio.run(tasks(10))
with handit.session("measured") as s:
    total = plain(n) if kind == "plain" else asyncio.run(tasks(n))
assert total == n * (n - 1) // 2, total
want = n + 1  # the loop and its calls
assert s.stats["calls"] == want, (s.stats, want)
'''


def instructions(python: str, checkout: str, kind: str, n: int) -> tuple[int, int]:
    """Instructions callgrind counts for one run of the workload: ``(main thread, all threads)``.

    The main thread's count is what the program's own thread runs (recording, markers); the
    total adds the drain thread, whose wake-ups follow wall time (slower under load).
    """
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "markers.py")
        with open(script, "w") as fh:
            fh.write(WORKLOAD)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HANDIT_")}
        env.update(PYTHONPATH=checkout, HANDIT_INCLUDE="__main__", HANDIT_REQUIRE_COMPILED="1")
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={tmp}/cg.out", python,
             script, kind, str(n)],
            capture_output=True, text=True, env=env, cwd=tmp, timeout=1800,
        )
        if out.returncode != 0:
            raise SystemExit(f"{checkout}: {kind} x {n} failed:\n{out.stderr[-2000:]}")
        m = re.search(r"Collected : (\d+)", out.stderr)
        with open(f"{tmp}/cg.out-01") as fh:  # the main thread's own file
            main_thread = re.search(r"^(?:summary|totals): (\d+)", fh.read(), re.M)
        if m is None or main_thread is None:
            raise SystemExit(f"no callgrind total in:\n{out.stderr[-2000:]}")
        return int(main_thread.group(1)), int(m.group(1))


def per_repetition(python: str, checkout: str, kind: str, n: int) -> tuple[float, float]:
    """Instructions one more repetition of ``kind`` costs (3N run minus N run, over 2N): main thread, all."""
    long, short = instructions(python, checkout, kind, 3 * n), instructions(python, checkout, kind, n)
    return (long[0] - short[0]) / (2 * n), (long[1] - short[1]) / (2 * n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--base", required=True, help="a checkout without task markers (its extension built)")
    parser.add_argument("-n", type=int, default=2000, help="repetitions of the short run (the long one: 3n)")
    parser.add_argument("--kind", choices=("plain", "task"), action="append", help="workloads (default: both)")
    args = parser.parse_args()
    print(f"{'per repetition':<22} {'base':>10} {'this':>10} {'this-base':>10}")
    for kind in args.kind or ("plain", "task"):
        base = per_repetition(args.python, args.base, kind, args.n)
        this = per_repetition(args.python, ROOT, kind, args.n)
        for i, where in enumerate(("main thread", "all threads")):
            print(f"{kind + ', ' + where:<22} {base[i]:>10,.0f} {this[i]:>10,.0f} {this[i] - base[i]:>+10,.0f}", flush=True)


if __name__ == "__main__":
    main()
