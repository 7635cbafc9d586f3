"""Tests for handit.reader: encoded blocks -> call/return/exception events, state kept across blocks."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from handit import _fallback
from handit._policy import CodeInfo
from handit.reader import BlockEncoder, TraceBuilder, read_uvarint
from handit.records import CALL, NO_VALUE, RESUME, RETURN, UNWIND, YIELD, Rendered

T = 1_700_000_000_000_000_000  # epoch ns
A, B = 140_000_000_000_001, 140_000_000_000_777  # thread idents
K1, K2 = 0x7F00_1234_5678, 0x7F00_9999_0000  # generator keys (frame addresses)

CODES = [
    CodeInfo(0, "app", "main", "/app.py", 1, False, (), ()),
    CodeInfo(1, "app", "work", "/app.py", 10, False, ("x", "y"), (False, False)),
    CodeInfo(2, "app", "leaf", "/app.py", 20, False, ("n",), (False,)),
    CodeInfo(3, "app", "gen", "/app.py", 30, True, ("k",), (False,)),
]


def builder(session_id: str = "s1") -> TraceBuilder:
    return TraceBuilder(session_id, CODES.__getitem__)


def types(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["func"]) for e in events]


def test_uvarint() -> None:
    assert read_uvarint(b"\x00", 0) == (0, 1)
    assert read_uvarint(b"\x7f", 0) == (127, 1)
    assert read_uvarint(b"\x80\x01", 0) == (128, 2)
    assert read_uvarint(b"x\xff\xff\x03", 1) == (65535, 4)


def test_nested_calls() -> None:
    block = (
        BlockEncoder(A, T)
        .call(0, T + 10)
        .call(1, T + 20, args=["1", "'a'"])
        .call(2, T + 30, args=["[1, 2]"])
        .ret(T + 45, "3")
        .ret(T + 60)
        .ret(T + 100, "None")
        .to_bytes()
    )
    b = builder()
    events = b.feed(block)
    assert types(events) == [
        ("call", "main"), ("call", "work"), ("call", "leaf"),
        ("return", "leaf"), ("return", "work"), ("return", "main"),
    ]
    main, work, leaf = events[:3]
    assert main == {
        "type": "call", "session_id": "s1", "func": "main", "module": "app", "file": "/app.py",
        "line": 1, "t0_ns": T + 10, "args_preview": {}, "call_id": 1, "parent_id": None, "thread": A,
    }
    assert work["args_preview"] == {"x": "1", "y": "'a'"}
    assert (work["call_id"], work["parent_id"], leaf["call_id"], leaf["parent_id"]) == (2, 1, 3, 2)
    assert events[3] == {
        "type": "return", "session_id": "s1", "func": "leaf", "t1_ns": T + 45, "dt_ns": 15,
        "locals_preview": {"return": "3"}, "call_id": 3,
    }
    assert events[4]["locals_preview"] == {}
    assert events[5]["dt_ns"] == 90
    assert b.stats["calls"] == 3 and b.stats["returns"] == 3 and b.stats["max_depth"] == 3
    assert b.finish(T + 200) == []


def test_exception_then_return_with_raised() -> None:
    block = (
        BlockEncoder(A, T)
        .call(0, T + 1)
        .call(2, T + 2, args=["0"])
        .unwind(T + 5, "ZeroDivisionError", "division by zero")
        .unwind(T + 7, "ZeroDivisionError", "division by zero")
        .to_bytes()
    )
    b = builder()
    events = b.feed(block)
    assert [e["type"] for e in events] == ["call", "call", "exception", "return", "exception", "return"]
    assert events[2] == {
        "type": "exception", "session_id": "s1", "func": "leaf", "ts_ns": T + 5,
        "type_name": "ZeroDivisionError", "message": "division by zero", "call_id": 2,
    }
    assert events[3] == {
        "type": "return", "session_id": "s1", "func": "leaf", "t1_ns": T + 5, "dt_ns": 3,
        "locals_preview": {}, "call_id": 2, "raised": True,
    }
    assert events[5]["call_id"] == 1 and events[5]["raised"] is True
    assert b.stats["exceptions"] == 2 and b.stats["returns"] == 2


def test_generator_suspended_and_resumed_counts_once() -> None:
    block = (
        BlockEncoder(A, T)
        .call(0, T)  # main
        .call(3, T + 10, key=K1, args=["5"])  # gen starts
        .yield_(T + 20, K1)
        .call(2, T + 30, args=["1"])  # main calls leaf while gen is suspended
        .ret(T + 40)
        .resume(T + 100, K1)
        .call(2, T + 110, args=["2"])  # called from inside gen
        .ret(T + 120)
        .yield_(T + 130, K1)
        .resume(T + 200, K1)
        .ret(T + 250, "None")  # gen finishes
        .ret(T + 300)
        .to_bytes()
    )
    b = builder()
    events = b.feed(block)
    calls = [e for e in events if e["type"] == "call"]
    assert [c["func"] for c in calls] == ["main", "gen", "leaf", "leaf"]
    assert calls[2]["parent_id"] == 1  # gen was suspended: leaf belongs to main
    assert calls[3]["parent_id"] == 2  # inside the resumed gen
    gen_ret = next(e for e in events if e["type"] == "return" and e["func"] == "gen")
    assert gen_ret["dt_ns"] == 240  # first start to final exit, once
    assert gen_ret["suspended_ns"] == 80 + 70
    assert gen_ret["locals_preview"] == {"return": "None"}
    plain = next(e for e in events if e["type"] == "return" and e["func"] == "main")
    assert "suspended_ns" not in plain
    assert b.stats["calls"] == 4 and b.stats["returns"] == 4
    assert b.finish(T + 1000) == []


def test_abandoned_generator_closed_at_last_suspension() -> None:
    block = BlockEncoder(A, T).call(3, T + 10, key=K1).yield_(T + 20, K1).to_bytes()
    b = builder()
    assert types(b.feed(block)) == [("call", "gen")]
    assert b.open_calls() == 1
    (end,) = b.finish(T + 5000)
    assert end == {
        "type": "return", "session_id": "s1", "func": "gen", "t1_ns": T + 20, "dt_ns": 10,
        "locals_preview": {}, "call_id": 1, "abandoned": True, "suspended_ns": 0,
    }
    assert b.stats["abandoned"] == 1 and b.stats["returns"] == 1
    assert b.open_calls() == 0


def test_reused_key_closes_the_stale_generator_first() -> None:
    block = (
        BlockEncoder(A, T)
        .call(3, T + 10, key=K1)
        .yield_(T + 20, K1)  # gen #1 suspended, then dropped without closing
        .call(3, T + 30, key=K1)  # a new generator frame at the same address
        .yield_(T + 40, K1)
        .resume(T + 50, K1)
        .ret(T + 60)
        .to_bytes()
    )
    events = builder().feed(block)
    assert [(e["type"], e["call_id"]) for e in events] == [("call", 1), ("call", 2), ("return", 1), ("return", 2)]
    assert events[2]["abandoned"] is True and events[2]["t1_ns"] == T + 20
    assert events[3]["dt_ns"] == 30 and events[3]["suspended_ns"] == 10


def test_generator_resumed_on_another_thread() -> None:
    first = BlockEncoder(A, T).call(3, T + 10, key=K1).yield_(T + 20, K1).to_bytes()
    second = (
        BlockEncoder(B, T + 100)
        .call(0, T + 100)
        .resume(T + 110, K1)
        .call(2, T + 120)
        .ret(T + 130)
        .ret(T + 140, "'done'")
        .ret(T + 150)
        .to_bytes()
    )
    b = builder()
    (gen,) = b.feed(first)
    events = b.feed(second)
    assert gen["thread"] == A
    main, leaf = (e for e in events if e["type"] == "call")
    assert main["thread"] == B and leaf["thread"] == B
    assert leaf["parent_id"] == gen["call_id"]
    gen_ret = next(e for e in events if e["type"] == "return" and e["call_id"] == gen["call_id"])
    assert gen_ret["dt_ns"] == 130 and gen_ret["suspended_ns"] == 90
    main_ret = events[-1]
    assert main_ret["call_id"] == main["call_id"] and main_ret["dt_ns"] == 50
    assert b.finish(T + 1000) == []


def test_throw_resumes_and_unwinds() -> None:
    block = (
        BlockEncoder(A, T)
        .call(3, T + 10, key=K2)
        .yield_(T + 20, K2)
        .throw(T + 30, K2)
        .unwind(T + 35, "GeneratorExit", "")
        .to_bytes()
    )
    events = builder().feed(block)
    assert [e["type"] for e in events] == ["call", "exception", "return"]
    assert events[2]["raised"] is True and events[2]["suspended_ns"] == 10 and events[2]["dt_ns"] == 25


def test_generator_started_before_the_session_is_a_phantom() -> None:
    block = (
        BlockEncoder(A, T)
        .call(0, T + 1)
        .resume(T + 2, K2)  # unknown key: the generator started before the session
        .call(2, T + 3)
        .ret(T + 4)
        .yield_(T + 5, K2)
        .resume(T + 6, K2)
        .ret(T + 7)  # the phantom returns: nothing emitted
        .ret(T + 8)  # main
        .to_bytes()
    )
    b = builder()
    events = b.feed(block)
    assert types(events) == [("call", "main"), ("call", "leaf"), ("return", "leaf"), ("return", "main")]
    assert events[1]["parent_id"] is None  # its real parent is unknown
    assert events[3]["call_id"] == 1 and events[3]["t1_ns"] == T + 8
    assert b.stats["returns"] == 2
    assert b.finish(T + 100) == []


def test_exits_with_empty_stack_are_ignored() -> None:
    block = (
        BlockEncoder(A, T)
        .ret(T + 1, "x")  # frames that started before the session end
        .unwind(T + 2, "KeyError", "'k'")
        .yield_(T + 3, K1)
        .call(1, T + 4, args=["1", "2"])
        .ret(T + 5)
        .ret(T + 6)
        .to_bytes()
    )
    b = builder()
    events = b.feed(block)
    assert types(events) == [("call", "work"), ("return", "work")]
    assert events[0]["call_id"] == 1
    assert b.stats["exceptions"] == 0 and b.stats["corrupt_blocks"] == 0


def test_calls_split_across_blocks_and_threads() -> None:
    b = builder()
    out = []
    out += b.feed(BlockEncoder(A, T).call(0, T + 1).call(1, T + 2).to_bytes())
    out += b.feed(BlockEncoder(B, T + 3).call(2, T + 3).to_bytes())
    out += b.feed(BlockEncoder(A, T + 10).ret(T + 10).call(2, T + 11).to_bytes())
    out += b.feed(BlockEncoder(B, T + 12).ret(T + 12).to_bytes())
    out += b.feed(BlockEncoder(A, T + 20).ret(T + 20).ret(T + 30).to_bytes())
    by_id = {e["call_id"]: e for e in out if e["type"] == "call"}
    assert by_id[2]["parent_id"] == 1
    assert by_id[3]["parent_id"] is None and by_id[3]["thread"] == B
    assert by_id[4]["parent_id"] == 1 and by_id[4]["thread"] == A
    returns = {e["call_id"]: e for e in out if e["type"] == "return"}
    assert returns[2]["dt_ns"] == 8 and returns[3]["dt_ns"] == 9 and returns[1]["dt_ns"] == 29
    assert set(returns) == {1, 2, 3, 4}
    assert b.first_ts == T and b.last_ts == T + 30


def test_finish_closes_open_calls_innermost_first() -> None:
    b = builder()
    b.feed(BlockEncoder(A, T).call(0, T + 1).call(1, T + 2).call(3, T + 3, key=K1).to_bytes())
    b.feed(BlockEncoder(B, T).call(2, T + 5).to_bytes())
    closing = b.finish(T + 100)
    assert [(e["call_id"], e["t1_ns"]) for e in closing] == [(3, T + 100), (2, T + 100), (1, T + 100), (4, T + 100)]
    assert all(e["incomplete"] is True for e in closing)
    assert closing[0]["suspended_ns"] == 0 and "suspended_ns" not in closing[1]
    assert closing[2]["dt_ns"] == 99
    assert b.stats["incomplete"] == 4
    assert b.finish(T + 200) == []


def test_large_varints_and_negative_deltas() -> None:
    codes = {300: SimpleNamespace(qualname="far", module="m", file="f.py", line=70000, argnames=("a",))}
    block = (
        BlockEncoder(2**63 - 1, T)
        .call(300, T + 5_000_000_000, args=["x" * 300])
        .ret(T + 4_999_999_000)  # clock steps back a microsecond: a negative delta
        .to_bytes()
    )
    call, ret = TraceBuilder("s", codes.__getitem__).feed(block)
    assert call["thread"] == 2**63 - 1 and call["line"] == 70000 and call["args_preview"] == {"a": "x" * 300}
    assert ret["t1_ns"] == T + 4_999_999_000 and ret["dt_ns"] == -1000


def test_argument_count_mismatch_and_unknown_code() -> None:
    block = BlockEncoder(A, T).call(1, T + 1, args=["1", "2", "3"]).call(99, T + 2, args=["z"]).to_bytes()
    first, second = builder().feed(block)
    assert first["args_preview"] == {"x": "1", "y": "2", "arg2": "3"}
    assert second["func"] == "<unknown code 99>" and second["args_preview"] == {"arg0": "z"}


def test_text_round_trips() -> None:
    block = BlockEncoder(A, T).call(2, T + 1, args=["'héllo ☃ 🐍'"]).ret(T + 2, "\udc80").to_bytes()
    call, ret = builder().feed(block)
    assert call["args_preview"] == {"n": "'héllo ☃ 🐍'"}
    assert ret["locals_preview"] == {"return": "\\udc80"}  # the encoder's backslashreplace


def test_corrupt_block_keeps_what_came_before() -> None:
    good = BlockEncoder(A, T).call(0, T + 1).to_bytes()
    b = builder()
    events = b.feed(good + b"\x0e\x00")  # kind 14 does not exist
    assert types(events) == [("call", "main")]
    assert b.stats["corrupt_blocks"] == 1
    cut = BlockEncoder(A, T).call(1, T + 1, args=["a" * 50, "b"]).to_bytes()
    assert b.feed(cut[:-10]) == []  # cut inside a string: no half-read call comes out
    assert b.stats["corrupt_blocks"] == 2
    assert b.feed(b"") == [] and b.feed(b"\x80") == []
    assert b.stats["corrupt_blocks"] == 3


def test_iter_feed_is_lazy() -> None:
    enc = BlockEncoder(A, T)
    for i in range(1000):
        enc.call(2, T + 2 * i, args=[str(i)]).ret(T + 2 * i + 1)
    b = builder()
    it = b.iter_feed(enc.to_bytes())
    first = next(it)
    assert first["args_preview"] == {"n": "0"}
    rest = list(it)
    assert len(rest) == 1999 and b.stats["calls"] == 1000 and b.stats["returns"] == 1000


class _Calibration:
    def refine(self) -> None:
        pass

    def to_epoch_ns(self, ticks: int) -> int:
        return T + ticks


def test_the_fallback_drain_writes_what_the_reader_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's encoder and the reference encoder agree byte for byte, and decode as expected."""
    slot = 7
    records = [
        (CALL, slot, 1, 10, (1, Rendered("'r'")), 0),
        (CALL, slot, 3, 20, (NO_VALUE,), K1),
        (YIELD, slot, 3, 30, None, K1),
        (RESUME, slot, 3, 200, None, K1),
        (RETURN, slot, 3, 250, NO_VALUE, K1),
        (CALL, slot, 2, 300, None, 0),
        (UNWIND, slot, 2, 400, ("ValueError", "bad"), 0),
        (RETURN, slot, 1, 500, 42, 0),
    ]
    monkeypatch.setattr(_fallback, "_collect", lambda: [(A, records)])
    ((got_slot, block),) = _fallback.drain(_Calibration(), SimpleNamespace(preview=repr))
    assert got_slot == slot
    expected = (
        BlockEncoder(A, T + 10)
        .call(1, T + 10, args=["1", "'r'"])
        .call(3, T + 20, key=1, args=[""])  # the frame's address is written as the small key 1
        .pause(T + 200, 1, 170)  # a yield and the resume right after it: one PAUSE
        .ret(T + 250)
        .call(2, T + 300)
        .unwind(T + 400, "ValueError", "bad")
        .ret(T + 500, "42")
        .to_bytes()
    )
    assert block == expected
    events = builder().feed(block)
    assert [e["type"] for e in events] == ["call", "call", "return", "call", "exception", "return", "return"]
    assert events[0]["args_preview"] == {"x": "1", "y": "'r'"}
    assert events[2]["suspended_ns"] == 170 and events[2]["dt_ns"] == 230
    assert events[-1]["locals_preview"] == {"return": "42"} and events[-1]["dt_ns"] == 490


def test_a_pause_is_time_suspended_of_the_generator_on_top() -> None:
    """PAUSE (a yield and the resume right after it) adds to the running generator's suspended time;
    one naming another generator (not on top: started before the session) changes nothing."""
    block = (
        BlockEncoder(A, T).call(0, T).call(3, T + 10, key=1).pause(T + 60, 1, 40).pause(T + 70, 2, 5)
        .call(2, T + 80).ret(T + 90).ret(T + 100).ret(T + 110).to_bytes()
    )
    b = builder()
    events = b.feed(block)
    gen_ret = next(e for e in events if e["type"] == "return" and e["func"] == "gen")
    assert gen_ret["dt_ns"] == 90 and gen_ret["suspended_ns"] == 40
    leaf = next(e for e in events if e["type"] == "call" and e["func"] == "leaf")
    assert leaf["parent_id"] == 2  # the generator kept running: still on the stack
    assert b.stats["calls"] == 3 and b.stats["returns"] == 3


def test_a_step_is_time_run_by_a_suspended_generator() -> None:
    """STEP (a resume and the yield right after it) moves a stashed generator on: its suspended time
    grows by the time since it was suspended minus the time it ran; an unknown key changes nothing."""
    block = (
        BlockEncoder(A, T).call(0, T).call(3, T + 10, key=1).yield_(T + 20, 1)
        .step(T + 50, 1, 5).step(T + 60, 9, 5).resume(T + 80, 1).ret(T + 90).ret(T + 100).to_bytes()
    )
    b = builder()
    events = b.feed(block)
    gen_ret = next(e for e in events if e["type"] == "return" and e["func"] == "gen")
    assert gen_ret["dt_ns"] == 80 and gen_ret["suspended_ns"] == (50 - 5 - 20) + (80 - 50)
    assert b.stats["max_depth"] == 2 and b.stats["calls"] == 2


@pytest.mark.parametrize("cut", range(1, 12))
def test_block_cut_inside_a_trailing_string_emits_nothing_half_read(cut: int) -> None:
    block = BlockEncoder(A, T).call(0, T + 1).ret(T + 2, "0123456789").to_bytes()
    b = builder()
    events = b.feed(block[:-cut])
    assert types(events) == [("call", "main")]
    assert b.stats["corrupt_blocks"] == 1


def test_generator_keys_are_small_and_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A generator's frame address is written as a small number, free again after its final return."""
    slot = 9
    records = [
        (CALL, slot, 3, 10, None, K1),
        (YIELD, slot, 3, 20, None, K1),
        (CALL, slot, 3, 30, None, K2),  # a second generator while the first is suspended: key 2
        (YIELD, slot, 3, 40, None, K2),
        (RESUME, slot, 3, 50, None, K1),
        (RETURN, slot, 3, 60, NO_VALUE, K1),  # the first one ends: key 1 is free
        (CALL, slot, 3, 70, None, K1 + 64),  # a third generator takes key 1 again
        (YIELD, slot, 3, 80, None, K1 + 64),
    ]
    monkeypatch.setattr(_fallback, "_collect", lambda: [(A, records)])
    ((_, block),) = _fallback.drain(_Calibration(), SimpleNamespace(preview=repr))
    _fallback.take_counts(slot)
    expected = (
        BlockEncoder(A, T + 10).call(3, T + 10, key=1).yield_(T + 20, 1).call(3, T + 30, key=2).yield_(T + 40, 2)
        .resume(T + 50, 1).ret(T + 60).call(3, T + 70, key=1).yield_(T + 80, 1).to_bytes()
    )
    assert block == expected
    # after the header: 3 calls of 4 bytes (tag, code, dts, key), 4 suspends/resumes of 3, a return of 2
    assert len(block) - len(BlockEncoder(A, T + 10).to_bytes()) == 12 + 12 + 2
    b = builder()
    events = b.feed(block) + b.finish(T + 100)
    assert [(e["type"], e["call_id"], e.get("abandoned")) for e in events] == [
        ("call", 1, None), ("call", 2, None), ("return", 1, None), ("call", 3, None),
        ("return", 2, True), ("return", 3, True),
    ]
