"""Task names as last set (``Task.set_name`` after the task was made) in every view: events, the tree,
the Chrome, Perfetto and speedscope exports, the viewer's tracks, and ``handit show`` of a trace file."""
from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import handit
from handit.reader import BlockEncoder, TraceBuilder
from handit.records import TASK_MODULE
from handit.renderers import plain_text
from handit.renderers.chrome import ChromeTraceWriter
from handit.renderers.speedscope import SpeedscopeWriter
from handit.renderers.tree import TreeBuilder
from handit.viewer.encode import PageData

from conftest import child_env

PROGRAM = """
import asyncio

async def leaf(i):
    await asyncio.sleep(0)
    return i

async def self_named(i):
    asyncio.current_task().set_name(f"worker-{i}")  # renamed by itself, after its first call
    await asyncio.sleep(0)
    return await leaf(i)

async def main():
    later = asyncio.create_task(leaf(1))  # asyncio's Task-N, renamed before it runs
    later.set_name("renamed-before-start")
    named = asyncio.create_task(leaf(2), name="given")  # named when made, renamed while it runs
    await asyncio.sleep(0)
    named.set_name("renamed-while-running")
    kept = asyncio.create_task(leaf(3), name="kept")  # never renamed
    return await asyncio.gather(later, named, kept, self_named(4))
"""

EXPECTED = {1: "renamed-before-start", 2: "renamed-while-running", 3: "kept", 4: "worker-4"}


def _program() -> Any:
    namespace: dict[str, Any] = {"__name__": "names_program"}
    exec(compile(PROGRAM, "names_program.py", "exec"), namespace)
    return namespace


def _traced() -> list[dict[str, Any]]:
    program = _program()
    with handit.session("names") as s:
        assert asyncio.run(program["main"]()) == [1, 2, 3, 4]
    return s.events


def _leaf_tasks(events: list[dict[str, Any]]) -> dict[int, tuple[str, int]]:
    """leaf(i) -> (its task's name, task id), from the call events (i from the argument preview)."""
    return {int(e["args_preview"]["i"]): (e["task"], e["task_id"]) for e in events
            if e["type"] == "call" and e["func"] == "leaf"}


def test_names_set_later_are_in_the_events(engine: Any) -> None:
    events = _traced()
    leaves = _leaf_tasks(events)
    assert {i: name for i, (name, _) in leaves.items()} == EXPECTED
    (first,) = [e for e in events if e["type"] == "call" and e["func"] == "self_named"]
    assert first["task"] == "worker-4" == leaves[4][0]  # its first call ran before the rename: named as last set
    renames = {e["task_id"]: e["task"] for e in events if e["type"] == "task_name"}
    assert renames == {leaves[i][1]: EXPECTED[i] for i in (1, 2, 4)}  # "kept" was never renamed


def test_names_set_later_are_in_every_export(engine: Any) -> None:
    events = _traced()
    leaves = _leaf_tasks(events)
    wanted = set(EXPECTED.values())

    out = io.BytesIO()
    chrome = ChromeTraceWriter(out)
    for e in events:
        chrome.add(e)
    chrome.close()
    thread_names: dict[Any, str] = {}
    for e in json.loads(out.getvalue())["traceEvents"]:
        if e.get("name") == "thread_name":
            thread_names[e["tid"]] = e["args"]["name"]  # a later one renames the track (as viewers read it)
    assert {thread_names[leaves[i][1]].split(" · ")[0] for i in EXPECTED} == wanted

    out = io.BytesIO()
    speedscope = SpeedscopeWriter(out)
    for e in events:
        speedscope.add(e)
    speedscope.close()
    profiles = [p["name"].split(" · ")[1] for p in json.loads(out.getvalue())["profiles"]]
    (main,) = [e["task"] for e in events if e["type"] == "call" and e["func"] == "main"]  # asyncio.run's Task-N
    assert set(profiles) == wanted | {main}

    from test_perfetto import export as perfetto_export

    tracks = {t["name"] for t in perfetto_export(events).tracks.values() if t["kind"] == "child"}
    assert wanted <= tracks and "given" not in tracks

    page = PageData()
    for e in events:
        page.add(e)
    meta, _ = page.finish()
    viewer = {t["name"] for t in meta["tracks"] if t["kind"] == "task"}
    assert wanted <= viewer and "given" not in viewer

    text = plain_text([TreeBuilder().feed(events).block()])
    for name in wanted:
        assert f"[concurrent: task {name}]" in text
    assert "task given]" not in text


@pytest.mark.engine_dependent  # handit runs in a child process
def test_show_of_a_trace_file_names_tasks_as_last_set(tmp_path: Path) -> None:
    (tmp_path / "prog.py").write_text(textwrap.dedent(PROGRAM) + "\nprint(asyncio.run(main()))\n")
    env = {k: v for k, v in child_env().items()
           if not k.startswith("HANDIT_") or k in ("HANDIT_ENGINE", "HANDIT_REQUIRE_COMPILED")}

    def handit_cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "handit", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    handit_cli("run", "--no-summary", "-o", "t.handit", "prog.py")
    shown = handit_cli("show", "t.handit")
    for name in EXPECTED.values():
        assert f"[concurrent: task {name}]" in shown
    assert "task given]" not in shown
    handit_cli("export", "t.handit", "--format", "chrome", "-o", "t.json")
    names = {e["args"]["name"].split(" · ")[0] for e in json.loads((tmp_path / "t.json").read_text())["traceEvents"]
             if e.get("name") == "thread_name"}
    assert set(EXPECTED.values()) <= names


class _Codes:
    def __init__(self) -> None:
        self.names = ["leaf", "renamed"]

    def __call__(self, index: int) -> Any:
        from handit.tracefile import StoredCode

        if index == 0:
            return StoredCode("m", "leaf", "m.py", 1, ())
        return StoredCode(TASK_MODULE, "renamed", "", 0, ())


def test_a_rename_goes_to_the_task_made_with_that_name() -> None:
    # two tasks, Task-7 and Task-8; Task-7 is renamed (code entry 1) after both ended
    block = (BlockEncoder(1, 1000).task(1000, 1, (7 << 1) | 1).task(1001, 2, (8 << 1) | 1)
             .call(0, 1002, key=1).call(0, 1003, key=2).ret(1004).ret(1005)
             .rename(1006, (7 << 1) | 1, 1 << 1).rename(1007, (9 << 1) | 1, 1 << 1).to_bytes())
    builder = TraceBuilder("s", _Codes())
    events = builder.feed(block)
    calls = [e for e in events if e["type"] == "call"]
    assert [(e["task"], e["task_id"]) for e in calls] == [("Task-7", 1), ("Task-8", 2)]  # as decoded, in order
    assert [e for e in events if e["type"] == "task_name"] == [
        {"type": "task_name", "session_id": "s", "ts_ns": 1006, "task_id": 1, "task": "renamed"}]  # Task-9: unknown
    assert builder.task_names == {1: "renamed"}
