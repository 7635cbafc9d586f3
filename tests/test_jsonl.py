"""Tests for handit.exporters.jsonl and .memory: whole lines, shared files, counted failures."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import child_env

from handit._policy import CodeInfo
from handit.exporters import jsonl as jsonl_mod
from handit.exporters.base import Exporter
from handit.exporters.jsonl import JsonlExporter, encode_events
from handit.exporters.memory import MemoryExporter
from handit.reader import BlockEncoder, TraceBuilder
from handit.tracefile import iter_events

T = 1_700_000_000_000_000_000


def test_encode_events_is_compact_utf8_lines() -> None:
    events: list[dict[str, Any]] = [{"type": "call", "func": "f", "args_preview": {"s": "héllo ☃"}}, {"type": "return", "x": None}]
    data = encode_events(events)
    assert data == '{"type":"call","func":"f","args_preview":{"s":"héllo ☃"}}\n{"type":"return","x":null}\n'.encode()
    assert encode_events([]) == b""


def test_python_encoder_writes_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[dict[str, Any]] = [
        {"type": "call", "t0_ns": T, "args_preview": {"a": "'\u2603'", "b": "x\ny\"z"}, "parent_id": None, "f": 1.5, 3: True},
        {"type": "x", "obj": object, "path": "bad\udc80"},
    ]
    fast = encode_events(events)
    monkeypatch.setattr(jsonl_mod, "_C_ENCODE", None)
    assert encode_events(events) == fast


def test_encode_events_never_fails_on_odd_values() -> None:
    data = encode_events([{"type": "x", "path": "bad\udc80name", "obj": object, "set": {1}}])
    (event,) = [json.loads(line) for line in data.splitlines()]
    assert event["path"] == "bad\udc80name"  # the lone surrogate reads back as itself
    assert event["obj"] == str(object) and event["set"] == "{1}"


def test_writes_whole_lines_when_the_buffer_fills(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    exp = JsonlExporter(str(path), buffer_bytes=200)
    assert isinstance(exp, Exporter) and exp.name == "jsonl"
    exp.write_events([{"type": "call", "n": 1}])
    assert path.read_bytes() == b""  # gathered
    exp.write_events([{"type": "call", "n": i, "pad": "x" * 50} for i in range(2, 6)])
    data = path.read_bytes()
    assert data.endswith(b"\n") and len(data.splitlines()) == 5
    exp.write_events([{"type": "return", "n": 6}])
    exp.flush()
    assert [json.loads(line)["n"] for line in path.read_bytes().splitlines()] == [1, 2, 3, 4, 5, 6]
    assert exp.stats["events"] == 6 and exp.stats["writes"] == 2 and exp.stats["bytes"] == path.stat().st_size
    exp.close()
    exp.close()


def test_created_owner_only_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    old = os.umask(0)
    try:
        exp = JsonlExporter(str(path))
    finally:
        os.umask(old)
    exp.write_events([{"type": "a"}])
    exp.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    exp = JsonlExporter(str(path))
    exp.write_events([{"type": "b"}])
    exp.close()
    assert [json.loads(x)["type"] for x in path.read_text().splitlines()] == ["a", "b"]


def test_unwritable_path_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        JsonlExporter(str(tmp_path / "no" / "t.jsonl"))


def test_write_errors_are_counted_and_warned_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exp = JsonlExporter(str(tmp_path / "t.jsonl"), buffer_bytes=1)

    def full(fd: int, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jsonl_mod, "write_all", full)
    with pytest.warns(RuntimeWarning, match="No space left"):
        exp.write_events([{"type": "a"}, {"type": "b"}])
    exp.write_events([{"type": "c"}])  # no second warning (filterwarnings=error would raise)
    assert exp.stats["errors"] == 2 and exp.stats["dropped"] == 3 and exp.stats["events"] == 0
    monkeypatch.undo()
    exp.close()
    exp.write_events([{"type": "after close"}])
    assert exp.stats["dropped"] == 4


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_child_does_not_repeat_the_parents_lines(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    exp = JsonlExporter(str(path))
    exp.write_events([{"type": "parent"}])
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            exp.write_events([{"type": "child"}])
            exp.close()
            code = 0
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0
    exp.close()
    assert sorted(json.loads(x)["type"] for x in path.read_text().splitlines()) == ["child", "parent"]


def test_builder_events_round_trip_through_a_jsonl_file(tmp_path: Path) -> None:
    codes = [CodeInfo(0, "m", "f", "/m.py", 3, False, ("a",), (False,))]
    block = BlockEncoder(1, T).call(0, T + 1, args=["'ü'"]).unwind(T + 2, "KeyError", "'k'").to_bytes()
    events = TraceBuilder("s", codes.__getitem__).feed(block)
    path = tmp_path / "t.jsonl"
    with_file = JsonlExporter(str(path))
    with_file.write_events(events)
    with_file.close()
    assert list(iter_events(str(path))) == events


APPENDER = textwrap.dedent(
    """
    import sys, time
    from handit.exporters.jsonl import JsonlExporter

    path, proc, count, buffer_bytes, start_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    exp = JsonlExporter(path, buffer_bytes=buffer_bytes)
    while time.time() < start_at:
        time.sleep(0.001)
    for i in range(0, count, 20):
        exp.write_events([{"type": "call", "proc": proc, "n": n, "pad": "x" * (n % 300)} for n in range(i, i + 20)])
    exp.close()
    """
)


@pytest.mark.parametrize("buffer_bytes", [0, 256 * 1024], ids=["batch-per-write", "buffered"])
def test_processes_appending_to_one_file(tmp_path: Path, buffer_bytes: int) -> None:
    path = tmp_path / "shared.jsonl"
    procs, count = 4, 2000
    start_at = time.time() + 1.0
    children = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(path), str(p), str(count), str(buffer_bytes), str(start_at)],
            env=child_env(traced=False), cwd=tmp_path,
        )
        for p in range(procs)
    ]
    for child in children:
        assert child.wait(timeout=120) == 0
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    events = [json.loads(line) for line in lines[:-1]]  # every line parses
    assert len(events) == procs * count
    for p in range(procs):
        assert sorted(e["n"] for e in events if e["proc"] == p) == list(range(count))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_memory_exporter() -> None:
    exp = MemoryExporter()
    exp.write_events([{"type": "call"}, {"type": "return"}])
    exp.write_events([{"type": "call"}])
    assert len(exp.events) == 3 and len(exp.of_type("call")) == 2
    exp.flush()
    exp.close()
    exp.write_events([{"type": "late"}])
    assert exp.stats == {"events": 3, "dropped": 1, "flushes": 2}
    exp.clear()
    assert exp.events == []
