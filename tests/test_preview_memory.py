"""The program's memory is the program's: handit keeps no user object alive past its call.

Arguments, return values and exceptions are previewed at the event (small immutable
scalars aside), so an argument dies when the program drops it, a program measuring its
own memory with ``tracemalloc`` sees only a bounded amount of handit's, and passing big
strings does not raise the peak RSS.
"""
from __future__ import annotations

import gc
import importlib
import os
import subprocess
import sys
import textwrap
import threading
import tracemalloc
import weakref
from pathlib import Path

import pytest

import handit
from conftest import child_env



class Arg:
    def __init__(self, n: int) -> None:
        self.payload = [n] * 100


class Failure(Exception):
    pass


def take(obj, text, n):
    return n


def make(n):
    return Arg(n)


def fail(obj):
    raise Failure(obj)


def test_arguments_die_right_after_the_call(engine, monkeypatch):
    # no background drain: what handit holds stays held until the session's stop
    monkeypatch.setattr(importlib.import_module("handit.drain"), "BACKGROUND", False)
    handit.configure(capture="args")
    with handit.session("weak") as s:
        arg = Arg(1)
        ref = weakref.ref(arg)
        take(arg, "x" * 1000, 1)
        del arg
        gc.collect()
        assert ref() is None, "an argument outlived its call"

        ret = weakref.ref(make(2))
        gc.collect()
        assert ret() is None, "a return value outlived its call"

        inside = Arg(3)
        held = weakref.ref(inside)
        try:
            fail(inside)
        except Failure:
            pass
        del inside
        take(None, "", 0)  # a later call: the exception is not cached any more
        gc.collect()
        assert held() is None, "an exception's argument outlived its handling"
    assert [e["args_preview"] for e in s.events if e["type"] == "call" and e["func"] == "take"][0] == {
        "obj": "<Arg>",
        "text": "'" + "x" * 256 + "\u2026' (len=1000)",
        "n": "1",
    }


def _traced_size(snapshot: tracemalloc.Snapshot, before: tracemalloc.Snapshot) -> int:
    """Bytes allocated between two snapshots and still alive, the drains' left out.

    What a drain makes (the session's encoded blocks, the session's data out, bounded by
    HANDIT_MAX_SESSION_MEMORY) is not what capture holds.
    """
    drains = [tracemalloc.Filter(False, "*/handit/drain.py", all_frames=True), tracemalloc.Filter(False, tracemalloc.__file__)]
    stats = snapshot.filter_traces(drains).compare_to(before.filter_traces(drains), "filename")
    return sum(stat.size_diff for stat in stats)


def test_tracemalloc_sees_a_bounded_amount(engine):
    handit.configure(capture="args")
    obj = Arg(0)
    text = "some text argument " * 4
    calls = 20_000 if engine[0] == "compiled" else 4_000  # the pure engine is slow under tracemalloc
    with handit.session("warm-up"):  # code decided, caches filled: once per process, not per call
        take(obj, text, -1)
    gc.collect()
    tracemalloc.start(6)
    try:
        before = tracemalloc.take_snapshot()
        with handit.session("tracemalloc"):
            for i in range(calls):
                take(obj, text, i)
            during = tracemalloc.take_snapshot()
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    held_after = _traced_size(after, before)
    assert held_after < 64 * 1024, f"{held_after} bytes still traced after the session"
    if engine[0] == "compiled":
        # records and previews live in malloc'd memory that tracemalloc does not see (the
        # pure engine's records are Python tuples until the drain takes them)
        held_during = _traced_size(during, before)
        assert held_during < 32 * 1024, f"{held_during} bytes traced after {calls} calls"


def test_records_waiting_stay_within_one_budget_for_all_threads(engine, tmp_path, monkeypatch):
    """HANDIT_MAX_BUFFER_BYTES bounds the records waiting for the drain, every thread together:
    a hundred threads calling with previews into a session writing a file, and no drain thread
    (so the recording threads alone keep to it, doing the drain's work when it is reached).
    What the engine holds peaks near the budget, not at a hundred times a bound per thread
    (more-itertools' TestConcurrentTee: +1.4 GB peak RSS that way); every call arrives."""
    eng, _ = engine
    module = importlib.import_module("handit._tracer" if eng == "compiled" else "handit._fallback")
    monkeypatch.setattr(importlib.import_module("handit.drain"), "BACKGROUND", False)
    budget = 1 << 20
    handit.configure(capture="args", max_buffer_bytes=budget, output_file=str(tmp_path / "t.handit"))
    threads, calls = 100, (1000 if eng == "compiled" else 300)
    obj = Arg(0)
    text = "some text argument " * 4
    start = threading.Barrier(threads)

    def taker() -> None:
        start.wait()
        for i in range(calls):
            take(obj, text, i)

    with handit.session("threads") as s:
        take(obj, text, -1)  # the code is decided before the threads start
        module.reset_held_peak()
        workers = [threading.Thread(target=taker) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        peak = module.held_bytes()[1]
    assert s.stats["calls"] == threads * (calls + 1) + 1, s.stats  # (taker's own calls too)
    assert len([e for e in s.events if e["type"] == "call" and e["func"] == "take"]) == threads * calls + 1
    assert s.stats["blocks"] > threads  # drained by the threads as they went, not at the stop
    assert peak <= budget + 256 * 1024, f"{peak} bytes waiting at the peak (budget {budget})"


BLOCKS_ON_THEIR_WAY = textwrap.dedent(
    """
    import sys, tracemalloc
    import handit

    class Arg:
        def __init__(self, n):
            self.payload = [n] * 100

    def take(obj, text, n):
        return n

    handit.configure(engine=sys.argv[1], source=sys.argv[2], capture="args", output_file=sys.argv[3])
    obj = Arg(0)
    text = "some text argument " * 4
    with handit.session("tracemalloc") as s:
        take(obj, text, -1)
        tracemalloc.start()
        try:
            for i in range(20_000):  # the drain thread drains every 10 ms meanwhile
                take(obj, text, i)
            retained = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
    assert s.stats["calls"] == 20_001 and s.stats["blocks"] > 1, s.stats
    print(retained)
    """
)


def test_blocks_on_their_way_to_the_trace_file_stay_small(engine, tmp_path):
    # What more-itertools' test_repeated_zero_cache_peek_has_bounded_memory measures: all of
    # the traced memory, the drain's included, after 20,000 calls with previews. It holds by
    # construction, however far behind the drain is: blocks are encoded into malloc'd memory
    # and cut at 64 KiB (also those the drain thread encodes ahead: uncut, a drain waiting for
    # the GIL made 0.4-3.4 MB of bytes at once), made into bytes one at a time, each written
    # before the next without a joined copy, and a session writing a trace file keeps no copy
    # of them: at most a block and the writer's 64 KiB buffer (under three busy loops on two
    # cores: 4-68 KB on 3.10-3.13, both sources). In a process of its own, as that test runs:
    # here, threads left by earlier tests (servers, senders) allocated during the loop too.
    if engine[0] != "compiled":
        return  # the pure engine's records are Python objects until drained
    script = tmp_path / "prog.py"
    script.write_text(BLOCKS_ON_THEIR_WAY)
    r = subprocess.run([sys.executable, str(script), engine[0], engine[1], str(tmp_path / "t.handit")],
                       capture_output=True, text=True, cwd=tmp_path, env=child_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    retained = int(r.stdout.split()[-1])
    assert retained < 256 * 1024, f"{retained} bytes traced after 20,000 calls"


BIG_STRINGS = textwrap.dedent(
    """
    import os, resource
    import handit
    import handit.drain

    handit.drain.BACKGROUND = False  # what handit holds stays held until the session's stop

    def take(text, n):
        return n

    def program():
        for i in range(64):
            take("x" * (8 << 20) + str(i), i)

    if os.environ.get("TRACED") == "1":
        with handit.session("big"):
            program()
    else:
        program()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


def _peak_rss_kib(tmp_path: Path, engine: tuple[str, str] | None) -> int:
    script = tmp_path / "big.py"
    script.write_text(BIG_STRINGS)
    env = child_env(HANDIT_INCLUDE="__main__")
    env.pop("HANDIT_ENGINE", None)
    if engine is not None:
        env.update(TRACED="1", HANDIT_ENGINE=engine[0], HANDIT_SOURCE=engine[1])
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


def test_big_string_arguments_do_not_raise_peak_rss(tmp_path, engine):
    untraced = _peak_rss_kib(tmp_path, None)
    traced = _peak_rss_kib(tmp_path, engine)
    # untraced, one or two 8 MiB strings are alive at a time; one kept by handit shows
    assert traced - untraced < 6 * 1024, f"peak RSS {traced} KiB traced vs {untraced} KiB untraced"
