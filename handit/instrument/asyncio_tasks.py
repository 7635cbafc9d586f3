"""Instrumentation stage, asyncio: tasks created and work handed to executor threads -> marker records.

While an engine is installed (:mod:`handit.sessions` calls :func:`install` and
:func:`uninstall`), two methods of ``asyncio.BaseEventLoop`` are wrapped:

- ``create_task``, behind ``asyncio.create_task``, ``ensure_future``, ``gather``,
  ``TaskGroup``, ``as_completed`` and (before 3.12) ``wait_for``: a TASK marker keyed by
  the coroutine's frame is written in the creating thread, so the task's first call gets
  as parent the call that created it (OpenTelemetry's context rule) and every call in it
  the task's name and a number. When the name is known before the task is made (given to
  ``create_task``; or to ``asyncio.create_task`` / ``TaskGroup.create_task``, which on
  3.10-3.12 set it only afterwards: read from their frame) the marker goes first, so an
  eager task (3.12+, which runs to its first ``await`` inside ``create_task``) is its own
  task from its first call. Otherwise (asyncio's ``Task-N``) it follows the task's
  creation; an eager task then starts as a plain call of its creator and is its task
  from its first resumption on. A task factory of the program's stays in place
  (``create_task`` calls it). A done callback compares the task's name when it is done
  with the name marked: a task renamed since (``Task.set_name``, a C method that cannot
  be wrapped) gets a RENAME marker, and every view shows the name it ended with. A task
  still running when its session stops keeps the name it had when it was made.
- ``run_in_executor``, behind ``asyncio.to_thread``: a HANDOFF marker here, and ENTER /
  LEAVE around the function on the worker thread, so its first call gets as parent the
  call that handed it over.

Markers hold integers only (the frame's address, the name's reference, a token): no task
or coroutine is kept alive by handit. Other loops (uvloop's has its own ``create_task``)
are not touched: their tasks' first calls stay roots. If ``asyncio`` is not imported yet
when the first session starts, an import hook wraps the methods once
``asyncio.base_events`` has run. Nothing here raises into the program: a failed marker is
skipped.
"""
from __future__ import annotations

import functools
import itertools
import sys
from typing import Any

from ..records import ENTER, HANDOFF, LEAVE
from ._hook import ImportHook

__all__ = ["install", "installed", "uninstall"]

_MODULE = "asyncio.base_events"
_engine: Any = None
_patches: list[tuple[Any, str, Any, Any]] = []  # (owner, name, original, replacement)
_tokens = itertools.count(1)
_hook: _AsyncioHook | None = None
_naming: frozenset[Any] | None = None  # code of asyncio's functions that name a task after making it


class _AsyncioHook(ImportHook):
    """The import hook that wraps the loop's methods once asyncio is imported (apart from the HTTP clients' hook)."""


def install(engine: Any) -> None:
    """Write markers through ``engine`` (idempotent): wrap the loop's methods now, or when asyncio is imported.

    Args:
        engine: the engine module in use (``mark_task``, ``task_name_ref`` and ``mark_handoff``).
    """
    global _engine, _hook
    _engine = engine
    module = sys.modules.get(_MODULE)
    if module is not None:
        _patch(module)
    elif _hook is None:
        _hook = _AsyncioHook([_MODULE], _loaded)
        sys.meta_path.insert(0, _hook)


def uninstall() -> None:
    """Stop writing markers and put the loop's methods back (those replaced by another tool since stay)."""
    global _engine, _hook
    _engine = None
    if _hook is not None:
        sys.meta_path[:] = [f for f in sys.meta_path if f is not _hook]
        _hook = None
    for owner, name, original, replacement in reversed(_patches):
        if owner.__dict__.get(name) is replacement:
            setattr(owner, name, original)
    _patches.clear()


def installed() -> bool:
    """Whether the loop's methods are wrapped now."""
    return bool(_patches)


def _loaded(name: str) -> None:
    global _hook
    if _hook is not None:
        sys.meta_path[:] = [f for f in sys.meta_path if f is not _hook]  # once is enough
        _hook = None
    if _engine is not None:
        try:
            _patch(sys.modules[name])
        except Exception:  # an asyncio this code does not know: no markers
            pass


def _patch(base_events: Any) -> None:
    if _patches:
        return
    loop = base_events.BaseEventLoop
    create_original = loop.__dict__["create_task"]
    executor_original = loop.__dict__["run_in_executor"]

    @functools.wraps(create_original)
    def create_task(self: Any, coro: Any, *args: Any, **kwargs: Any) -> Any:
        if _engine is None or not _engine.session_var.get():
            # no session here: no marker to write (mark_task drops it), no Task-N name to keep
            # (a server's task per request outside any session: ~13 us and a name each)
            return create_original(self, coro, *args, **kwargs)
        frame, marked = _marked_before(coro, kwargs.get("name"))
        task = create_original(self, coro, *args, **kwargs)
        if frame is not None:
            marked = _mark_after(frame, task)
        if marked is not None:
            _watch_name(task, *marked)
        return task

    @functools.wraps(executor_original)
    def run_in_executor(self: Any, executor: Any, func: Any, *args: Any) -> Any:
        if _engine is not None and callable(func) and not _is_coroutine_function(func):
            token = _hand_over()
            if token:
                func = functools.partial(_run_handed, token, func)
        return executor_original(self, executor, func, *args)

    for name, original, replacement in (("create_task", create_original, create_task),
                                        ("run_in_executor", executor_original, run_in_executor)):
        setattr(loop, name, replacement)
        _patches.append((loop, name, original, replacement))


def _naming_code() -> frozenset[Any]:
    """Code of asyncio.create_task and TaskGroup.create_task (3.10-3.12 name the task after making it)."""
    global _naming
    if _naming is None:
        found = []
        tasks = sys.modules.get("asyncio.tasks")
        taskgroups = sys.modules.get("asyncio.taskgroups")  # PY311+
        for fn in (getattr(tasks, "create_task", None), getattr(getattr(taskgroups, "TaskGroup", None), "create_task", None)):
            code = getattr(fn, "__code__", None)
            if code is not None:
                found.append(code)
        if tasks is None:
            return frozenset(found)  # asyncio still loading: looked up again next time
        _naming = frozenset(found)
    return _naming


def _marked_before(coro: Any, name: Any) -> tuple[Any, tuple[str, int] | None]:
    """Write the TASK marker now if the task's name is known.

    Returns:
        ``(frame to mark after creation or None, (name, reference) marked now or None)``.
    """
    try:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            return None, None
        if name is None:
            caller = sys._getframe(2)  # past create_task (this module's): who called loop.create_task
            code = caller.f_code  # (by identity: a code object's hash reads all of it, ~10,000 instructions on 3.12)
            if any(code is c for c in _naming_code()):
                name = caller.f_locals.get("name")
        if name is None:
            return frame, None
        name = str(name)
        ref = _engine.task_name_ref(name)
        return None, (name, ref) if _engine.mark_task(frame, ref) else None
    except Exception:  # never reaches the program: the task's first call stays a root
        return None, None


def _mark_after(frame: Any, task: Any) -> tuple[str, int] | None:
    """The TASK marker of a task named by asyncio (``Task-N``), once it is made; returns (name, reference) marked."""
    try:
        if not task.done():  # an eager task that finished inside create_task ran as a plain call
            name = str(task.get_name())
            ref = _engine.task_name_ref(name)
            if _engine.mark_task(frame, ref):  # in a session: the name is watched
                return name, ref
    except Exception:  # never reaches the program
        pass
    return None


def _watch_name(task: Any, name: str, ref: int) -> None:
    """Have the task say, when done, the name it was given since it was marked as ``name`` (``ref``)."""
    try:
        if ref and not task.done():
            task.add_done_callback(functools.partial(_renamed, name, ref))
    except Exception:  # a task type of a factory's without callbacks: its first name stays
        pass


def _renamed(name: str, ref: int, task: Any) -> None:
    # a done callback: runs on the loop, never raises into it
    try:
        now = task.get_name()
        engine = _engine
        if now != name and engine is not None:
            engine.rename_task(ref, engine.task_name_ref(str(now)))
    except Exception:
        pass


def _is_coroutine_function(func: Any) -> bool:
    # run_in_executor refuses these in debug mode: the check must see the program's function
    code = getattr(func, "__code__", None)
    return code is not None and bool(code.co_flags & 0x180)  # CO_COROUTINE | CO_ITERABLE_COROUTINE


def _hand_over() -> int:
    token = next(_tokens)
    try:
        _engine.mark_handoff(HANDOFF, token)
    except Exception:
        return 0
    return token


def _run_handed(token: int, func: Any, *args: Any) -> Any:
    engine = _engine
    mark = engine.mark_handoff if engine is not None else None
    if mark is not None:
        mark(ENTER, token)
    try:
        return func(*args)
    finally:
        if mark is not None:
            mark(LEAVE, token)
