"""What asyncio task markers cost, in instructions counted by callgrind (repeatable on a busy machine).

Usage::

    python bench/asyncio_instructions.py                                   # the running Python
    python bench/asyncio_instructions.py --python /work/venv/3.10/bin/python
    python bench/asyncio_instructions.py --base /path/to/another/checkout  # and that checkout's figures

Two workloads run under ``valgrind --tool=callgrind``, each with N and 3N repetitions; the
difference of the totals divided by 2N is the marginal cost of one repetition, start-up and
the session's fixed costs cancelling out:

- ``plain``: a call of a plain function (``f(i)``): what every traced call costs, which
  markers must leave alone;
- ``task``: ``await loop.create_task(job(i))`` of a one-line coroutine: the task marker
  (written in ``create_task``, encoded by the drain) and the done callback that sees a
  rename (``Task.set_name``), on top of the task's own calls.

Each runs three ways in the same checkout: ``untraced`` (no session), ``no markers`` (in a
session, with ``create_task`` put back: :func:`handit.instrument.asyncio_tasks.uninstall`)
and ``traced`` (in a session, as shipped). The markers' cost is ``traced`` minus ``no
markers``. The records are drained at the session's stop, in the program's thread (no drain
thread: ``handit.drain.BACKGROUND = False``), so the main thread's count holds recording,
markers and encoding, the same run after run. Traced runs check that every call arrived.
``--base`` adds the same figures for another checkout (built for the Python used).
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
import handit.drain

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

kind, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
handit.configure(engine="compiled")
# no drain thread: its wake-ups follow wall time (slower under valgrind and load) and moved
# work between the session and its stop run to run; the records are drained at the stop, in
# this thread, so every count is the same run after run
handit.drain.BACKGROUND = False


def run(k):
    return plain(k) if kind == "plain" else asyncio.run(tasks(k))


if mode == "untraced":
    run(10)  # caches filled
    total = run(n)
else:
    from handit.instrument import asyncio_tasks

    for tag, k in (("warm", 10), ("measured", n)):  # the first fills caches
        with handit.session(tag) as s:
            if mode == "nomarkers":
                asyncio_tasks.uninstall()  # create_task as asyncio has it
            total = run(k)
    want = n + 2  # run(), the loop and its calls
    assert s.stats["calls"] == want, (s.stats, want)
assert total == n * (n - 1) // 2, total
'''


MODES = ("untraced", "nomarkers", "traced")


def instructions(python: str, checkout: str, kind: str, mode: str, n: int) -> tuple[int, int]:
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
             script, kind, mode, str(n)],
            capture_output=True, text=True, env=env, cwd=tmp, timeout=1800,
        )
        if out.returncode != 0:
            raise SystemExit(f"{checkout}: {kind} {mode} x {n} failed:\n{out.stderr[-2000:]}")
        m = re.search(r"Collected : (\d+)", out.stderr)
        with open(f"{tmp}/cg.out-01") as fh:  # the main thread's own file
            main_thread = re.search(r"^(?:summary|totals): (\d+)", fh.read(), re.M)
        if m is None or main_thread is None:
            raise SystemExit(f"no callgrind total in:\n{out.stderr[-2000:]}")
        return int(main_thread.group(1)), int(m.group(1))


def per_repetition(python: str, checkout: str, kind: str, mode: str, n: int) -> tuple[float, float]:
    """Instructions one more repetition of ``kind`` costs (3N run minus N run, over 2N): main thread, all."""
    long, short = instructions(python, checkout, kind, mode, 3 * n), instructions(python, checkout, kind, mode, n)
    return (long[0] - short[0]) / (2 * n), (long[1] - short[1]) / (2 * n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--base", help="another checkout to measure the same way (its extension built)")
    parser.add_argument("-n", type=int, default=2000, help="repetitions of the short run (the long one: 3n)")
    parser.add_argument("--kind", choices=("plain", "task"), action="append", help="workloads (default: both)")
    args = parser.parse_args()
    checkouts = [("this", ROOT)] + ([("base", args.base)] if args.base else [])
    print(f"{'per repetition':<30} {'untraced':>10} {'no markers':>10} {'traced':>10} {'markers':>10}")
    for name, checkout in checkouts:
        for kind in args.kind or ("plain", "task"):
            got = {mode: per_repetition(args.python, checkout, kind, mode, args.n) for mode in MODES}
            for i, where in enumerate(("main thread", "all threads")):
                row = [got[mode][i] for mode in MODES]
                print(f"{name + ': ' + kind + ', ' + where:<30} " + " ".join(f"{v:>10,.0f}" for v in row)
                      + f" {row[2] - row[1]:>+10,.0f}", flush=True)


if __name__ == "__main__":
    main()
