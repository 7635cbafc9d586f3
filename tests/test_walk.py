"""The walk: a session's calls from its blocks without events, and the call tree `handit show` builds from it."""
from __future__ import annotations

import os
import warnings
from typing import Any

import pytest

import handit
from corpus import PROGRAMS, rec
from handit.reader import BlockEncoder
from handit.renderers.summary import func_matcher
from handit.renderers.tree import TreeBuilder
from handit.tracefile import TraceFileWarning, iter_trace, read_folds
from handit.viewer import PageData
from handit.walk import ABANDONED, INCOMPLETE, CodeNames, Walk, WalkedSession, read_args, read_preview, walk_type
from test_fold import _blocks_of_every_kind

pytestmark = pytest.mark.engine_dependent  # its traces are recorded by the engine under test

COMPILED = walk_type("compiled")
needs_compiled = pytest.mark.skipif(COMPILED is Walk, reason="handit._walk is not built")
WALKS = [pytest.param(Walk, id="pure"), pytest.param(COMPILED, id="compiled", marks=needs_compiled)]
LIMITS = {
    "default": {},
    "tight": {"max_nodes": 14, "max_depth": 2, "max_children": 3},
    "func": {"root_filter": func_matcher("rec|gen")},
}


def _record(blocks: list[bytes], walk: type, end: int = 4000) -> list[tuple[Any, ...]]:
    """Every report a walk makes, previews read back; the calls made by call 4 are pruned."""
    seen: list[tuple[Any, ...]] = []

    def on_call(parent, call_id, code, t0, thread, data, apos):
        seen.append(("call", parent, call_id, code, t0, thread, read_args(data, apos, ("a",))))
        return None if parent == 4 else call_id

    def on_return(token, t0, t1, susp, data, rpos, exc, flag):
        seen.append(("return", token, t0, t1, susp, read_preview(data, rpos), exc, flag))

    w = walk(on_call, on_return)
    for block in blocks:
        w.feed(block)
    w.finish(end)
    seen.append(("counts", w.calls, w.corrupt_blocks, w.dropped, w.first_ts, w.last_ts))
    return seen


def _gap_block() -> bytes:
    """Two calls open when records were dropped (GAP: tag 7, dts, count), a call below a pruned one, one after."""
    head = BlockEncoder(14, 5000).call(0, 5000).call(1, 5010, args=["3"]).to_bytes()
    gap = bytes([7, 20, 42])  # 10 ns later (zigzag 20), 42 records dropped
    after = bytes([1, 2, 20, 0x82, 20, 3]) + b"'x'"  # CALL code 2 at +10, RETURN at +10 with the preview 'x'
    return head + gap + after


@needs_compiled
@pytest.mark.parametrize("cut", [None, *range(3, 60, 4)])
def test_compiled_and_pure_walks_agree(cut):
    blocks = _blocks_of_every_kind() + [_gap_block()]
    if cut is not None:
        blocks[0] = blocks[0][:cut]  # damaged: walked up to the damage, counted
    assert _record(blocks, COMPILED) == _record(blocks, Walk)


@pytest.mark.parametrize("walk", WALKS)
def test_a_walk_reports_what_the_reader_decodes(walk):
    seen = _record(_blocks_of_every_kind() + [_gap_block()], walk)
    calls = {r[2]: r for r in seen if r[0] == "call"}
    ends = {r[1]: r for r in seen if r[0] == "return"}
    assert sorted(calls) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]  # call ids count every call, from 1
    assert calls[3][1] == 1 and calls[3][6] == {"a": "1", "arg1": "'x'"}  # parent token; previews by name
    assert ends[3][6] == ("ValueError", "bad") and ends[3][3] == 1040
    assert calls[6][1] == 4 and 6 not in ends  # below call 4 (resumed on another thread): pruned
    assert ends[2][4] == 1050 - 1020 and ends[1][4] == -1  # time suspended; -1 for a plain call
    assert (ends[1][3], ends[1][7]) == (4000, INCOMPLETE) and (ends[4][7], ends[5][7]) == (INCOMPLETE, ABANDONED)
    assert ends[5][3] == 1100  # abandoned at its last suspension
    assert ends[8][4] == 3068 - 3062 - 2 and ends[7][4] == 40  # STEP and PAUSE records
    assert (ends[10][3], ends[10][7]) == (5020, INCOMPLETE) and ends[9][7] == INCOMPLETE  # closed by the gap
    assert calls[10][6] == {"a": "3"} and calls[11][1] is None and ends[11][5] == "'x'"
    assert seen[-1] == ("counts", 11, 0, 42, 1000, 5040)


def _trace(tmp_path, programs: list[str], cut: int = 0) -> str:
    """A .handit file with one session per program (several sessions, F frames), cut short by ``cut`` bytes."""
    path = str(tmp_path / "t.handit")
    handit.configure(output_file=path)
    for name in programs:
        with handit.session(name):
            PROGRAMS[name]()
    handit.reset_config()
    if cut:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) - cut)
    return path


def _trees(path: str, walk: type, limits: dict[str, Any]) -> tuple[TreeBuilder, TreeBuilder, int]:
    """The tree from the trace's events and the tree from walks of its folded sessions; sessions walked."""
    walked = []

    def make(sid, lookup):
        if sid not in folds.figures or folds.figures[sid]["counts"].get("markers"):
            return None  # as handit show does: asyncio task markers are read as events
        walked.append(sid)
        return WalkedSession(walk(*walked_tree.walker(sid, CodeNames(lookup))))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TraceFileWarning)  # a cut trace: said the same way by both reads
        folds = read_folds(path)
        from_events = TreeBuilder(**limits).feed(iter_trace(path))
        walked_tree = TreeBuilder(**limits)
        walked_tree.feed(e for e in iter_trace(path, make_builder=make)
                         if e["type"] not in ("call", "return") or e["session_id"] not in walked)
    return from_events, walked_tree, len(walked)


@pytest.mark.parametrize("walk", WALKS)
@pytest.mark.parametrize("limits", sorted(LIMITS))
def test_the_walked_tree_is_the_events_tree(engine, tmp_path, walk, limits):
    """Threads, generators (PAUSE/STEP), exceptions, coroutines, several sessions: the same lines."""
    path = _trace(tmp_path, sorted(PROGRAMS))
    from_events, walked, n = _trees(path, walk, LIMITS[limits])
    with_markers = [sid for sid, f in read_folds(path).figures.items() if f["counts"].get("markers")]
    assert n == len(PROGRAMS) - len(with_markers) and len(with_markers) == 1  # the coroutines' tasks
    assert walked.lines() == from_events.lines() and len(from_events.lines()) > 10
    assert walked.used == from_events.used and walked.sessions_omitted == from_events.sessions_omitted


@pytest.mark.parametrize("walk", WALKS)
def test_the_walked_tree_of_a_cut_trace_is_the_events_tree(engine, tmp_path, walk):
    path = _trace(tmp_path, ["threads", "generators", "exceptions"], cut=1)
    from_events, walked, n = _trees(path, walk, {})
    assert n >= 2  # the last session lost its end (its F frame stands before it)
    assert walked.lines() == from_events.lines()


@pytest.mark.parametrize("walk", WALKS)
@pytest.mark.parametrize("cut", [0, 1])
def test_the_walked_page_is_the_events_page(engine, tmp_path, walk, cut):
    """handit view's data (rows, tracks, strings, folded tree) from walks as from events, a cut trace too."""
    path = _trace(tmp_path, sorted(PROGRAMS), cut=cut)
    from_events, walked = PageData(tree_nodes=40, tree_depth=3), PageData(tree_nodes=40, tree_depth=3)
    n = []

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TraceFileWarning)
        folds = read_folds(path)

    def make(sid, lookup):
        if sid in folds.figures and folds.figures[sid]["counts"].get("markers"):
            return None  # as handit view does: asyncio task markers are read as events
        n.append(sid)
        return WalkedSession(walk(*walked.walker(sid, CodeNames(lookup))))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TraceFileWarning)
        for e in iter_trace(path):
            from_events.add(e)
        for e in iter_trace(path, make_builder=make):
            assert e["type"] not in ("call", "return", "exception") or e["session_id"] not in n
            walked.add(e)
    assert len(n) == len(PROGRAMS) - 1 and walked.calls == from_events.calls > 100  # all but the coroutines
    assert walked.finish() == from_events.finish()


def test_a_tree_walk_leaves_out_what_it_does_not_show(engine, tmp_path):
    """Calls below those only counted by name are not reported: a tree of a long run costs little per call."""
    path = str(tmp_path / "t.handit")
    handit.configure(output_file=path, capture="timing")
    with handit.session("long"):
        for i in range(50):
            rec(i % 7 + 5)
    handit.reset_config()
    folds = read_folds(path)
    tree = TreeBuilder(max_children=2)
    reported = []

    def make(sid, lookup):
        on_call, on_return = tree.walker(sid, CodeNames(lookup))

        def counting(*args):
            reported.append(args[1])
            return on_call(*args)

        return WalkedSession(Walk(counting, on_return)) if sid in folds.figures else None

    tree.feed(iter_trace(path, make_builder=make))
    calls = sum(i % 7 + 6 for i in range(50))
    assert folds.figures and len(reported) < calls // 3  # two kept shapes, the other roots and their first call
    text = "\n".join("".join(t for t, _ in line) for line in tree.lines())
    assert "more: rec ×48" in text
    assert tree.lines() == TreeBuilder(max_children=2).feed(iter_trace(path)).lines()  # as from events
