"""What the profile-function source costs a C call, in instructions counted by callgrind (3.10/3.11).

Usage::

    python bench/c_call_instructions.py                      # this checkout, the running Python
    python bench/c_call_instructions.py --python /work/venv/3.10/bin/python --handit /path/to/checkout

Before 3.12 a profile function is called for every C call and its return, traced
function or not. A traced function makes ``len()`` calls in a loop inside one
session (``capture="timing"``) under ``valgrind --tool=callgrind``, with 20,000 and
then 60,000 C calls; the difference of the totals divided by 40,000 is the
marginal cost of one C call (its call and return events plus the loop's own
bytecode), start-up and the session's fixed costs cancelling out. The same
difference without handit is printed beside it: the gap is handit's. The run checks
that the traced calls arrived. Issue 11.7: telling ``g.close()`` apart from other C
calls is part of that gap.
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

ITEMS = (1, 2, 3)

def burst(k):
    n = 0
    for _ in range(k):
        n += len(ITEMS)
    return n

def workload(c_calls):
    total = 0
    for _ in range(c_calls // 100):
        total += burst(100)
    return total

traced, c_calls = sys.argv[1] == "traced", int(sys.argv[2])
if traced:
    handit.configure(capture="timing", engine="compiled", source="setprofile")
    with handit.session("warm"):
        workload(100)
    with handit.session("c-calls") as s:
        total = workload(c_calls)
    assert s.stats["calls"] == c_calls // 100 + 1, s.stats
else:
    workload(100)
    total = workload(c_calls)
assert total == c_calls * 3, total
'''


def instructions(python: str, handit_dir: str, traced: bool, c_calls: int) -> tuple[int, int]:
    """Instructions callgrind counts for one run of the workload: in all, and in handit's
    profile function (``profile_call`` and what it calls; 0 untraced)."""
    with tempfile.TemporaryDirectory() as tmp:
        total = callgrind(python, handit_dir, WORKLOAD, ["traced" if traced else "bare", str(c_calls)], tmp)
        annotated = subprocess.run(
            ["callgrind_annotate", "--inclusive=yes", f"{tmp}/cg.out"], capture_output=True, text=True, check=True
        ).stdout
        own = re.search(r"^\s*([\d,]+) .*profile_call[^_\w]", annotated, re.M)
        return total, int(own.group(1).replace(",", "")) if own else 0


def main(argv: list[str] | None = None) -> int:
    args = checkout_args(__doc__, argv)
    per_call = {}
    for traced in (False, True):
        low = instructions(args.python, args.handit, traced, 20000)
        high = instructions(args.python, args.handit, traced, 60000)
        per_call[traced] = ((high[0] - low[0]) / 40000, (high[1] - low[1]) / 40000)
    print(f"untraced {per_call[False][0]:8,.1f} instructions a C call")
    print(f"traced   {per_call[True][0]:8,.1f} instructions a C call")
    print(f"in handit's profile_call: {per_call[True][1]:,.1f} instructions a C call (its call and return events)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
