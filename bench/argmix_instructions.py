"""The realistic argument mix in instructions per call, counted by callgrind (repeatable on a busy machine).

Usage::

    python bench/argmix_instructions.py                      # this checkout, the running Python
    python bench/argmix_instructions.py --python /work/venv/3.13/bin/python --handit /path/to/checkout

The workload of ``bench/test_bench_preview.py`` — ``handle(record, numbers, obj, text)``
with a 5-key dict of short strings, a list of 10 ints, a plain object and a
200-character string, plus its return value — runs inside one session under
``valgrind --tool=callgrind`` with 2,000 and then 6,000 calls, once with
``capture="timing"`` and once with ``capture="args"``; the difference of the totals
divided by 4,000 is the marginal cost of one call, start-up and the session's fixed
costs cancelling out. Each run checks that every call arrived (and its previews).
``args − timing`` is what the previews cost a call on top of timing capture (issue 9.3:
at most 1.5 µs; at ~3 instructions a ns here, about 4,500 instructions).
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
import sys
import handit

class Customer:
    def __init__(self):
        self.name = "alice"

RECORD = {"name": "alice", "city": "paris", "role": "admin", "team": "core", "lang": "py"}
NUMBERS = list(range(10))
OBJ = Customer()
TEXT = ("The quick brown fox jumps over the lazy dog while the cat sleeps " * 4)[:200]

def handle(record, numbers, obj, text):
    return len(record) + len(numbers)

def workload(n):
    total = 0
    for _ in range(n):
        total += handle(RECORD, NUMBERS, OBJ, TEXT)
    return total

capture, calls = sys.argv[1], int(sys.argv[2])
handit.configure(capture=capture, engine="compiled")
with handit.session("warm") as w:  # caches filled; its events checked (decoding the big one would be counted)
    workload(10)
if capture == "args":
    last = [e for e in w.events if e["type"] == "call" and e["func"] == "handle"][-1]["args_preview"]
    assert last["obj"] == "<Customer>" and last["numbers"].endswith("(len=10)"), last
with handit.session("argmix") as s:
    total = workload(calls)
assert total == calls * 15 and s.stats["calls"] == calls + 1, (total, s.stats)
'''


def callgrind(python: str, handit_dir: str, workload: str, args: list[str], tmp: str) -> int:
    """Run ``workload`` (a script's text) with ``args`` under callgrind in ``tmp``, handit
    imported from ``handit_dir``; returns the total instructions (the profile is ``tmp/cg.out``)."""
    script = os.path.join(tmp, "workload.py")
    with open(script, "w") as fh:
        fh.write(workload)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDIT_")}
    env.update(PYTHONPATH=handit_dir, HANDIT_INCLUDE="__main__", HANDIT_REQUIRE_COMPILED="1", PYTHONHASHSEED="0")
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out", python, script, *args],
        capture_output=True, text=True, env=env, cwd=tmp, timeout=1800,
    )
    if out.returncode != 0:
        raise SystemExit(f"{args} failed:\n{out.stderr[-2000:]}")
    m = re.search(r"Collected : (\d+)", out.stderr)
    if m is None:
        raise SystemExit(f"no callgrind total in:\n{out.stderr[-2000:]}")
    return int(m.group(1))


def instructions(python: str, handit_dir: str, capture: str, calls: int) -> int:
    """Total instructions callgrind counts for one run of the workload."""
    with tempfile.TemporaryDirectory() as tmp:
        return callgrind(python, handit_dir, WORKLOAD, [capture, str(calls)], tmp)


def checkout_args(doc: str, argv: list[str] | None) -> argparse.Namespace:
    """``--python`` and ``--handit`` (the checkout to measure) from ``argv``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--handit", default=ROOT, help="checkout to import handit from (extension built in place)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = checkout_args(__doc__, argv)
    per_call = {}
    for capture in ("timing", "args"):
        low = instructions(args.python, args.handit, capture, 2000)
        high = instructions(args.python, args.handit, capture, 6000)
        per_call[capture] = (high - low) / 4000
        print(f"{capture:7s} {per_call[capture]:8,.0f} instructions a call")
    print(f"previews on top of timing: {per_call['args'] - per_call['timing']:,.0f} instructions a call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
