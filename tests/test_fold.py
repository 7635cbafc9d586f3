"""The fold: per-function figures from blocks without events; reading running sessions; the F frame."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

import handit
from conftest import calls_of, child_env
from corpus import PROGRAMS, rec
from handit.blocks import Fold, fold_type
from handit.reader import BlockEncoder
from handit.renderers.summary import Stats
from handit.tracefile import iter_trace, read_folds

pytestmark = pytest.mark.engine_dependent  # its tests run an engine outside the `engine` fixture

session_mod = importlib.import_module("handit.sessions")


def figures(stats: Stats) -> dict:
    """What the summary prints of each function, and the totals."""
    funcs = {k: (f.calls, f.total_ns, f.own_ns, f.raised) for k, f in stats.functions.items()}
    errors = {k: (e.count, tuple(e.through)) for k, e in stats.errors.items()}
    totals = (stats.calls, stats.exceptions, stats.raised, stats.incomplete, stats.abandoned, stats.corrupt_blocks)
    return {"funcs": funcs, "errors": errors, "totals": totals}


def rec_calls(stats: Stats) -> int:
    return sum(f.calls for (_, func), f in stats.functions.items() if func == "rec")


def test_reading_a_running_session_loses_nothing(engine):
    with handit.session("a") as s:
        rec(1)
        running_summary = s.summary()
        running_events = s.events
        running_stats = s.summary_stats()
        rec(2)
    assert len(calls_of(running_events, "rec")) == 2  # what had arrived: drained before reading
    assert rec_calls(running_stats) == 2 and "rec" in running_summary
    assert "incomplete" in running_summary  # the session had not ended
    assert len(calls_of(s.events, "rec")) == 2 + 3  # the finished session holds every event
    assert rec_calls(s.summary_stats()) == 5
    assert s.events is s.events  # kept once finished


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_the_fold_agrees_with_the_events(engine, program):
    """Calls, total and own time, raised, errors, incomplete and abandoned: from the fold as from events."""
    with handit.session(program) as s:
        PROGRAMS[program]()
    from_events = Stats().feed(s.events)
    from_fold = s.summary_stats()
    assert figures(from_fold) == figures(from_events)
    assert from_fold.calls == s.stats["calls"] > 0


def _blocks_of_every_kind() -> list[bytes]:
    a = (BlockEncoder(11, 1000).call(0, 1000).call(1, 1010, key=1).yield_(1020, 1).call(2, 1030, args=["1", "'x'"])
         .unwind(1040, "ValueError", "bad").resume(1050, 1).ret(1060).call(1, 1070, key=2).yield_(1080, 2)
         .call(1, 1090, key=1).yield_(1100, 1).resume(1110, 7).ret(1120, "None").to_bytes())
    b = BlockEncoder(12, 2000).resume(2000, 2).call(2, 2010).ret(2020, "3").to_bytes()  # moved threads
    c = (BlockEncoder(13, 3000).call(1, 3000, key=3).pause(3050, 3, 40).pause(3060, 9, 5)  # 9: not on top
         .call(1, 3061, key=4).yield_(3062, 4).step(3065, 4, 2).step(3066, 9, 1).resume(3068, 4).ret(3069)
         .ret(3070).to_bytes())
    return [a, b, c]


@pytest.mark.skipif(fold_type("compiled") is Fold, reason="handit._blocks is not built")
@pytest.mark.parametrize("cut", [None, *range(3, 60, 4)])
def test_compiled_and_pure_folds_agree(cut):
    blocks = _blocks_of_every_kind()
    if cut is not None:
        blocks[0] = blocks[0][:cut]  # damaged: folded up to the damage, counted
    got = []
    for kind in (fold_type("compiled"), Fold):
        fold = kind()
        for block in blocks:
            fold.feed(block)
        fold.finish(4000)
        figures_ = fold.to_json()
        figures_["funcs"].sort()  # in the order first seen (a damaged first block changes it)
        got.append(figures_)
    assert got[0] == got[1]
    if cut is None:
        assert got[0]["counts"]["corrupt_blocks"] == 0 and got[0]["counts"]["calls"] == 8


def test_the_fold_closes_what_is_left_open():
    fold = Fold()
    for block in _blocks_of_every_kind():
        fold.feed(block)
    assert fold.open_calls() == 3  # code 0 and a generator (resumed on thread 12) running, one suspended
    fold.finish(3000)
    counts = fold.to_json()["counts"]
    assert (counts["incomplete"], counts["abandoned"]) == (2, 1)
    assert fold.funcs[0][1] == 2000 and fold.funcs[2][3] == 1  # total to the end; one call raised
    assert fold.to_json()["counts"]["calls"] == 8


def test_session_memory_past_the_bound_is_the_trace_file(engine, tmp_path):
    path = str(tmp_path / "t.handit")
    handit.configure(max_session_memory=4096, capture="timing", output_file=path)
    with handit.session("long") as s:
        for _ in range(200):
            rec(20)
    assert s._spill is None and s._blocks == []  # no second copy: the file holds them
    assert len(calls_of(s.events, "rec")) == 200 * 21
    assert rec_calls(s.summary_stats()) == 200 * 21


def test_handit_run_writes_the_fold_and_show_uses_it(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text("def f(n):\n    if n == 3:\n        raise ValueError('three')\n    return n\n\n"
                      "def g():\n    yield from range(3)\n\n"
                      "for i in range(5):\n    try:\n        f(i)\n    except ValueError:\n        pass\n"
                      "print(sum(g()))\n")
    trace = str(tmp_path / "t.handit")
    env = child_env()
    run = subprocess.run([sys.executable, "-m", "handit", "run", "-o", trace, str(script)], env=env,
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "· 7 calls · 1 exception ·" in run.stderr  # the exit summary, from the fold
    folds = read_folds(trace)
    assert len(folds.figures) == 1 and not folds.unfolded
    (sid, fold), = folds.figures.items()
    from_fold = Stats()
    from_fold.add_fold(fold, folds.codes[sid], sid)
    from_events = Stats().feed(e for e in iter_trace(trace) if e["type"] in ("call", "return", "exception"))
    assert figures(from_fold) == figures(from_events)
    show = subprocess.run([sys.executable, "-m", "handit", "show", "--no-tree", trace], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert show.returncode == 0, show.stderr
    assert "· 7 calls · 1 exception ·" in show.stdout


def test_the_run_summary_adds_child_processes_from_their_folds(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text("import multiprocessing as mp\n\ndef work(n):\n    return n\n\n"
                      "if __name__ == '__main__':\n"
                      "    p = mp.get_context('fork').Process(target=work, args=(1,))\n"
                      "    p.start()\n    p.join()\n    work(2)\n")
    env = child_env()
    run = subprocess.run([sys.executable, "-m", "handit", "run", "-o", str(tmp_path / "t.handit"), str(script)],
                         env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "2 sessions · 3 calls" in run.stderr  # the child's work(1) came from its F frame
