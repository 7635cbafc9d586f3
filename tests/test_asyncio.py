"""Asyncio traced truthfully: each task its own stack, parents by OpenTelemetry's context rule, every view.

Each program of tests/asyncio_programs.py runs under both engines (``engine`` fixture);
the events, the call tree model, the summary, the tree and both exports are checked.
"""
from __future__ import annotations

import io
import subprocess
import json
import sys
from typing import Any

import pytest

import handit
from handit.calltree import calls
from handit.renderers import plain_text
from handit.renderers.chrome import ChromeTraceWriter
from handit.renderers.speedscope import SpeedscopeWriter
from handit.renderers.summary import Stats
from handit.renderers.tree import TreeBuilder

import asyncio_programs as progs


def traced(name: str) -> tuple[list[dict[str, Any]], Any]:
    with handit.session("asyncio") as s:
        result = progs.run(name)
    return s.events, result


def call_events(events: list[dict[str, Any]], func: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "call" and e["func"] == func]


def by_id(events: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    return {e["call_id"]: e for e in events if e["type"] == "call"}


def only(events: list[dict[str, Any]], func: str) -> dict[str, Any]:
    (e,) = call_events(events, func)
    return e


TASK_PROGRAMS = sorted(n for n in progs.PROGRAMS if n not in ("to_thread", "run_in_executor", "wait_for"))


@pytest.mark.parametrize("program", TASK_PROGRAMS)
def test_a_tasks_first_call_has_the_creator_as_parent(engine: Any, program: str) -> None:
    events, _ = traced(program)
    main = only(events, progs.PROGRAMS[program].__name__)
    roots = [e for e in events if e["type"] == "call" and e["func"] in ("llm", "failing", "forever")]
    assert roots, "the tasks' coroutines were recorded"
    for e in roots:
        assert e["parent_id"] == main["call_id"], (e["func"], e["parent_id"])
        assert e["task_id"] != main["task_id"] and e["task"] and e["thread"] == main["thread"]
    assert len({e["task_id"] for e in roots}) == len(roots), "each task has its own number"
    calls_ = by_id(events)
    for e in call_events(events, "parse"):  # a plain call inside a task: parent and task are its caller's
        parent = calls_[e["parent_id"]]
        assert parent["func"] == "llm" and (e["task"], e["task_id"]) == (parent["task"], parent["task_id"])
    # asyncio.run's task for main: its parent is the traced function that ran the loop
    assert calls_[main["parent_id"]]["func"] == "run" and "task_id" not in calls_[main["parent_id"]]


def test_task_names_are_the_programs(engine: Any) -> None:
    events, result = traced("create_task")
    assert result == 6
    assert sorted(e["task"] for e in call_events(events, "llm")) == ["first", "second"]


def test_a_task_factory_of_the_program_is_kept(engine: Any) -> None:
    events, result = traced("factory")
    assert result == (10, 1)  # the factory made the task
    assert only(events, "llm")["task"] == "factory-made"


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager_task_factory is new in 3.12")
def test_an_eager_task_is_its_own_task_from_its_first_call(engine: Any) -> None:
    events, result = traced("eager")
    assert result == 12
    llm, parse = only(events, "llm"), only(events, "parse")
    assert llm["task"] == "eager" and parse["task"] == "eager" and parse["parent_id"] == llm["call_id"]


def test_wait_for_keeps_the_caller_as_parent(engine: Any) -> None:
    events, result = traced("wait_for")
    assert result == 2
    assert only(events, "llm")["parent_id"] == only(events, "main_wait_for")["call_id"]


@pytest.mark.parametrize("program", ["to_thread", "run_in_executor"])
def test_work_handed_to_a_thread_has_the_caller_as_parent(engine: Any, program: str) -> None:
    events, result = traced(program)
    assert result in (6, 8)
    main, blocking = only(events, f"main_{program}"), only(events, "blocking")
    assert blocking["parent_id"] == main["call_id"]
    assert blocking["thread"] == progs.THREADS["blocking"] != progs.THREADS["main"]
    assert "task_id" not in blocking
    assert only(events, "parse")["parent_id"] == blocking["call_id"]


def test_cancelled_and_failing_tasks_end_and_keep_their_parent(engine: Any) -> None:
    events, result = traced("cancel")
    assert result == "cancelled"
    forever = only(events, "forever")
    assert forever["task"] == "doomed"
    ends = {e["call_id"]: e for e in events if e["type"] == "return"}
    exc = [e for e in events if e["type"] == "exception" and e["call_id"] == forever["call_id"]]
    if sys.version_info < (3, 11) and ends[forever["call_id"]].get("abandoned"):
        # PY310: the pure engine's profile function cannot tell a coroutine left by a CancelledError
        # thrown in from C from one suspended at the same instruction (docs/capture.md): it ends once
        assert not exc
    else:
        assert ends[forever["call_id"]].get("raised") is True
        assert exc  # (its type name under the profile function is issue 11.4's)

    events, result = traced("exception")
    assert result == ["ValueError", 4]
    failing = only(events, "failing")
    assert failing["parent_id"] == only(events, "main_exception")["call_id"]
    assert len([e for e in events if e["type"] == "exception" and e["call_id"] == failing["call_id"]]) == 1


def test_durations_and_own_time_of_coroutines(engine: Any) -> None:
    events, _ = traced("gather")
    done = {c.call_id: c for c in calls(events)}
    for e in call_events(events, "llm"):
        c = done[e["call_id"]]
        assert c.suspendable and 0 < c.suspended_ns <= c.dt_ns  # from first start to return, with the awaits
        assert c.own_ns <= c.active_ns <= c.dt_ns
    stats = Stats().feed(events)
    for fs in stats.functions.values():
        assert 0 <= fs.own_ns <= fs.total_ns, fs.func
    llm = stats.functions[("asyncio_programs", "llm")]
    assert llm.calls == 2 and llm.own_ns < llm.total_ns


def export(writer_class: Any, events: list[dict[str, Any]]) -> Any:
    out = io.BytesIO()
    writer = writer_class(out)
    for e in events:
        writer.add(e)
    writer.close()
    return json.loads(out.getvalue())


@pytest.mark.parametrize("program", ["gather", "as_completed", "exception", "to_thread"])
def test_chrome_export_gives_each_task_a_track_that_nests(engine: Any, program: str) -> None:
    events, _ = traced(program)
    trace = export(ChromeTraceWriter, events)["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in trace if e.get("name") == "thread_name"}
    slices: dict[Any, list[tuple[float, float]]] = {}
    where: dict[str, set[Any]] = {}
    for e in trace:
        if e["ph"] == "X":
            slices.setdefault(e["tid"], []).append((e["ts"], e["ts"] + e["dur"]))
            where.setdefault(e["name"], set()).add(e["tid"])
    assert all(progs.nests(s) for s in slices.values())
    if program != "to_thread":
        llm_tracks = where.get("llm", set()) | where.get("failing", set())
        assert len(llm_tracks) == 2 and all(" · " in names[tid] for tid in llm_tracks)
        assert not llm_tracks & where[progs.PROGRAMS[program].__name__]
    else:
        assert where["blocking"] != where["main_to_thread"]


@pytest.mark.parametrize("program", ["gather", "task_group" if sys.version_info >= (3, 11) else "create_task"])
def test_speedscope_export_has_a_profile_per_task_that_nests(engine: Any, program: str) -> None:
    events, _ = traced(program)
    doc = export(SpeedscopeWriter, events)
    frames = [f["name"] for f in doc["shared"]["frames"]]
    llm_profiles = []
    for profile in doc["profiles"]:
        stack: list[int] = []
        for ev in profile["events"]:  # speedscope's rule: closes match the innermost open frame
            if ev["type"] == "O":
                stack.append(ev["frame"])
            else:
                assert stack.pop() == ev["frame"]
        assert not stack
        opened = [frames[ev["frame"]] for ev in profile["events"] if ev["type"] == "O"]
        if any(name.endswith(".llm") for name in opened):
            llm_profiles.append(opened)
    assert len(llm_profiles) == 2  # one profile per task, never llm inside llm
    assert all(sum(name.endswith(".llm") for name in opened) == 1 for opened in llm_profiles)


def test_tree_puts_gathered_tasks_under_the_gatherer_marked_concurrent(engine: Any) -> None:
    events, _ = traced("gather")
    text = plain_text([TreeBuilder().feed(events).block()])
    lines = text.splitlines()
    main = next(i for i, line in enumerate(lines) if "main_gather(" in line)
    below = [line for line in lines[main + 1:] if "llm(" in line]
    assert len(below) == 2 and all("[concurrent: task Task-" in line for line in below)
    indent = len(lines[main]) - len(lines[main].lstrip(" │├└─"))
    assert all(len(line) - len(line.lstrip(" │├└─")) > indent for line in below)


@pytest.mark.engine_dependent  # a session with the run's default engine
def test_markers_stop_with_the_last_session() -> None:
    import asyncio.base_events

    original = asyncio.base_events.BaseEventLoop.__dict__["create_task"]
    with handit.session("a"):
        assert asyncio.base_events.BaseEventLoop.__dict__["create_task"] is not original
    from handit import sessions

    sessions.release_idle()  # an engine kept installed a moment after its last session goes now
    assert asyncio.base_events.BaseEventLoop.__dict__["create_task"] is original


@pytest.mark.engine_dependent  # a traced child process
def test_asyncio_imported_after_the_session_started_is_covered(tmp_path: Any) -> None:
    from conftest import child_env

    script = tmp_path / "late.py"
    script.write_text(
        "import json, sys\n"
        "import handit\n"
        "assert 'asyncio' not in sys.modules\n"
        "with handit.session('late') as s:\n"
        "    import work\n"
        "    work.go()\n"
        "print(json.dumps([(e['func'], e['parent_id'], e.get('task')) for e in s.events if e['type'] == 'call']))\n")
    (tmp_path / "work.py").write_text(
        "import asyncio\n"
        "async def llm(i):\n    await asyncio.sleep(0)\n    return i\n"
        "async def main():\n    return await asyncio.gather(llm(1), llm(2))\n"
        "def go():\n    return asyncio.run(main())\n")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=child_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    calls_ = json.loads(done.stdout)
    ids = {func: n + 1 for n, (func, _, _) in enumerate(calls_) if func == "main"}
    llm = [c for c in calls_ if c[0] == "llm"]
    assert len(llm) == 2 and all(parent == ids["main"] and task.startswith("Task-") for _, parent, task in llm)
