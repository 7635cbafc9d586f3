"""The call-tree model: tracks, parents across tracks, own time, nesting (hand-made events)."""
from __future__ import annotations

from typing import Any

from handit.calltree import CallTree, calls

SID = "s1"


def call(cid: int, func: str, t0: int, parent: int | None = None, thread: int = 7, task: int | None = None) -> dict[str, Any]:
    e: dict[str, Any] = {"type": "call", "session_id": SID, "call_id": cid, "parent_id": parent, "func": func,
                         "module": "m", "file": "m.py", "line": 1, "t0_ns": t0, "args_preview": {}, "thread": thread}
    if task is not None:
        e.update(task=f"Task-{task}", task_id=task)
    return e


def ret(cid: int, t1: int, suspended: int | None = None, **flags: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"type": "return", "session_id": SID, "call_id": cid, "t1_ns": t1, "locals_preview": {}, **flags}
    if suspended is not None:
        e["suspended_ns"] = suspended
    return e


def test_tasks_are_tracks_whose_first_calls_have_the_creator_as_parent() -> None:
    # main (a task) gathers two llm coroutines, each its own task, interleaved on one thread
    events = [
        call(1, "<module>", 0),
        call(2, "main", 10, parent=1, task=1),
        call(3, "llm", 20, parent=2, task=2),
        call(4, "llm", 30, parent=2, task=3),
        call(5, "parse", 40, parent=3, task=2), ret(5, 45),
        ret(3, 50, suspended=20),
        ret(4, 60, suspended=25),
        ret(2, 70, suspended=50),
        ret(1, 80),
    ]
    done = {c.call_id: c for c in calls(events)}
    assert {c.call_id: c.track.name for c in done.values()} == {1: "thread 7", 2: "Task-1", 3: "Task-2", 4: "Task-3", 5: "Task-2"}
    llm1, llm2, main = done[3], done[4], done[2]
    assert llm1.parent_track is main.track and llm1.concurrent and llm2.concurrent and main.concurrent
    assert not done[5].concurrent and done[5].depth == 1
    assert all(c.nests for c in done.values())  # each track holds one stack: nothing overlaps partly
    # own time: total minus suspended minus the children's active time on the same track
    assert (llm1.dt_ns, llm1.suspended_ns, llm1.own_ns) == (30, 20, 5)
    assert (main.dt_ns, main.own_ns) == (60, 10)  # the llm tasks ran on other tracks: not subtracted
    # the thread's root ran the event loop: the tasks' active time on its thread is not its own
    assert done[1].own_ns == 80 - (60 - 50) - (30 - 20) - (30 - 25)


def test_interleaved_generators_on_one_track_do_not_nest() -> None:
    events = [call(1, "main", 0), call(2, "g1", 10, parent=1), call(3, "g2", 20, parent=1),
              ret(2, 30, suspended=5), ret(3, 40, suspended=5), ret(1, 50)]
    done = {c.call_id: c for c in calls(events)}
    assert (done[1].nests, done[2].nests, done[3].nests) == (True, False, True)


def test_open_calls_close_as_incomplete_innermost_first() -> None:
    tree = CallTree()
    for e in (call(1, "a", 0), call(2, "b", 5, parent=1), call(3, "c", 9, parent=2)):
        assert tree.add(e) == []
    assert tree.has_open(SID) and tree.open_call(SID, 2).func == "b"  # type: ignore[union-attr]
    closed = tree.close(100)
    assert [c.func for c in closed] == ["c", "b", "a"]
    assert all(c.nests and "incomplete" in c.flags and c.t1_ns == 100 for c in closed)
    assert not tree.has_open(SID)


def test_exception_is_kept_on_its_call() -> None:
    exc = {"type": "exception", "session_id": SID, "call_id": 1, "type_name": "KeyError", "message": "'x'"}
    (done,) = calls([call(1, "f", 0), exc, ret(1, 4, raised=True)])
    assert done.exception == ("KeyError", "'x'") and done.flags == ("raised",)
