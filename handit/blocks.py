"""Fold stage: one session's encoded blocks -> per-function figures, without making events.

:class:`Fold` reads blocks (the format of ``docs/trace-format.md``) as the drain hands
them to a session and keeps, per code index, the figures the summary prints: calls,
total time, own time, calls that raised; and the session's exceptions by where they
were raised, its threads and its losses. It keeps a shadow call stack per thread and
the suspended generators, as :class:`handit.reader.TraceBuilder` does, and follows
the summary's conventions (:mod:`handit.renderers.summary`): a function's total counts
its outermost active call on a thread only; its own time is its running time minus
that of the calls it made; a generator runs for its wall time less its time suspended.

``handit/_blocks.pyx`` is the compiled twin (calls and stacks in C arrays);
:func:`fold_type` picks it when it is built and the engine is not ``fallback``.
"""
from __future__ import annotations

import copy
import importlib
import os
from typing import Any

from .reader import read_string, read_uvarint

__all__ = ["Fold", "compiled_twin", "fold_type"]

MAX_ERRORS = 1000  # distinct (exception, message, function) kept; later ones are counted

# A stack entry is a list: [code, t0, key, suspended_ns, child_ns, outermost, thread, parent,
# last suspended at]. code -1 marks a phantom: a generator resumed in the session but started
# before it. thread is the track its function's running calls are counted on: the thread's
# ident, or ("task", n) for a call in an asyncio task (a call of a function in one task is
# not recursion of its call in another).
_CODE, _T0, _KEY, _SUSP, _CHILD, _OUTER, _THREAD, _PARENT, _TSUSP = range(9)


class Fold:
    """Per-function figures of one session, folded from its blocks as they arrive.

    Args:
        max_errors: distinct exceptions kept (later ones counted in ``errors_omitted``).

    Attributes:
        funcs: code index -> ``[calls, total_ns, own_ns, raised]``.
        errors: ``(type_name, message, code index where raised)`` -> ``[count, [code
            indices it passed through, up to 6]]``.
        calls, exceptions (unwinds), raised (distinct raises), incomplete, abandoned,
        dropped, corrupt_blocks, errors_omitted: counts.
        threads: idents of the threads seen.
        first_ts, last_ts: base time of the first block, latest event time (epoch ns).
    """

    def __init__(self, max_errors: int = MAX_ERRORS) -> None:
        self.max_errors = max_errors
        self.funcs: dict[int, list[int]] = {}
        self.errors: dict[tuple[str, str, int], list[Any]] = {}
        self.calls = self.exceptions = self.raised = 0
        self.incomplete = self.abandoned = self.dropped = self.corrupt_blocks = self.errors_omitted = 0
        self.markers = 0  # task and hand-over markers (TASK .. LEAVE): a walk of the blocks leaves this session to events
        self.threads: set[int] = set()
        self.first_ts = self.last_ts = 0
        self._stacks: dict[int, list[list[Any]]] = {}
        self._active: dict[Any, dict[int, int]] = {}  # track (thread, or ("task", n)) -> code -> its calls running there
        self._stash: dict[int, list[Any]] = {}  # key -> suspended entry
        self._spawned: dict[int, None] = {}  # coroutine key -> None: a task created, not started yet (TASK)
        self._n_tasks = 0
        self._last_exc: Any = None  # (the caller's entry, type, message, error row, first of its kind)

    def copy(self) -> Fold:
        """An independent copy (to close a running session's open calls without changing it)."""
        return copy.deepcopy(self)

    def _close(self, entry: list[Any], t1: int) -> None:
        """A call ends at ``t1``: its figures and its caller's child time."""
        code = entry[_CODE]
        dt = t1 - entry[_T0]
        if dt < 0:
            dt = 0
        running = dt - entry[_SUSP]
        if running < 0:
            running = 0
        row = self.funcs[code]
        if running > entry[_CHILD]:
            row[2] += running - entry[_CHILD]
        if entry[_OUTER]:
            row[1] += dt
        track = entry[_THREAD]
        active = self._active[track]
        left = active.get(code, 1) - 1
        if left > 0:
            active[code] = left
        else:
            active.pop(code, None)
        parent = entry[_PARENT]
        if type(track) is tuple and (parent is None or parent[_THREAD] != track):  # the task's first call
            del self._active[track]
        if parent is not None:
            parent[_CHILD] += running

    def _raise(self, entry: list[Any], type_name: str, message: str) -> None:
        """A call ends with an exception: counted where it was raised, followed through its callers."""
        code = entry[_CODE]
        self.exceptions += 1
        self.funcs[code][3] += 1
        parent = entry[_PARENT]
        prev = self._last_exc
        if prev is not None and prev[0] is entry and prev[1] == type_name and prev[2] == message:
            err, first = prev[3], prev[4]  # the same exception leaving the caller
            if err is not None and first and len(err[1]) < 6:
                err[1].append(code)
            self._last_exc = (parent, type_name, message, err, first)
            return
        self.raised += 1
        key = (type_name, message, code)
        err = self.errors.get(key)
        if err is None and len(self.errors) < self.max_errors:
            err = self.errors[key] = [0, []]
        if err is None:
            self.errors_omitted += 1
        else:
            err[0] += 1
        self._last_exc = (parent, type_name, message, err, err is not None and err[0] == 1)

    def feed(self, block: bytes) -> None:
        """Fold one encoded block (a damaged one up to the damage, counted in ``corrupt_blocks``).

        Args:
            block: the block, bytes.
        """
        data = bytes(block) if not isinstance(block, bytes) else block
        end = len(data)
        if not end:
            return
        try:
            ident, pos = read_uvarint(data, 0)
            base, pos = read_uvarint(data, pos)
        except IndexError:
            self.corrupt_blocks += 1
            return
        ts = base
        if not self.first_ts:
            self.first_ts = ts
        self.threads.add(ident)
        stack = self._stacks.get(ident)
        if stack is None:
            stack = self._stacks[ident] = []
            self._active[ident] = {}
        active = self._active[ident]
        funcs = self.funcs
        stash = self._stash
        n_calls = 0
        try:
            while pos < end:
                tag = data[pos]
                pos += 1
                kind = tag & 0x0F
                code = 0
                if kind == 1:  # CALL: code index before dts
                    code, pos = read_uvarint(data, pos)
                z, pos = read_uvarint(data, pos)
                ts += (z >> 1) ^ -(z & 1)
                if kind == 1:  # CALL
                    key = 0
                    if tag & 0x40:
                        key, pos = read_uvarint(data, pos)
                    if tag & 0x80:  # argument previews: skipped
                        n, pos = read_uvarint(data, pos)
                        for _ in range(n):
                            size, pos = read_uvarint(data, pos)
                            pos += size
                        if pos > end:
                            raise IndexError("block ends inside an argument preview")
                    row = funcs.get(code)
                    if row is None:
                        row = funcs[code] = [0, 0, 0, 0]
                    row[0] += 1
                    n_calls += 1
                    parent = stack[-1] if stack else None
                    if parent is not None and parent[_CODE] < 0:
                        parent = None
                    track: Any = ident
                    counts = active
                    if key and self._spawned and self._spawned.pop(key, 0) is None:  # a task's first call
                        self._n_tasks += 1
                        track = ("task", self._n_tasks)
                        counts = self._active[track] = {}
                    elif parent is not None and type(parent[_THREAD]) is tuple:  # a call in a task
                        track = parent[_THREAD]
                        counts = self._active[track]
                    depth = counts.get(code, 0)
                    counts[code] = depth + 1
                    stack.append([code, ts, key, 0, 0, depth == 0, track, parent, 0])
                elif kind == 2:  # RETURN
                    if tag & 0x80:
                        size, pos = read_uvarint(data, pos)
                        pos += size
                        if pos > end:
                            raise IndexError("block ends inside a return preview")
                    if stack:
                        entry = stack.pop()
                        if entry[_CODE] >= 0:
                            self._close(entry, ts)
                elif kind == 3:  # UNWIND
                    type_name, pos = read_string(data, pos)
                    message, pos = read_string(data, pos)
                    if stack:
                        entry = stack.pop()
                        if entry[_CODE] >= 0:
                            self._raise(entry, type_name, message)
                            self._close(entry, ts)
                elif kind == 4:  # YIELD
                    key, pos = read_uvarint(data, pos)
                    if stack and stack[-1][_KEY] == key:
                        entry = stack.pop()
                        stale = stash.get(key)
                        if stale is not None and stale[_CODE] >= 0:  # its number went to a new generator
                            self._close(stale, stale[_TSUSP])
                            self.abandoned += 1
                        entry[_TSUSP] = ts
                        stash[key] = entry
                elif kind == 5 or kind == 6:  # RESUME, THROW: it may continue on another thread
                    key, pos = read_uvarint(data, pos)
                    entry = stash.pop(key, None)
                    if entry is None:
                        entry = [-1, ts, key, 0, 0, False, ident, None, 0]
                        self._spawned.pop(key, None)  # a task's coroutine thrown into before it started
                    else:
                        entry[_SUSP] += ts - entry[_TSUSP]
                    stack.append(entry)
                elif kind == 8:  # PAUSE: the generator on top was suspended this long, and runs again
                    key, pos = read_uvarint(data, pos)
                    ns, pos = read_uvarint(data, pos)
                    if stack and stack[-1][_KEY] == key:
                        stack[-1][_SUSP] += ns
                elif kind == 9:  # STEP: a suspended generator ran this long (to now), suspended again
                    key, pos = read_uvarint(data, pos)
                    ns, pos = read_uvarint(data, pos)
                    entry = stash.pop(key, None)
                    if entry is not None:
                        entry[_SUSP] += ts - ns - entry[_TSUSP]
                        entry[_TSUSP] = ts
                        stash[key] = entry
                elif kind == 7:  # GAP: records were dropped here; what was open cannot be matched
                    n, pos = read_uvarint(data, pos)
                    self._close_all(stack, ts)
                    self.dropped += n
                elif kind == 10:  # TASK: the coroutine with this key starts a task of its own
                    self.markers += 1
                    key, pos = read_uvarint(data, pos)
                    _, pos = read_uvarint(data, pos)
                    if len(self._spawned) >= 65536:  # tasks that never ran (reader._MAX_PENDING)
                        self._spawned.clear()
                    self._spawned[key] = None
                elif 11 <= kind <= 13:  # HANDOFF, ENTER, LEAVE: markers
                    self.markers += 1
                    _, pos = read_uvarint(data, pos)
                elif kind == 14:  # RENAME: a task's new name (views only)
                    self.markers += 1
                    _, pos = read_uvarint(data, pos)
                    _, pos = read_uvarint(data, pos)
                else:
                    raise IndexError(f"unknown event kind {kind} at offset {pos}")
        except IndexError:  # a cut or damaged block: what came before the damage stands
            self.corrupt_blocks += 1
        finally:
            self.calls += n_calls
            if ts > self.last_ts:
                self.last_ts = ts

    def _close_all(self, stack: list[list[Any]], t1: int) -> None:
        while stack:
            entry = stack.pop()
            if entry[_CODE] >= 0:
                self._close(entry, max(t1, entry[_T0]))
                self.incomplete += 1

    def finish(self, end_ts: int) -> None:
        """Close every call still open: on a stack as incomplete at ``end_ts``, suspended as
        abandoned at its last suspension (as :meth:`handit.reader.TraceBuilder.finish`).

        Args:
            end_ts: the session's end, epoch nanoseconds.
        """
        for stack in self._stacks.values():
            self._close_all(stack, end_ts)
        for entry in self._stash.values():
            if entry[_CODE] >= 0:
                self._close(entry, max(entry[_TSUSP], entry[_T0]))
                self.abandoned += 1
        self._stash.clear()

    def open_calls(self) -> int:
        """Calls on a stack or suspended now (phantoms excluded)."""
        on_stacks = sum(1 for s in self._stacks.values() for e in s if e[_CODE] >= 0)
        return on_stacks + sum(1 for e in self._stash.values() if e[_CODE] >= 0)

    def to_json(self) -> dict[str, Any]:
        """The figures as plain JSON data (the trace file's ``F`` frame)."""
        return {
            "funcs": [[code, *row] for code, row in self.funcs.items()],
            "errors": [[t, m, code, err[0], err[1]] for (t, m, code), err in self.errors.items()],
            "counts": {name: getattr(self, name) for name in _COUNTS},  # last_ts: where an unended session stops
            "threads": len(self.threads),
        }


_COUNTS = ("calls", "exceptions", "raised", "incomplete", "abandoned", "dropped", "corrupt_blocks", "errors_omitted", "markers",
           "last_ts")


def fold_type(engine: str | None = None, require_compiled: bool = False) -> type[Fold]:
    """The compiled :class:`Fold` when it is built and the engine is not ``fallback``, else this one.

    Args:
        engine: ``"compiled"``, ``"fallback"``, or None to follow ``HANDIT_ENGINE``.
        require_compiled: a missing compiled twin is an error (``HANDIT_REQUIRE_COMPILED``).
    Returns:
        the class.
    Raises:
        ImportError: ``require_compiled`` and ``handit._blocks`` is not built.
    """
    return compiled_twin(Fold, "_blocks", engine, require_compiled)  # type: ignore[no-any-return]


def compiled_twin(pure: type, module: str, engine: str | None, require_compiled: bool) -> type:
    """The class named as ``pure`` in the compiled module ``handit.<module>`` when it is built and the
    engine is not ``fallback``, else ``pure``.

    Raises:
        ImportError: ``require_compiled`` and the module is not built.
    """
    if engine is None:
        engine = os.environ.get("HANDIT_ENGINE", "auto")
    if engine == "fallback":
        return pure
    try:
        compiled = importlib.import_module(f"{__package__}.{module}")
    except ImportError:
        if require_compiled:
            raise
        return pure
    return getattr(compiled, pure.__name__)  # type: ignore[no-any-return]
