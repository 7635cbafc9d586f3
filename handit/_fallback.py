"""Capture stage, pure Python: sys.monitoring or profile-function callbacks -> per-thread record lists.

The twin of the compiled ``_tracer`` module: same names, same records, same
errors. It is used when the extension is not built or ``HANDIT_ENGINE=fallback``.
"""
from __future__ import annotations

import sys
import threading
import time
import types
import warnings
import weakref
from contextvars import ContextVar
from time import perf_counter_ns
from typing import Any, Callable

from ._engine import claim_sysmon, release_sysmon
from ._internal import is_internal_thread
from ._policy import _HANDIT_DIR, ARGS, EXIT_RETURN, EXIT_YIELD, CodeInfo, Policy, exit_kinds, first_yield_unit, module_of
from .preview import _type_name as type_name
from .records import (
    BLOCK_BYTES, CALL, ENTER, GAP, HANDOFF, LEAVE, NO_VALUE, PAUSE, RENAME, RESUME, STEP, RETURN, TASK, TASK_MODULE, THROW, UNWIND,
    YIELD, GenKeys, Rendered, put_string, put_varint,
)
from .records import task_name_ref as _task_name_ref

__all__ = [
    "ENGINE",
    "PY312",
    "REDACTED_ARG",
    "TICKS_ARE_NS",
    "activate",
    "after_fork_in_child",
    "code_count",
    "code_info",
    "codes_since",
    "deactivate",
    "drain",
    "encode_while_waiting",
    "ensure_thread",
    "install",
    "mark_handoff",
    "mark_internal_thread",
    "mark_task",
    "pause",
    "pending",
    "profile_callback",
    "read_ticks",
    "rename_task",
    "reset_slot",
    "resume",
    "session_var",
    "set_backlog_hook",
    "set_policy",
    "set_slot",
    "source",
    "sysmon_py_resume",
    "sysmon_py_return",
    "sysmon_py_start",
    "sysmon_py_throw",
    "sysmon_py_unwind",
    "sysmon_py_yield",
    "take_counts",
    "task_name_ref",
    "thread_states",
    "tool_id",
    "uninstall",
]

ENGINE = "fallback"
PY311 = sys.version_info >= (3, 11)
PY312 = sys.version_info >= (3, 12)
REDACTED_ARG = Rendered("<redacted>")

session_var: ContextVar[int] = ContextVar("handit_session", default=0)
"""The session slot of the running thread or task (0: none)."""

_active: set[int] = set()
_tls = threading.local()
_buffers: list[_ThreadBuffer] = []
_record_lists: list[list[Any]] = []  # each buffer's records, kept beside _buffers (read without its lock)
_by_ident: dict[int, _ThreadBuffer] = {}  # the same buffers by thread id
_buffers_lock = threading.Lock()
_codes: list[CodeInfo] = []
_code_map: dict[int, tuple[Any, CodeInfo | None, int, bytes, int]] = {}
# decisions kept across sessions while the rules they depend on stay (Policy.decision_key):
# a code object keeps its CodeInfo and index instead of getting a new one every session
_decided: dict[int, tuple[weakref.ref[Any], Any, CodeInfo | None]] = {}
_policy: Policy | None = None
_generation = 0
_source: str | None = None
_profiling = False  # the profile function delivers events: the setprofile source, installed and not paused
_tool_id: int | None = None
_local_codes: list[Any] = []
_failed = False
_told_busy: set[int] = set()  # threads told (once an install) that another profiler holds their slot


class _ThreadBuffer:
    """One thread's records, in order, waiting for the drain."""

    __slots__ = ("ident", "records", "limit", "take_lock", "busy", "last_exc", "last_exc_text", "pending", "gap", "gap_slot",
                 "exited", "idle_drains", "lost", "absorbing", "skip", "lost_calls", "lost_slot",
                 "exc_trace_frame", "exc_depth", "closing", "closing_call", "throwing", "throwing_call",
                 "held_since", "resolving")

    def __init__(self) -> None:
        self.ident = threading.get_ident()
        self.records: list[tuple[int, int, int, int, Any, int]] = []
        self.limit = _CHECK_MIN  # at this many records the budget is looked at again (_past_limit)
        # held by the drain while it takes records, and by the thread while it rewrites one in
        # place (a pending unwind) or sets `resolving`: never both at once. Appends need no
        # lock. Reentrant: a thread draining itself gets profile events holding it.
        self.take_lock = threading.RLock()
        self.busy = False
        self.last_exc: Any = None
        self.last_exc_text: tuple[str, str] = ("", "")
        # profile source: unwinds whose exception is not known yet (see _resolve_unwinds)
        self.pending: list[tuple[tuple[Any, ...], tuple[int, int]]] = []  # (unwind record, (frame id, its f_lasti))
        self.gap = 0  # records dropped since the last one written (bounded-memory mode)
        self.gap_slot = 0
        self.exited = False  # the thread is gone (its thread-local storage was released)
        self.idle_drains = 0
        self.lost = 0  # exits lost at the recursion limit, not yet counted for a session (in gap too)
        self.skip = 0  # calls lost at the recursion limit whose exits are not recorded either
        self.lost_calls = 0  # calls lost at the recursion limit, not yet counted for lost_slot
        self.lost_slot = 0
        self.absorbing = False  # PY310: _absorb_at_limit is this thread's trace function
        self.exc_trace_frame: Any = None  # PY310/PY311: the frame _exc_trace waits in
        self.exc_depth = 0  # frames started since, not yet left (see _exc_trace)
        self.closing = 0  # id of the frame of a generator being closed (see profile_callback)
        self.closing_call: Any = None  # the close method called
        self.throwing = 0  # id of the frame of a generator or coroutine a throw() called from Python runs in
        self.throwing_call: Any = None  # that throw method
        self.held_since = 0.0  # when the periodic drain began to leave this thread's last records (see _collect)
        # PY310/PY311: an unwind is being recorded, or pending ones given their text (Python
        # code: the GIL can switch to a drain there); see _collect
        self.resolving = False


class _ExitSentinel:
    """Lives in a thread's thread-local storage: released when the thread ends."""


_bounded = False
RECORD_BYTES = 128  # a record waiting: its tuple (88 bytes) and clock int (32), about
_budget_records = (8 << 20) // RECORD_BYTES  # HANDIT_MAX_BUFFER_BYTES, all threads together
_CHECK_MIN = 16  # records a thread adds at least before it looks at the budget again
_held_peak = 0
_backlog_hook: Callable[[], Any] | None = None
_dropped: dict[int, int] = {}


def _put(buf: _ThreadBuffer, record: tuple[int, int, int, int, Any, int]) -> bool:
    """Append a record; past the budget drop it in bounded-memory mode (counted, gap marked),
    else drain here (the compiled twin's ``_hand_over`` says why)."""
    global _held_peak
    records = buf.records
    if len(records) >= buf.limit:
        # What all threads hold, looked at without a Python frame (near the recursion limit a
        # call here would lose the record). Within the budget, the next look is after a share
        # of what is left: together the threads pass it by _CHECK_MIN records each at most.
        # (A cap per thread held 8 MiB worth per thread: a hundred threads, 100 x 8 MiB.)
        held = sum(map(len, _record_lists))
        if held > _held_peak:
            _held_peak = held
        if held < _budget_records:
            buf.limit = len(records) + max(_CHECK_MIN, (_budget_records - held) // (2 * len(_record_lists) + 2))
        elif not _over_budget(buf):
            buf.gap += 1
            buf.gap_slot = record[1]
            _dropped[record[1]] = _dropped.get(record[1], 0) + 1
            return False
    if buf.gap:
        slot = buf.gap_slot
        if buf.lost:  # lost at the recursion limit, where no session could be looked up
            slot = record[1]
            _dropped[slot] = _dropped.get(slot, 0) + buf.lost
            buf.lost = 0
        records.append((GAP, slot, 0, perf_counter_ns(), None, buf.gap))
        buf.gap = 0
    records.append(record)
    return True


def _over_budget(buf: _ThreadBuffer) -> bool:
    """The records of all threads reached the budget: drain here (True: the record is kept),
    or in bounded-memory mode drop it (False), and every record after it until a drain takes
    this thread's records (see _collect)."""
    if _bounded:
        buf.limit = len(buf.records)
        return False
    if _backlog_hook is not None and not buf.busy:
        buf.busy = True  # handit's own work: nothing of it is recorded
        try:
            _backlog_hook()
        except Exception:
            pass
        finally:
            buf.busy = False
    buf.limit = len(buf.records) + _CHECK_MIN
    return True


def held_bytes() -> tuple[int, int]:
    """What the engine holds for the drain: ``(now, peak)`` in bytes (records waiting, at
    RECORD_BYTES each), all threads together; the peak since :func:`reset_held_peak`, as
    seen when a thread looked at the budget."""
    held = sum(map(len, _record_lists))
    return held * RECORD_BYTES, max(held, _held_peak) * RECORD_BYTES


def reset_held_peak() -> None:
    """Start measuring the peak of :func:`held_bytes` again from what is held now."""
    global _held_peak
    _held_peak = sum(map(len, _record_lists))


def read_ticks() -> int:
    """The raw clock the records use (nanoseconds here)."""
    return perf_counter_ns()


TICKS_ARE_NS = True


def _buffer() -> _ThreadBuffer:
    try:
        return _tls.buffer  # type: ignore[no-any-return]
    except AttributeError:
        pass
    # A thread's first record, or one made during its teardown after its thread-locals went
    # (the same buffer again, found by thread id; a later thread reusing the id takes it over).
    ident = threading.get_ident()
    # made before the lock: _ThreadBuffer.__init__ is Python code, and outside a callback (a task
    # marker from the asyncio hook) the engine sees it start and asks for this thread's buffer
    # again, which would wait on the lock this thread holds (seen: to_thread workers deadlocked)
    new = _ThreadBuffer()
    with _buffers_lock:
        buf = _by_ident.get(ident)
        if buf is None:
            buf = _by_ident[ident] = new
            _buffers.append(buf)
            _record_lists.append(buf.records)
        buf.exited = False  # under the lock: the drain frees only buffers still exited
        buf.idle_drains = 0
    if getattr(_tls, "buffer", None) is buf:
        return buf  # attached while ours was made (by the engine seeing __init__): one sentinel
    _tls.buffer = buf
    sentinel = _tls.sentinel = _ExitSentinel()
    weakref.finalize(sentinel, setattr, buf, "exited", True)
    return buf


def _fail(exc: BaseException) -> None:
    """An internal error: warn once and stop tracing; nothing reaches user code."""
    global _failed
    if _failed:
        return
    _failed = True
    try:
        uninstall()
    finally:
        warnings.warn(f"handit stopped tracing after an internal error: {exc!r}", RuntimeWarning, stacklevel=2)


# Past the recursion window's margin (see _LIMIT_MARGIN below), or where no window could be
# opened, a callback of this engine (itself a Python call) cannot make even one more call:
# its event is lost. The except clauses count it inline (attribute stores
# only) in the thread's buffer, as a gap that the thread's next record places in its session
# (issue 10.8). CPython removes a profile function that fails, so the setprofile source
# puts it back: PY310 lets a trace function armed near the limit fail in its place (the
# trace function is called first there); PY312+ re-arms every thread from the drain; on
# PY311 the thread stays untraced until handit next runs on it, which then says so.
_limit_hit = False


def _absorb_at_limit(frame: Any, event: str, arg: Any) -> None:
    """PY310: the global trace function while a thread is near the recursion limit: called
    before the profile function for a new frame, it is the one CPython removes there."""


def _arm_absorber(buf: _ThreadBuffer | None) -> None:
    if buf is not None and not buf.absorbing and not PY311 and sys.gettrace() in (None, _exc_trace):
        sys.settrace(_absorb_at_limit)
        buf.absorbing = True


def _disarm_absorber(buf: _ThreadBuffer) -> None:
    buf.absorbing = False
    if sys.gettrace() is _absorb_at_limit:
        sys.settrace(None)


def _rearm_after_limit(warn: bool) -> None:
    """Put back the profile function CPython removed at the recursion limit: on every thread
    (PY312+, from any thread, the drain's), else on the calling one. With ``warn``, say
    that events were missed (called on the user's thread, when a session stops)."""
    global _limit_hit, _rearmed
    if _limit_hit and _profiling:
        _limit_hit = False
        if PY312:
            threading.setprofile_all_threads(profile_callback)
            _rearmed = True
            if _buffer().busy:  # handit's own thread (the drain): never traced
                sys.setprofile(None)
        elif sys.getprofile() is not profile_callback:
            sys.setprofile(profile_callback)
            _rearmed = True
    if warn and _rearmed:
        _rearmed = False
        warnings.warn("handit (pure-Python engine): a thread that reached the recursion limit lost its profile "
                      "function (CPython removes one that fails there); calls it made until handit put it back "
                      "were not recorded", RuntimeWarning, stacklevel=3)


_rearmed = False


# The recursion window (issue 10.8). A Python callback is a frame of its own, counted against
# the program's recursion limit: at the program's deepest allowed frame (depth L) its
# callback would need depth L+1 and could not even start, so the program's recursion would
# end one frame sooner, and nothing pure Python can lower the limit again between that
# callback and the program's next call (sys.setrecursionlimit refuses a limit at or below
# the current depth). So when a callback first runs out of stack (its own nested calls fail
# near the limit), it raises the limit by _LIMIT_MARGIN frames and does its event again;
# while this window is open, handit refuses, as CPython would have, a new frame deeper than
# the program's limit L (a RecursionError with CPython's message, raised before the frame's
# first line: by _limit_guard, the thread's trace function, on the setprofile source, by
# sysmon_py_start on sys.monitoring); the window closes once a callback runs at least
# _LIMIT_MARGIN frames below L, and at uninstall. Meanwhile sys.getrecursionlimit() reads
# L + _LIMIT_MARGIN; a limit the program sets then is kept and ends the window.
_LIMIT_MARGIN = 50
_user_limit = 0  # while the window is open: the program's recursion limit (0: closed)
_LIMIT_MESSAGE = "maximum recursion depth exceeded"
# before 3.12 the call of a builtin (sys.setrecursionlimit here) counts as a level of its own
_C_CALL_DEPTH = 0 if PY312 else 1


def _window_opened() -> None:
    """Note the window open, once a callback has raised the limit by _LIMIT_MARGIN (inline)."""
    global _user_limit
    if not _user_limit:  # (unless another thread, between that and this, opened it too)
        _user_limit = sys.getrecursionlimit() - _LIMIT_MARGIN


def _past_limit(up: int) -> bool:
    """While the window is open: whether the frame ``up`` frames above this call is deeper than
    the program's limit (it must be refused). Closes the window when the stack is far below it."""
    global _user_limit
    limit = _user_limit
    if not limit:
        return False
    try:
        sys.setrecursionlimit(1)  # always refused; the message gives this frame's depth
        return False
    except RecursionError as exc:
        depth = int(str(exc).rpartition("depth ")[2].partition(":")[0]) - up - _C_CALL_DEPTH
    except ValueError:
        return False
    if sys.getrecursionlimit() != limit + _LIMIT_MARGIN:  # the program set a limit of its own
        _user_limit = 0
        return False
    if depth > limit:
        return True
    if depth < limit - _LIMIT_MARGIN:
        _close_window()
    return False


def _close_window() -> None:
    """Give the program its own limit back (refused only when called deeper than it)."""
    global _user_limit
    limit = _user_limit
    if limit:
        if sys.getrecursionlimit() == limit + _LIMIT_MARGIN:
            try:
                sys.setrecursionlimit(limit)
            except RecursionError:
                return  # still too deep for it: a later callback closes the window
        _user_limit = 0
    if sys.gettrace() is _limit_guard:
        sys.settrace(None)


def _guard_thread() -> None:
    if not getattr(_tls, "internal", False):
        sys.settrace(_limit_guard)


def _limit_guard(frame: Any, event: str, arg: Any) -> None:
    """Setprofile source, while the window is open: the thread's trace function. CPython calls
    it before the profile function for each new frame; a frame past the program's limit is
    refused here, and CPython then removes this function (put back at the next event), never
    the profile function."""
    if not _user_limit:  # the window closed (on another thread): this thread needs no guard
        sys.settrace(None)
    elif event == "call" and _past_limit(2) and not frame.f_code.co_filename.startswith(_HANDIT_DIR):
        if PY311:  # PY311+: the refused frame still gets a "return" event, not to be recorded
            buf = getattr(_tls, "buffer", None)
            if buf is not None and _traced(frame.f_code) is not None:
                buf.skip += 1
        raise RecursionError(_LIMIT_MESSAGE)


# ---- per-code decisions -------------------------------------------------------------------


def _lookup(code: Any, frame: Any) -> tuple[Any, CodeInfo | None, int, bytes, int]:
    entry = _code_map.get(id(code))
    if entry is not None and entry[0] is code and entry[2] == _generation:
        return entry
    assert _policy is not None
    known = _decided.get(id(code))
    if known is not None and known[0]() is code and known[1] == _policy.decision_key:
        info = known[2]
    else:
        info = _policy.decide(code, module_of(frame) if frame is not None else None, len(_codes))
        if info is not None:
            _codes.append(info)
        _decided[id(code)] = (weakref.ref(code, _forget_code(id(code))), _policy.decision_key, info)
    kinds = b""
    first_yield = 0
    if info is not None:
        if _source == "setprofile":
            kinds = exit_kinds(code)
            first_yield = first_yield_unit(kinds)
        elif _tool_id is not None:
            mon = sys.monitoring
            events = mon.events.PY_RETURN
            if info.suspendable:
                events |= mon.events.PY_YIELD | mon.events.PY_RESUME
            mon.set_local_events(_tool_id, code, events)
            _local_codes.append(code)
    entry = (code, info, _generation, kinds, first_yield)
    _code_map[id(code)] = entry
    return entry


def _forget_code(key: int) -> Callable[[weakref.ref[Any]], None]:
    def forget(ref: weakref.ref[Any]) -> None:
        known = _decided.get(key)
        if known is not None and known[0] is ref:
            del _decided[key]

    return forget


# Values kept by reference until the drain: small immutable scalars only. Anything else,
# long strings and bytes included, is previewed at the event, so a record never keeps a
# user's object (or an 8 MiB string) alive past the call.
_KEPT_TYPES = frozenset({int, float, bool, type(None), complex})
_KEPT_LEN = 64


def _kept(value: Any, previewer: Any) -> Any:
    tp = type(value)
    if tp in _KEPT_TYPES or ((tp is str or tp is bytes) and len(value) <= _KEPT_LEN):
        return value
    return Rendered(previewer.preview(value))


def _arg_values(buf: _ThreadBuffer, info: CodeInfo, frame: Any) -> tuple[Any, ...] | None:
    if _policy is None or _policy.capture < ARGS or not info.argnames:
        return None
    buf.last_exc = None  # a call: no exception is unwinding here any more (let it go)
    previewer = _policy.previewer
    f_locals = frame.f_locals
    out = []
    for name, secret in zip(info.argnames, info.secret_args):
        if secret:
            out.append(REDACTED_ARG)
            continue
        value = f_locals.get(name, NO_VALUE)
        out.append(NO_VALUE if value is NO_VALUE else _kept(value, previewer))
    return tuple(out)


def _value(buf: _ThreadBuffer, value: Any) -> Any:
    if _policy is None or _policy.capture < ARGS:
        return NO_VALUE
    buf.last_exc = None
    return _kept(value, _policy.previewer)


def _exception_text(buf: _ThreadBuffer, exc: Any) -> tuple[str, str]:
    if exc is buf.last_exc:
        return buf.last_exc_text
    text = (type_name(type(exc)), _policy.previewer.exception_message(exc) if _policy else "")
    buf.last_exc = exc
    buf.last_exc_text = text
    return text


# ---- shared record path --------------------------------------------------------------------


def _on_call(buf: _ThreadBuffer, slot: int, info: CodeInfo, frame: Any, kind: int, key: int) -> None:
    ts = perf_counter_ns()
    if kind == CALL:
        buf.busy = True
        try:
            args = _arg_values(buf, info, frame)
        finally:
            buf.busy = False
        _put(buf, (CALL, slot, info.index, ts, args, key))
    else:
        _put(buf, (kind, slot, info.index, ts, None, key))


def _on_return(buf: _ThreadBuffer, slot: int, info: CodeInfo, kind: int, value: Any, key: int) -> None:
    ts = perf_counter_ns()
    if kind == RETURN:
        buf.busy = True
        try:
            aux = _value(buf, value)
        except RecursionError:  # at the limit: the exit is recorded without its value
            if not _user_limit:
                raise  # the callback opens the recursion window and calls again
            aux = NO_VALUE
        finally:
            buf.busy = False
        _put(buf, (RETURN, slot, info.index, ts, aux, key))
    else:
        _put(buf, (kind, slot, info.index, ts, None, key))


def _on_unwind(buf: _ThreadBuffer, slot: int, info: CodeInfo, exc: Any, key: int) -> tuple[Any, ...] | None:
    """Record an unwind (``key``: a generator's frame, else 0); returns the record (None if dropped)."""
    ts = perf_counter_ns()
    buf.busy = True
    try:
        text = _exception_text(buf, exc) if exc is not None else ("<unknown>", "")
    except RecursionError:  # at the limit the message cannot be made: the type is read in place
        if not _user_limit:
            raise  # the callback opens the recursion window and calls again
        text = (exc.__class__.__qualname__, "")
    finally:
        buf.busy = False
    record = (UNWIND, slot, info.index, ts, text, key)
    return record if _put(buf, record) else None


def _current(code: Any) -> tuple[_ThreadBuffer, int] | None:
    slot = session_var.get()
    if not slot or slot not in _active:
        return None
    try:  # inline: an exit must need no more stack than its call (see _limit_hit)
        buf = _tls.buffer
    except AttributeError:
        buf = _buffer()
    if buf.busy:
        return None
    return buf, slot


# ---- sys.monitoring source (PY312+) --------------------------------------------------------


def sysmon_py_start(code: Any, offset: int) -> Any:
    """PY_START: decide the code once; record a call (DISABLE for excluded code)."""
    if _user_limit and _past_limit(2) and not code.co_filename.startswith(_HANDIT_DIR):  # window open: _LIMIT_MARGIN
        _refuse(code)
        raise RecursionError(_LIMIT_MESSAGE)
    try:
        return _started(code, CALL)
    except RecursionError:
        if not _user_limit:  # near the recursion limit: open the window (inline: no call fits yet)
            sys.setrecursionlimit(sys.getrecursionlimit() + _LIMIT_MARGIN)
            _window_opened()
            return _started(code, CALL)
        return None  # open already: the event and its pair are lost, and counted (_started)


def _refuse(code: Any) -> None:
    """A frame refused at the program's limit unwinds at once: its PY_UNWIND is not recorded."""
    t = _traced(code)
    if t is not None:
        t[0].skip += 1


def _started(code: Any, kind: int) -> Any:
    """A call, resume or throw (the frame running it is two frames up)."""
    buf = info = None
    try:
        if kind == CALL:
            cur = _current(code)
            if cur is None:
                return None
            buf, slot = cur
            frame = sys._getframe(2)
            info = _lookup(code, frame)[1]
            if info is None:
                return sys.monitoring.DISABLE
            key = id(frame) if info.suspendable else 0
        else:
            t = _traced(code)
            if t is None:
                return None
            buf, slot, info = t
            frame = None
            key = id(sys._getframe(2))
        _on_call(buf, slot, info, frame, kind, key)
    except RecursionError:  # at the recursion limit, where not even a call can be made
        if not _user_limit and kind == CALL:
            raise  # sysmon_py_start opens the recursion window and calls again
        if buf is not None and info is not None:
            buf.skip += 1  # its exit is not recorded either
            buf.lost_calls += 1
            buf.lost_slot = slot
    except Exception as exc:  # never reaches user code
        _fail(exc)
    return None


def _traced(code: Any) -> tuple[_ThreadBuffer, int, CodeInfo] | None:
    entry = _code_map.get(id(code))
    if entry is None or entry[0] is not code or entry[1] is None or entry[2] != _generation:
        return None
    # _current inline: an exit must need no more stack than its call, or at the recursion
    # limit calls would be kept whose exits are lost
    slot = session_var.get()
    if not slot or slot not in _active:
        return None
    try:
        buf = _tls.buffer
    except AttributeError:
        buf = _buffer()
    if buf.busy:
        return None
    return buf, slot, entry[1]


def sysmon_py_return(code: Any, offset: int, retval: Any) -> Any:
    """PY_RETURN: the call ends with a value."""
    try:
        return _ended(code, RETURN, retval)
    except RecursionError:
        if not _user_limit:  # near the recursion limit: open the window (inline: no call fits yet)
            sys.setrecursionlimit(sys.getrecursionlimit() + _LIMIT_MARGIN)
            _window_opened()
            return _ended(code, RETURN, retval)
        return None


def sysmon_py_yield(code: Any, offset: int, retval: Any) -> Any:
    """PY_YIELD: a generator or coroutine is suspended."""
    try:
        return _ended(code, YIELD, None)
    except RecursionError:
        if not _user_limit:  # near the recursion limit: open the window (inline: no call fits yet)
            sys.setrecursionlimit(sys.getrecursionlimit() + _LIMIT_MARGIN)
            _window_opened()
            return _ended(code, YIELD, None)
        return None


def sysmon_py_resume(code: Any, offset: int) -> Any:
    """PY_RESUME: a suspended generator or coroutine continues."""
    try:
        return _started(code, RESUME)
    except RecursionError:  # too near the recursion limit to enter it: the event and its pair are lost
        return None


def sysmon_py_throw(code: Any, offset: int, exc: Any) -> Any:
    """PY_THROW: a suspended generator continues with an exception thrown in."""
    try:
        return _started(code, THROW)
    except RecursionError:  # too near the recursion limit to enter it: the event and its pair are lost
        return None


def sysmon_py_unwind(code: Any, offset: int, exc: Any) -> Any:
    """PY_UNWIND: the call ends with an exception."""
    try:
        return _ended(code, UNWIND, exc)
    except RecursionError:
        if not _user_limit:  # near the recursion limit: open the window (inline: no call fits yet)
            sys.setrecursionlimit(sys.getrecursionlimit() + _LIMIT_MARGIN)
            _window_opened()
            return _ended(code, UNWIND, exc)
        return None


def _ended(code: Any, kind: int, value: Any) -> None:
    """A return, yield or unwind: as deep on the stack as _started, so that at the recursion
    limit a recorded call always gets its exit recorded."""
    t = None
    try:
        t = _traced(code)
        if t is not None:
            if t[0].skip:  # the exit of a call lost at the recursion limit
                t[0].skip -= 1
            elif kind == UNWIND:
                # a generator's final exit names its frame, so its small key is freed (records.GenKeys)
                _on_unwind(t[0], t[1], t[2], value, id(sys._getframe(2)) if t[2].suspendable else 0)
            elif kind == YIELD:
                _on_return(t[0], t[1], t[2], YIELD, None, id(sys._getframe(2)))
            else:
                _on_return(t[0], t[1], t[2], RETURN, value, id(sys._getframe(2)) if t[2].suspendable else 0)
    except RecursionError:  # at the recursion limit, where not even a call can be made
        if not _user_limit:
            raise  # the callback opens the recursion window and calls again
        # (failing before the code is known mirrors a call that failed as early: neither is kept)
        if t is not None:
            if t[0].skip:  # the exit of a call lost here too
                t[0].skip -= 1
            else:  # the exit of a recorded call: a gap, placed and counted at the next record
                t[0].gap += 1
                t[0].lost += 1
    except Exception as exc:
        _fail(exc)
    return None


# ---- profile-function source ---------------------------------------------------------------


def profile_callback(frame: Any, event: str, arg: Any) -> None:
    """The profile function: "call" and "return" events of Python frames."""
    global _limit_hit
    buf = cur = info = calling = t = None
    try:
        calling = event == "call"
        if not _profiling:
            # left behind on a thread uninstall() or pause() could not reach (before 3.12): remove itself
            sys.setprofile(None)
            return
        if _user_limit and sys.gettrace() is None:  # the recursion window is open: guard this thread
            _guard_thread()
        buf = getattr(_tls, "buffer", None)
        if buf is not None and buf.pending and not buf.busy:
            _resolving(buf)
            try:
                if buf.exc_trace_frame is not None and not event.startswith("c_"):  # (a C call's end precedes the caller's exception event)
                    if calling:
                        buf.exc_depth += 1  # a frame the interpreter runs meanwhile (see _exc_trace)
                    elif buf.exc_depth:
                        buf.exc_depth -= 1
                    else:
                        _disarm_exc_trace(buf)
                exc = sys.exc_info()[1]
                if exc is not None:
                    _resolve_unwinds(buf, exc, exc.__traceback__)
            finally:
                buf.resolving = False
        if event == "call":
            cur = _current(None)
            if cur is None:
                if getattr(_tls, "internal", False):
                    # handit's own thread, given the profile function again by an install
                    # for all threads (PY312+): profiled, the drain ran ~10x slower and
                    # records (with their previews) piled up between drains
                    sys.setprofile(None)
                return
            code = frame.f_code
            entry = _lookup(code, frame)
            info = entry[1]
            if info is None:
                return
            if info.suspendable:
                key = id(frame)
                if frame.f_lasti // 2 >= entry[4]:
                    _on_call(cur[0], cur[1], info, frame, RESUME, key)
                else:
                    _on_call(cur[0], cur[1], info, frame, CALL, key)
            else:
                _on_call(cur[0], cur[1], info, frame, CALL, 0)
        elif event == "return":
            code = frame.f_code
            t = _traced(code)
            if t is None:
                return
            buf, slot, info = t
            if buf.skip:  # the exit of a call lost at the recursion limit
                buf.skip -= 1
                return
            kinds = _code_map[id(code)][3]
            unit = frame.f_lasti // 2
            how = kinds[unit] if 0 <= unit < len(kinds) else 0
            if how == EXIT_RETURN:
                _on_return(buf, slot, info, RETURN, arg, id(frame) if info.suspendable else 0)
            elif how == EXIT_YIELD and (arg is not None or (buf.closing != id(frame) and buf.throwing != id(frame))):
                # None here is also an exception thrown in at the yield and not caught (a
                # Python frame gives no other sign): told apart for the generator a close() or
                # throw() called from Python runs in, not when called from C (asyncio
                # cancelling a task, a generator's finalizer), see docs/capture.md
                _on_return(buf, slot, info, YIELD, None, id(frame))
            else:
                # g.close() throws GeneratorExit in at the yield; it leaves from there (with
                # None, as a `yield None` would) or from a finally, and close() swallows it:
                # the compiled twin's profile_call says more
                thrown = None
                if buf.closing == id(frame):
                    thrown, buf.closing = _GENERATOR_EXIT, 0
                elif buf.throwing == id(frame):  # its type is found where it is caught (exc_trace)
                    buf.throwing = 0
                _resolving(buf)  # the record is visible before it is pending and armed
                try:
                    record = _on_unwind(buf, slot, info, thrown, id(frame) if info.suspendable else 0)
                    if record is not None and len(buf.pending) < 8:
                        buf.pending.append((record, (id(frame), frame.f_lasti)))
                        if not PY312:
                            _arm_exc_trace(buf, frame)
                finally:
                    buf.resolving = False
        elif event == "c_call":
            if buf is not None and type(arg) is _BUILTIN and arg.__name__ in ("close", "throw"):
                gen = arg.__self__
                frame_of = _SUSPENDED_FRAME.get(type(gen))
                if frame_of is not None:
                    running = frame_of(gen)
                    got = (id(running), arg) if running is not None else (0, None)
                    if arg.__name__ == "close":
                        buf.closing, buf.closing_call = got
                    else:
                        buf.throwing, buf.throwing_call = got
        elif buf is not None and arg is not None:
            if buf.closing_call is arg:  # the close returned or raised
                buf.closing, buf.closing_call = 0, None
            elif buf.throwing_call is arg:  # the throw returned or raised
                buf.throwing, buf.throwing_call = 0, None
        if buf is not None and buf.absorbing:
            try:
                _disarm_absorber(buf)  # PY310: away from the limit again (or not yet)
            except RecursionError:
                pass
    except RecursionError:  # at the recursion limit, where not even a call can be made (see _limit_hit)
        if not _user_limit:  # near the recursion limit: open the window (inline: no call fits yet)
            sys.setrecursionlimit(sys.getrecursionlimit() + _LIMIT_MARGIN)
            _window_opened()
            return profile_callback(frame, event, arg)  # the event again, with room for it
        _limit_hit = True
        try:
            b = _tls.buffer
            if calling:
                if cur is not None and info is not None:
                    b.skip += 1  # its exit is not recorded either
                    b.lost_calls += 1
                    b.lost_slot = cur[1]
            elif t is not None:  # (failing before the code is known mirrors such a call)
                if b.skip:  # the exit of a call lost here too
                    b.skip -= 1
                else:  # the exit of a recorded call: a gap, placed and counted at the next record
                    b.gap += 1
                    b.lost += 1
            _arm_absorber(b)
        except BaseException:
            pass
    except Exception as exc:
        _fail(exc)


_GENERATOR_EXIT = GeneratorExit()
_BUILTIN: Any = type(len)
_SUSPENDED_FRAME: dict[type, Callable[[Any], Any]] = {
    types.GeneratorType: lambda g: g.gi_frame,
    types.CoroutineType: lambda c: c.cr_frame,
}


def _resolving(buf: _ThreadBuffer) -> None:
    """The thread's unwinds are being recorded or given their text: drains leave its records
    (set under the take lock, see ``_collect``; cleared by the caller when done)."""
    with buf.take_lock:
        buf.resolving = True


def _arm_exc_trace(buf: _ThreadBuffer, frame: Any) -> None:
    """PY310/PY311: be the trace function until the next event, to be told the exception
    that unwound ``frame`` when it reaches the caller (``handit_arm_exc_trace`` in
    ``_compat.h`` says why). A Python trace function's "exception" event goes to the frame's
    ``f_trace``, so the caller's is set too."""
    caller = frame.f_back
    if caller is None or buf.exc_trace_frame is not None or caller.f_trace is not None or sys.gettrace() is not None:
        return
    caller.f_trace = _exc_trace
    buf.exc_trace_frame = caller
    buf.exc_depth = 0
    sys.settrace(_exc_trace)


def _disarm_exc_trace(buf: _ThreadBuffer) -> None:
    frame, buf.exc_trace_frame = buf.exc_trace_frame, None
    if frame is not None and frame.f_trace is _exc_trace:
        frame.f_trace = None
    if sys.gettrace() is _exc_trace:
        sys.settrace(None)


def _exc_trace(frame: Any, event: str, arg: Any) -> None:
    """PY310/PY311: the trace function after a traced unwind, until the caller's frame has an
    event. A frame the interpreter runs meanwhile (a finalizer run by the collection that the
    caller's new traceback entry starts) is stepped over, as ``_tracer.exc_trace`` does: its
    "call" ended the wait, and the periodic drain took the unwind before its text came."""
    if event == "call":
        return None
    try:
        buf = getattr(_tls, "buffer", None)
        if buf is None:
            if sys.gettrace() is _exc_trace:
                sys.settrace(None)
            return
        _resolving(buf)  # (before the disarm: a drain keeps holding the records throughout)
        try:
            _disarm_exc_trace(buf)
            if event == "exception" and buf.pending and not buf.busy:
                _resolve_unwinds(buf, arg[1], arg[2])
        finally:
            buf.resolving = False
    except RecursionError:  # at the limit: the unwind stays <unknown>, the user's exception goes on
        pass
    except Exception as exc:
        _fail(exc)


def _resolve_unwinds(buf: _ThreadBuffer, exc: BaseException, traceback: Any) -> None:
    """Give pending unwinds ``exc`` if ``traceback`` holds their frame.

    A profile function is not told which exception unwinds a frame: ``exc`` is the one
    being handled, or one reaching a frame (``_exc_trace``); the compiled twin does the same
    as this (``_tracer._match_unwinds``).
    """
    buf.busy = True
    try:
        # a frame and where it stopped: a freed frame's address is taken by the next frame (see
        # _tracer._match_unwinds)
        frames = set()
        tb = traceback
        while tb is not None:
            frames.add((id(tb.tb_frame), tb.tb_lasti))
            tb = tb.tb_next
        found = [record for record, frame_at in buf.pending if frame_at in frames]
        if not found:
            return
        # made before the lock: it runs Python code, during which the GIL can switch to a
        # drain; the callers' buf.resolving keeps the records for it (see _collect)
        text = (type_name(type(exc)), _policy.previewer.exception_message(exc) if _policy else "")
        buf.pending = [(record, frame_at) for record, frame_at in buf.pending if frame_at not in frames]
        records = buf.records
        with buf.take_lock:  # the drain cannot shorten the list between finding a record and rewriting it
            for record in found:
                # the record, if the drain has not taken it meanwhile (it is near the end)
                for index in range(len(records) - 1, max(-1, len(records) - 4097), -1):
                    if records[index] is record:
                        kind, slot, code, ts, _, key = record
                        records[index] = (kind, slot, code, ts, text, key)
                        break
    finally:
        buf.busy = False


# ---- install / uninstall -------------------------------------------------------------------


def install(source: str, policy: Policy) -> None:
    """Start delivering events for active sessions.

    Args:
        source: "sysmon" (3.12+) or "setprofile".
        policy: the filter and capture rules.
    Raises:
        HanditError: no sys.monitoring tool id is free.
    """
    global _source, _tool_id, _failed, _profiling
    set_policy(policy)
    _failed = False
    _told_busy.clear()
    if source == "sysmon":
        _source = source
        _tool_id = claim_sysmon(sys.modules[__name__])
    else:
        _source = source
        _profiling = True
        _put_profile_function()


def _put_profile_function() -> None:
    if PY312:
        threading.setprofile_all_threads(profile_callback)
    else:
        # The pure-Python engine can reach only the current thread and threads
        # started from now on; the compiled engine reaches every thread.
        threading.setprofile(profile_callback)
        ensure_thread()


def _take_profile_function() -> None:
    # a profiler the program set since (on a thread, or for new threads) keeps its place
    if PY312:
        threading.setprofile_all_threads(None)
        return
    if threading.getprofile() is profile_callback:
        threading.setprofile(None)  # type: ignore[arg-type]
    if sys.getprofile() is profile_callback:
        sys.setprofile(None)
    buf = getattr(_tls, "buffer", None)
    if buf is not None and buf.exc_trace_frame is not None:
        _disarm_exc_trace(buf)  # other threads' take themselves out at their next event


def pause() -> None:
    """No session is open: deliver no event until :func:`resume`, keeping the installation
    (decisions, the sys.monitoring tool) for the next session.

    The profile-function source leaves the threads (before 3.12 the calling thread at once,
    the others at their next event), so the program between sessions runs unprofiled and a
    profiler it starts meanwhile has the slot to itself; sys.monitoring stays registered.
    """
    global _profiling
    if _source == "setprofile" and _profiling:
        _profiling = False
        _close_window()
        _take_profile_function()


def resume() -> None:
    """The first session after :func:`pause`: deliver events again (the calling thread and
    threads started from now on; every thread on 3.12+)."""
    global _profiling
    if _source == "setprofile" and not _profiling:
        _profiling = True
        _told_busy.clear()
        _put_profile_function()


def ensure_thread() -> None:
    """Make sure the calling thread delivers events (a thread that existed before install)."""
    current = sys.getprofile()
    if _source == "setprofile" and current is not profile_callback:
        if current is not None and not PY312:
            # another profiler (cProfile) holds this thread's one profile slot; a Python
            # function cannot chain to it, so it keeps the slot (the compiled engine chains)
            if threading.get_ident() in _told_busy:
                return
            _told_busy.add(threading.get_ident())
            warnings.warn(
                "handit (pure-Python engine) records nothing on this thread while another profiler is installed",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        sys.setprofile(profile_callback)


def uninstall() -> None:
    """Stop delivering events; leave no callback, local event or disabled location behind."""
    global _source, _tool_id, _profiling
    _close_window()
    if _source == "sysmon" and _tool_id is not None:
        release_sysmon(_tool_id, _local_codes)
    elif _source == "setprofile" and _profiling:
        _take_profile_function()
    _tool_id = None
    _source = None
    _profiling = False
    _code_map.clear()


def set_policy(policy: Policy) -> None:
    """Use new filter rules; every code object is decided again (reusing the decision
    where the rules it depends on are unchanged)."""
    global _policy, _generation, _bounded, _budget_records
    _bounded = bool(policy.config.bounded_memory)
    _budget_records = max(_CHECK_MIN, policy.config.max_buffer_bytes // RECORD_BYTES)
    _policy = policy
    _generation += 1
    _code_map.clear()
    if _tool_id is not None:
        sys.monitoring.restart_events()


def set_backlog_hook(hook: Callable[[], Any] | None) -> None:
    """Call ``hook()`` (no arguments; a drain) from a recording thread whose records wait past
    HANDIT_MAX_BUFFER_BYTES, instead of letting them pile up; None: no hook."""
    global _backlog_hook
    _backlog_hook = hook


def activate(slot: int) -> None:
    """Let records for ``slot`` through."""
    _active.add(slot)


_counts: dict[int, list[int]] = {}
_gen_keys: dict[int, GenKeys] = {}  # session slot -> its generator keys (the drain's)


def take_counts(slot: int) -> tuple[int, int, int]:
    """``(calls, exceptions, dropped)`` for ``slot`` since the last call; resets them."""
    calls, excs = _counts.pop(slot, (0, 0))
    _gen_keys.pop(slot, None)  # a new session (or none) on this slot: its keys start again
    return calls, excs, _dropped.pop(slot, 0)


def deactivate(slot: int) -> None:
    """Drop records for ``slot`` from now on (work outliving its session)."""
    _active.discard(slot)
    if not _active:
        _close_window()
    _rearm_after_limit(warn=True)


def set_slot(slot: int) -> Any:
    """Make ``slot`` the current thread's or task's session; returns a token for reset_slot."""
    return session_var.set(slot)


def reset_slot(token: Any) -> None:
    """Undo a set_slot (raises ValueError if made in another context)."""
    session_var.reset(token)


def mark_internal_thread() -> None:
    """The calling thread is handit's own: never record it."""
    _buffer().busy = True
    _tls.internal = True
    session_var.set(0)
    if _source == "setprofile" and sys.getprofile() is profile_callback:
        sys.setprofile(None)  # not even the profile function's call: never traced


def pending() -> bool:
    """Whether :func:`drain` has work: records, or the buffer of a thread that exited to free."""
    with _buffers_lock:
        return any(buf.records or buf.gap or buf.exited for buf in _buffers)


def thread_states() -> int:
    """How many threads' buffers the engine holds (threads that exited are freed once drained)."""
    with _buffers_lock:
        return len(_buffers)


def _fold_suspends(records: list[tuple[int, int, int, int, Any, int]]) -> list[Any]:
    """The records with a generator's YIELD and its RESUME right after it folded into a PAUSE
    (time suspended), its RESUME and its YIELD right after it into a STEP (time running), and
    further such pairs added to them, by the compiled engine's rules (``_on_resume``,
    ``_on_yield``), which fold them as they record. This engine's ticks are ns."""
    out: list[Any] = []
    for rec in records:
        kind = rec[0]
        if kind == RESUME and out and out[-1][0] == YIELD and out[-1][5] == rec[5] and out[-1][1] == rec[1]:
            y = out.pop()
            if out and out[-1][0] == PAUSE and out[-1][5] == rec[5] and out[-1][1] == rec[1]:
                out[-1] = (PAUSE, rec[1], rec[2], rec[3], out[-1][4] + rec[3] - y[3], rec[5])
            elif (len(out) > 1 and out[-1][0] == STEP and out[-1][1] == rec[1] and out[-2][0] == PAUSE
                  and out[-2][5] == rec[5] and out[-2][1] == rec[1]):
                p = out[-2]
                out[-2] = (PAUSE, p[1], p[2], p[3], p[4] + rec[3] - y[3], p[5])  # (its time stays)
            else:
                out.append((PAUSE, rec[1], rec[2], rec[3], rec[3] - y[3], rec[5]))
        elif kind == YIELD and out and out[-1][0] == RESUME and out[-1][5] == rec[5] and out[-1][1] == rec[1]:
            r = out.pop()
            if out and out[-1][0] == STEP and out[-1][5] == rec[5] and out[-1][1] == rec[1]:
                out[-1] = (STEP, rec[1], rec[2], rec[3], out[-1][4] + rec[3] - r[3], rec[5])
            else:
                out.append((STEP, rec[1], rec[2], rec[3], rec[3] - r[3], rec[5]))
        else:
            out.append(rec)
    return out


_MAX_HOLD_S = 0.1  # a thread stopped in C right after an unwind
_RESOLVE_WAIT_S = 1.0  # what a session's drain waits at most for a message being made


def _unwinds_unresolved(buf: _ThreadBuffer, periodic: bool) -> bool:
    """PY310/PY311, another thread's records (its take lock held): whether they stay for the
    next drain, because an unwind among them waits for its type and message (issue 11.4; the
    compiled twin's ``_unwinds_unresolved`` does the same). Taken, it would keep
    ``<unknown>`` or no message. The periodic drain leaves them while the unwind is recorded
    or given its text (handit's and the standard library's code: it ends), and while
    ``_exc_trace`` waits for the caller's exception event (for at most ``_MAX_HOLD_S``); any
    other drain (a session's stop or read) waits while it is given its text (``_collect``),
    then takes them."""
    now = time.monotonic()
    if periodic and buf.resolving:
        return True
    if periodic and buf.pending and buf.exc_trace_frame is not None:
        if not buf.held_since:
            buf.held_since = now
        if now - buf.held_since < _MAX_HOLD_S:
            return True
    buf.held_since = 0.0
    return False


def _take(buf: _ThreadBuffer, hold: bool) -> list[tuple[int, int, int, int, Any, int]]:
    """A thread's records (its take lock held): all, or with ``hold`` those before its first
    pending unwind (none while the unwind is being recorded)."""
    records = buf.records
    n = len(records)
    if hold:
        n = 0  # the unwind being recorded now
        if buf.pending:
            wait_for = buf.pending[0][0]
            n = len(records)
            for i in range(n - 1, max(-1, n - 4097), -1):
                if records[i] is wait_for:
                    n = i
                    break
    else:
        buf.pending = []  # their wait ends: taken, they keep what they have
        buf.held_since = 0.0  # (a drain of its own thread does not pass _unwinds_unresolved)
    batch = records[:n]
    del records[:n]
    buf.limit = len(records) + _CHECK_MIN  # (a thread dropping records keeps them now)
    return batch


def _collect() -> list[tuple[int, list[tuple[int, int, int, int, Any, int]]]]:
    """Take every thread's pending records, oldest first per thread."""
    out = []
    me = getattr(_tls, "buffer", None)
    # handit's drain thread, or a thread handing over its backlog (as the compiled twin)
    periodic = is_internal_thread() or (me is not None and me.busy)
    with _buffers_lock:
        buffers = list(_buffers)
    for buf in buffers:
        buf.last_exc = None  # the exception-text cache must not keep an exception alive
        if buf.lost_calls:  # calls lost at the recursion limit (with their exits: no gap needed)
            _dropped[buf.lost_slot] = _dropped.get(buf.lost_slot, 0) + buf.lost_calls
            buf.lost_calls = 0
        if buf.gap and not buf.lost:  # records dropped after the last one kept: the gap ends the batch
            buf.records.append((GAP, buf.gap_slot, 0, perf_counter_ns(), None, buf.gap))
            buf.gap = 0
        # taken in place, never swapped: the thread may be between reading buf.records and
        # appending to it (its GIL can switch to this thread there); an append lands after
        # the records taken. The thread sets buf.resolving holding the take lock, so what is
        # decided here under it holds until the records are taken.
        deadline = 0.0
        while True:
            with buf.take_lock:
                hold = buf is not me and _unwinds_unresolved(buf, periodic)
                waiting = not hold and buf is not me and buf.resolving
                if not waiting or (deadline and time.monotonic() >= deadline):
                    batch = _take(buf, hold)
                    break
            deadline = deadline or time.monotonic() + _RESOLVE_WAIT_S
            time.sleep(0.0005)  # the GIL released: the thread gives them their text
        if batch:
            out.append((buf.ident, batch))
            buf.idle_drains = 0
        elif buf.exited:
            buf.idle_drains += 1
    with _buffers_lock:  # a thread that exited leaves nothing behind once drained
        kept = []
        for b in _buffers:
            if b.exited and b.idle_drains >= 2:
                if _by_ident.get(b.ident) is b:
                    del _by_ident[b.ident]
            else:
                kept.append(b)
        _buffers[:] = kept
        _record_lists[:] = [b.records for b in kept]
    return out


def code_info(index: int) -> CodeInfo:
    """The CodeInfo stored under ``index``."""
    return _codes[index]


def code_count() -> int:
    """How many code infos the table holds."""
    return len(_codes)


def codes_since(start: int) -> list[CodeInfo]:
    """Code infos added at or after ``start``."""
    return _codes[start:]


def source() -> str | None:
    """The installed event source, or None."""
    return _source


def tool_id() -> int | None:
    """The sys.monitoring tool id in use, or None."""
    return _tool_id


def after_fork_in_child() -> None:
    """Start clean after fork(): new locks, no pending records, no active session.

    Called first in the child by :mod:`handit.lifecycle` (the drain thread may have held
    the buffers' lock at fork(), with or without a session open).
    """
    global _buffers, _record_lists, _by_ident, _buffers_lock
    _buffers_lock = threading.Lock()
    _active.clear()
    _buffers = []
    _record_lists = []
    _by_ident = {}
    _tls.__dict__.clear()



# ---- drain: records -> encoded blocks ------------------------------------------------------


def _text(previewer: Any, value: Any) -> str:
    if type(value) is Rendered:
        return value
    return previewer.preview(value)  # type: ignore[no-any-return]


def encode_while_waiting(seconds: float, calibration: Any) -> None:
    """Drain thread: wait ``seconds`` (the pure engine encodes everything in :func:`drain`)."""
    time.sleep(seconds)


def drain(calibration: Any, previewer: Any, route: Callable[[int, bytes], None] | None = None) -> Any:
    """Turn every pending record into encoded blocks, one per (session slot, thread).

    Args:
        calibration: a :class:`handit.clock.Calibration` for this engine's clock.
        previewer: turns kept values into redacted preview strings.
        route: called with ``(slot, block)`` for each block, in order.
    Returns:
        ``(slot, block)`` pairs in the block format of :mod:`handit.records`; with
        ``route``, the number of blocks routed.
    """
    out = _drain_blocks(calibration, previewer)
    if route is None:
        return out
    for slot, block in out:
        route(slot, block)
    return len(out)


def _drain_blocks(calibration: Any, previewer: Any) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    if PY312:
        _rearm_after_limit(warn=False)
    calibration.refine()
    to_ns = calibration.to_epoch_ns
    for ident, records in _collect():
        blocks: dict[int, tuple[bytearray, list[int]]] = {}
        for kind, slot, code, ts, aux, key in _fold_suspends(records):
            t = to_ns(ts)
            if key and kind != GAP and kind < HANDOFF:  # a generator's frame: written as its small key (a token as it is)
                keys = _gen_keys.get(slot)
                if keys is None:
                    keys = _gen_keys[slot] = GenKeys()
                if kind == RETURN or kind == UNWIND:
                    keys.release(key)  # its final exit: the key is free again
                    key = 0
                else:
                    key = keys.key(key)
            block = blocks.get(slot)
            if block is None:
                buf = bytearray()
                put_varint(buf, ident)
                put_varint(buf, t)
                block = blocks[slot] = (buf, [t])
            buf, last = block
            dts = t - last[0]
            last[0] = t
            tag = kind
            counts = _counts.get(slot)
            if counts is None:
                counts = _counts[slot] = [0, 0]
            if kind == CALL:
                counts[0] += 1
                if aux is not None:
                    tag |= 0x80
                if key:
                    tag |= 0x40
                buf.append(tag)
                put_varint(buf, code)
                put_varint(buf, (dts << 1) ^ (dts >> 63))
                if key:
                    put_varint(buf, key)
                if aux is not None:
                    put_varint(buf, len(aux))
                    for value in aux:
                        put_string(buf, "" if value is NO_VALUE else _text(previewer, value))
            elif kind == RETURN:
                has = aux is not NO_VALUE
                buf.append(tag | 0x80 if has else tag)
                put_varint(buf, (dts << 1) ^ (dts >> 63))
                if has:
                    put_string(buf, _text(previewer, aux))
            elif kind == UNWIND:
                counts[1] += 1
                buf.append(tag)
                put_varint(buf, (dts << 1) ^ (dts >> 63))
                put_string(buf, aux[0])
                put_string(buf, aux[1])
            else:
                buf.append(tag)
                put_varint(buf, (dts << 1) ^ (dts >> 63))
                put_varint(buf, key)
                if kind == PAUSE or kind == STEP:
                    put_varint(buf, aux)
                elif kind == TASK or kind == RENAME:  # then its name (records.task_name_ref)
                    put_varint(buf, code)
            if len(buf) >= BLOCK_BYTES:  # cut: the next record of this slot starts a new block
                out.append((slot, bytes(buf)))
                del blocks[slot]
        for slot, (buf, _) in blocks.items():
            out.append((slot, bytes(buf)))
    return out


# ---- marker records: asyncio tasks and work handed to other threads (instrument/asyncio_tasks) ----
# Integers only, as the compiled twin's: no record keeps a task or frame alive.

_task_names: dict[str, int] = {}  # task name -> its reference (records.task_name_ref)


def _task_entry(index: int, name: str) -> CodeInfo:
    return CodeInfo(index, TASK_MODULE, name, "", 0, False, (), ())


def task_name_ref(name: str) -> int:
    """The reference a TASK record names ``name`` by (a new code-table entry for a new name).

    Args:
        name: the task's name.
    Returns:
        an integer (see :func:`handit.records.task_name_ref`).
    """
    return _task_name_ref(name, _task_names, _codes, _task_entry)


def mark_task(frame: Any, name_ref: int) -> bool:
    """Record that an asyncio task whose coroutine runs ``frame`` is created here.

    Args:
        frame: the coroutine's frame (``coro.cr_frame``); only its identity is kept.
        name_ref: the task's name, from :func:`task_name_ref` (0: not known).
    Returns:
        whether it was recorded (the calling thread or task is in a session).
    """
    try:
        target = _current(None)
        if target is not None and frame is not None:
            _put(target[0], (TASK, target[1], name_ref, perf_counter_ns(), None, id(frame)))
            return True
    except Exception as exc:  # never reaches user code
        _fail(exc)
    return False


def mark_handoff(kind: int, token: int) -> None:
    """Record work handed to another thread (HANDOFF, here) or its start or end there (ENTER, LEAVE).

    Args:
        kind: ``records.HANDOFF``, ``records.ENTER`` or ``records.LEAVE``.
        token: the same number (not 0) in the three records of one hand-over.
    """
    try:
        if kind == ENTER and _profiling and not PY312 and sys.getprofile() is not profile_callback:
            # a pooled worker started before the first session: before 3.12 the profile
            # function reached only threads started since, and the work's calls were missed
            # without a word (1,244 of 1,800 arrived, 3.10)
            ensure_thread()
        target = _current(None)
        if target is not None and token and kind in (HANDOFF, ENTER, LEAVE):
            _put(target[0], (kind, target[1], 0, perf_counter_ns(), None, token))
    except Exception as exc:  # never reaches user code
        _fail(exc)


def rename_task(old_ref: int, new_ref: int) -> None:
    """Record that the asyncio task created with name ``old_ref`` is now named ``new_ref`` (``Task.set_name``).

    Args:
        old_ref: the name its TASK record gave it (:func:`task_name_ref`; not 0).
        new_ref: its name now (:func:`task_name_ref`; not 0).
    """
    try:
        target = _current(None)
        if target is not None and old_ref and new_ref and old_ref != new_ref:
            _put(target[0], (RENAME, target[1], new_ref, perf_counter_ns(), None, old_ref))
    except Exception as exc:  # never reaches user code
        _fail(exc)
