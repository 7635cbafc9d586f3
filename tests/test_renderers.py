"""Renderers: summary numbers, own time, folding and bounds of the tree, Chrome and speedscope writers."""
from __future__ import annotations

import io
import json
import re
import sys
from typing import Any

import pytest

import handit
from handit.renderers import Lines, Table, emit, fmt_ns, plain_text, use_rich
from handit.renderers.chrome import ChromeTraceWriter
from handit.renderers.speedscope import SpeedscopeWriter
from handit.renderers.summary import Stats, func_matcher, render_summary
from handit.renderers.tree import TreeBuilder

SID = "00000000-0000-4000-8000-000000000001"
T = 1_700_000_000_000_000_000


class Events:
    """Builds a well-formed event list: calls get ids and parents from a stack, times are explicit."""

    def __init__(self, sid: str = SID, tag: str = "test", thread: int = 1) -> None:
        self.sid, self.thread = sid, thread
        self.events: list[dict[str, Any]] = [{"type": "session_start", "session_id": sid, "tag": tag, "ts_ns": T}]
        self.stack: list[tuple[int, str, int]] = []
        self.next_id = 1

    def call(self, func: str, t: int, **args: Any) -> Events:
        cid = self.next_id
        self.next_id += 1
        parent = self.stack[-1][0] if self.stack else None
        self.events.append({"type": "call", "session_id": self.sid, "func": func, "module": "m", "file": "m.py", "line": 1,
                            "t0_ns": T + t, "args_preview": {k: str(v) for k, v in args.items()}, "call_id": cid,
                            "parent_id": parent, "thread": self.thread})
        self.stack.append((cid, func, T + t))
        return self

    def ret(self, t: int, value: Any = None, **extra: Any) -> Events:
        cid, func, t0 = self.stack.pop()
        self.events.append({"type": "return", "session_id": self.sid, "func": func, "t1_ns": T + t, "dt_ns": T + t - t0,
                            "locals_preview": {} if value is None else {"return": str(value)}, "call_id": cid, **extra})
        return self

    def raise_(self, t: int, type_name: str = "ValueError", message: str = "bad") -> Events:
        cid, func, _ = self.stack[-1]
        self.events.append({"type": "exception", "session_id": self.sid, "func": func, "ts_ns": T + t,
                            "type_name": type_name, "message": message, "call_id": cid})
        return self.ret(t, raised=True)

    def end(self, t: int) -> list[dict[str, Any]]:
        self.events.append({"type": "session_end", "session_id": self.sid, "ts_ns": T + t, "duration_ns": t,
                            "stats": {"calls": self.next_id - 1, "dropped": 2}})
        return self.events


def test_total_and_own_time() -> None:
    ev = Events().call("a", 0).call("b", 10).ret(40).call("b", 50).call("c", 52).ret(58).ret(60).ret(100).end(100)
    stats = Stats().feed(ev)
    fa, fb, fc = (stats.functions[("m", f)] for f in "abc")
    assert (fa.calls, fa.total_ns, fa.own_ns) == (1, 100, 60)
    assert (fb.calls, fb.total_ns, fb.own_ns) == (2, 40, 34)
    assert (fc.calls, fc.total_ns, fc.own_ns) == (1, 6, 6)
    assert stats.calls == 4 and stats.dropped == 2
    assert [f.func for f in stats.top(3, "own")] == ["a", "b", "c"]
    info = stats.sessions[SID]
    assert (info.tag, info.calls, info.duration_ns, info.ended) == ("test", 4, 100, True)


def test_recursion_counts_total_once() -> None:
    ev = Events().call("fib", 0).call("fib", 10).call("fib", 20).ret(30).ret(40).ret(100).end(100)
    fib = Stats().feed(ev).functions[("m", "fib")]
    assert (fib.calls, fib.total_ns, fib.own_ns) == (3, 100, 100)  # like cProfile's cumulative time


def test_generator_suspended_time_is_not_own_time() -> None:
    ev = Events().call("consume", 0).call("gen", 10).ret(90, suspended_ns=60).ret(100).end(100)
    stats = Stats().feed(ev)
    gen, consume = stats.functions[("m", "gen")], stats.functions[("m", "consume")]
    assert (gen.total_ns, gen.own_ns) == (80, 20)
    assert consume.own_ns == 80  # 100 minus the generator's 20 ns of running


def test_unfinished_calls_counted() -> None:
    ev = Events().call("main", 0).call("gen", 10).ret(20, abandoned=True, suspended_ns=5).ret(100, incomplete=True).end(100)
    stats = Stats().feed(ev)
    assert (stats.incomplete, stats.abandoned) == (1, 1)
    assert "1 call unfinished · 1 generator abandoned" in render_summary(ev)


def test_exception_counted_once_with_the_functions_it_passed() -> None:
    ev = (Events().call("a", 0).call("b", 10).call("c", 20).raise_(30, "KeyError", "k").raise_(31, "KeyError", "k")
          .call("c", 60).raise_(61, "KeyError", "k").ret(70).end(70))
    stats = Stats().feed(ev)
    assert stats.exceptions == 3 and stats.raised == 2
    (err,) = stats.errors.values()
    assert (err.type_name, err.message, err.func, err.count, err.through) == ("KeyError", "k", "c", 2, ["m.b"])
    assert stats.functions[("m", "c")].raised == 2 and stats.functions[("m", "b")].raised == 1
    assert stats.sessions[SID].exceptions == 2


def test_http_calls_paired_in_order() -> None:
    ev = Events().events
    ev += [
        {"type": "http_request", "session_id": SID, "method": "GET", "url": "https://api.example/v1/x?key=1", "t0_ns": T},
        {"type": "http_response", "session_id": SID, "status": 200, "t1_ns": T + 5_000, "dt_ns": 5_000, "error": None},
        {"type": "http_request", "session_id": SID, "method": "GET", "url": "https://api.example/v1/x?key=2", "t0_ns": T},
        {"type": "http_response", "session_id": SID, "status": 503, "t1_ns": T + 7_000, "dt_ns": 7_000, "error": None},
        {"type": "http_request", "session_id": SID, "method": "POST", "url": "https://api.example/v1/y", "t0_ns": T},
        {"type": "session_end", "session_id": SID, "ts_ns": T + 10_000, "duration_ns": 10_000, "stats": {}},
    ]
    stats = Stats().feed(ev)
    assert stats.http_calls == 3
    get = stats.http[("GET", "https://api.example/v1/x")]
    assert (get.count, get.errors, get.statuses, get.total_ns, get.max_ns) == (2, 1, {"200": 1, "503": 1}, 12_000, 7_000)
    post = stats.http[("POST", "https://api.example/v1/y")]
    assert (post.count, post.errors) == (1, 1)  # no response before the session ended


def test_render_summary_text() -> None:
    ev = Events().call("work", 0, n=1).call("helper", 100).raise_(2_000, "ValueError", "nope").ret(1_500_000).end(2_000_000)
    text = render_summary(ev, top=5)
    assert "Busiest functions" in text and "Most own time" in text
    assert "m.work" in text and "1.5 ms" in text
    assert "ValueError" in text and "nope" in text
    assert "1 session · 2 calls · 1 exception" in text
    assert "2 records dropped" in text


@pytest.mark.engine_dependent
def test_session_summary_uses_the_renderer() -> None:
    def traced_helper(x: int) -> int:
        return x + 1

    with handit.session("summary-test") as s:
        traced_helper(1)
    text = s.summary()
    assert "traced_helper" in text and "Busiest functions" in text


def test_func_matcher() -> None:
    match = func_matcher(r"^Agent\.")
    assert match is not None and match("app", "Agent.run") and not match("app", "run_agent")
    assert func_matcher(r"app\.run")("app", "run")  # type: ignore[misc]
    assert func_matcher(None) is None


# ---- tree ------------------------------------------------------------------------------------


def _loop_events(n: int, same: bool = True) -> list[dict[str, Any]]:
    ev = Events().call("main", 0)
    t = 1
    for i in range(n):
        ev.call("fib", t, n=3 if same else i).call("fib", t + 1, n=2).ret(t + 2, 1).call("fib", t + 3, n=1).ret(t + 4, 1).ret(t + 5, 2)
        t += 10
    return ev.ret(t, "done").end(t)


def test_identical_siblings_fold() -> None:
    tree = TreeBuilder().feed(_loop_events(12))
    text = plain_text([tree.block()])
    assert "fib(n=3) → 2  ×12" in text
    assert text.count("fib(n=3)") == 1 and text.count("fib(n=2)") == 1
    assert tree.used == 5  # session, main, fib(3), fib(2), fib(1): the 11 repeats gave their nodes back


def test_different_siblings_are_capped_and_counted() -> None:
    tree = TreeBuilder(max_children=5).feed(_loop_events(50, same=False))
    text = plain_text([tree.block()])
    assert "fib(n=4)" in text and "fib(n=5)" not in text
    assert "… 45 more: fib ×45" in text


def test_budget_and_depth_bound_the_tree() -> None:
    ev = Events().call("root", 0)
    for depth in range(30):
        ev.call("down", depth + 1, level=depth)
    for depth in range(30):
        ev.ret(100 - depth)
    tree = TreeBuilder(max_depth=5).feed(ev.ret(200).end(200))
    text = plain_text([tree.block()])
    assert "down(level=4)" in text and "down(level=5)" not in text
    assert "… 25 deeper calls" in text

    big = TreeBuilder(max_nodes=50).feed(_loop_events(5_000, same=False))
    assert big.used <= 50
    assert len(plain_text([big.block()]).splitlines()) < 80


def test_tree_root_filter() -> None:
    ev = Events().call("main", 0).call("noise", 1).ret(2).call("target", 3, x=1).call("inner", 4).ret(5).ret(6).ret(7).end(7)
    text = plain_text([TreeBuilder(root_filter=func_matcher("^target$")).feed(ev).block()])
    assert "target(x=1)" in text and "inner()" in text
    assert "main(" not in text and "noise" not in text


def test_identical_subtrees_elsewhere_are_shown_once() -> None:
    ev = Events().call("a", 0).call("x", 1).call("y", 2).ret(3).ret(4).ret(5).call("b", 6).call("x", 7).call("y", 8).ret(9).ret(10).ret(11)
    text = plain_text([TreeBuilder().feed(ev.end(12)).block()])
    assert text.count("y()") == 1 and "(1 calls below, as above)" in text


# ---- Chrome and speedscope --------------------------------------------------------------------


def test_chrome_writer_events() -> None:
    ev = Events().call("outer", 0, q="x").call("inner", 1_000).raise_(2_000).call("gen", 3_000).ret(9_000, "7", suspended_ns=4_000).ret(10_000, "ok")
    out = io.BytesIO()
    writer = ChromeTraceWriter(out)
    for e in ev.end(10_000):
        writer.add(e)
    writer.close()
    doc = json.loads(out.getvalue())
    by_ph: dict[str, list[dict[str, Any]]] = {}
    for e in doc["traceEvents"]:
        by_ph.setdefault(e["ph"], []).append(e)
    outer = next(e for e in by_ph["X"] if e["name"] == "outer")
    assert outer["ts"] == 0 and outer["dur"] == 10.0 and outer["args"] == {"q": "x", "return": "ok"}
    inner = next(e for e in by_ph["X"] if e["name"] == "inner")
    assert inner["args"]["raised"] is True and (inner["ts"], inner["dur"]) == (1.0, 1.0)
    assert [e["name"] for e in by_ph["i"]] == ["ValueError"]
    gen = next(e for e in by_ph["X"] if e["name"] == "gen")  # it nests on its track: a complete event
    assert (gen["ts"], gen["dur"], gen["args"]["suspended_ns"]) == (3.0, 6.0, 4_000)
    assert "b" not in by_ph
    assert {e["name"] for e in by_ph["M"]} == {"process_name", "process_sort_index", "thread_name", "thread_sort_index"}


def test_chrome_interleaved_generators_are_async_slices() -> None:
    # g1 starts, g2 starts while g1 is suspended, g1 ends first: g1 cannot be a complete event on the track
    ev = Events().call("main", 0).call("g1", 10)
    ev.call("g2", 20)
    g2 = ev.stack.pop()
    ev.ret(30, suspended_ns=5)
    ev.stack.append(g2)
    ev.ret(40, suspended_ns=5).ret(50)
    out = io.BytesIO()
    writer = ChromeTraceWriter(out)
    for e in ev.end(50):
        writer.add(e)
    writer.close()
    events = json.loads(out.getvalue())["traceEvents"]
    assert sorted(e["name"] for e in events if e["ph"] == "X") == ["g2", "main"]
    assert [(e["name"], e["ph"]) for e in events if e["ph"] in "be"] == [("g1", "b"), ("g1", "e")]


def test_speedscope_interleaved_generators_stay_nested() -> None:
    # g1 starts, g2 starts while g1 is suspended (both open on one thread), then g1 finishes first
    ev = Events().call("main", 0).call("g1", 10)
    ev.call("g2", 20)
    g2 = ev.stack.pop()
    ev.ret(30)  # g1 ends while g2 is still open
    ev.stack.append(g2)
    ev.ret(40).ret(50)
    out = io.BytesIO()
    writer = SpeedscopeWriter(out, spill_bytes=64)  # tiny: exercises the spill file
    for e in ev.end(50):
        writer.add(e)
    writer.close()
    doc = json.loads(out.getvalue())
    (profile,) = doc["profiles"]
    names = [f["name"] for f in doc["shared"]["frames"]]
    stack: list[int] = []
    last = 0
    for e in profile["events"]:
        assert e["at"] >= last
        last = e["at"]
        if e["type"] == "O":
            stack.append(e["frame"])
        else:
            assert stack.pop() == e["frame"]
    assert not stack
    assert names == ["m.main", "m.g1", "m.g2"] and profile["endValue"] == 50


# ---- terminal output ---------------------------------------------------------------------------


def test_fmt_ns() -> None:
    assert [fmt_ns(v) for v in (812, 12_345, 4_560_000, 1_234_000_000, 250e9)] == ["812 ns", "12.3 µs", "4.56 ms", "1.23 s", "250 s"]


def test_plain_output_without_a_terminal() -> None:
    blocks = [Table("T", ["name", ">n"], [["a", "1"], [[("bb", "bold")], "22"]]), Lines("L", [[("x → y", "green")]])]
    out = io.StringIO()
    emit(blocks, out)
    assert out.getvalue() == "T\n  name   n\n  ----  --\n  a      1\n  bb    22\n\nL\nx → y\n"
    assert "x -> y" in plain_text(blocks, ascii_only=True)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_rich_used_on_a_terminal_and_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rich")
    monkeypatch.setenv("NO_COLOR", "1")
    out = _Tty()
    emit([Table("Top", ["f", ">n"], [["[bold]not markup[/bold]", "1"]])], out)
    assert "[bold]not markup[/bold]" in out.getvalue()  # user text is never read as markup
    assert not re.search(r"\x1b\[[0-9;]*(?:3[0-8]|9[0-7])[;m]", out.getvalue())  # bold may stay; no colour
    monkeypatch.setitem(sys.modules, "rich", None)  # as if the cli extra were not installed
    assert not use_rich(_Tty())
    out = _Tty()
    emit([Lines("", [[("plain", "")]])], out)
    assert out.getvalue() == "plain\n"
