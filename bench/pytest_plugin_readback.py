"""A failed test's session read back from the plugin's trace file after a large earlier session.

Usage::

    PYTHONPATH=. python bench/pytest_plugin_readback.py            # 3,000,000 calls before
    PYTHONPATH=. python bench/pytest_plugin_readback.py 300000

The plugin's sessions keep no block in memory (the trace file holds them), so a failed
test's tree is read back from the file. Side by side, in one run: the session's blocks
read from where it began (what ``Session.iter_calls`` does) and read from the file's start
(the whole file, as before). Both must find the session's 3 calls (exit status 1 otherwise).
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import handit
from handit.tracefile import iter_session_blocks


def step(i: int) -> int:
    return i


def main(earlier_calls: int) -> int:
    tmp = tempfile.mkdtemp(prefix="handit-readback-")
    try:
        path = os.path.join(tmp, "t.handit")
        handit.configure(output_file=path, capture="args")
        with handit.session("earlier"):
            for i in range(earlier_calls):
                step(i)
        with handit.session("failed") as s:
            for i in range(3):
                step(i)
        t0 = time.perf_counter()
        calls = sum(1 for e in s.iter_calls() if e["type"] == "call")
        t1 = time.perf_counter()
        whole = sum(1 for _ in iter_session_blocks(path, s.id, 0))
        t2 = time.perf_counter()
        print(f"trace file {os.path.getsize(path) / 1e6:.0f} MB ({earlier_calls:,} calls before the session)")
        print(f"  from where the session began: {calls} calls in {1000 * (t1 - t0):.1f} ms (what the plugin does)")
        print(f"  from the file's start:        {whole} block(s) in {1000 * (t2 - t1):.1f} ms (blocks only, not decoded)")
        return 0 if calls == 3 and whole >= 1 else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3_000_000))
