"""Session stage: start/stop, context propagation, the drain, and the sinks each session writes to."""
from __future__ import annotations

import os
import random
import re
import sys
import tempfile
import threading
import time
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

from . import _engine, _internal, lifecycle, propagation, sinks
from ._policy import Policy
from .blocks import fold_type
from .config import Config, get_config, on_change
from .drain import Drain
from .errors import HanditError

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

_lock = threading.RLock()
_by_slot: dict[int, Session] = {}
_by_id: dict[str, Session] = {}
_next_slot = 0
_state: dict[str, Any] = {"choice": None, "drain": None, "policy": None, "patched": None, "idle_since": None}

LINGER_S = 0.5
"""After the last session stops, the engine stays installed this long, idle (paused).

Installing and releasing it costs more than the rest of a session's start and stop: with
sys.monitoring it bumps CPython's instrumentation version, and every function that runs
after each bump is instrumented again (callgrind, 3.12: ~135,000 instructions for an
empty session's start and stop, the largest share of it, and more for a program with
more code); with the profile function (3.10/3.11) the drain thread, the thread and task
patches and the decisions were made again each time (~60 us of ~70 us on 3.10).
Back-to-back sessions — one per request or per test — reuse the installation instead.
While idle, sys.monitoring's excluded code stays switched off (DISABLE) and a traced
function's call costs about a no-op callback; the profile function is taken off every
thread (the engine's ``pause``: untraced code between sessions runs at full speed and a
profiler the program starts meanwhile is left alone) and put back by the next start
(``resume``). The drain thread releases the engine after this many seconds without a
session; so do :func:`release_idle`, exit and fork. 0: release at the last stop.
"""


# Session, trace and span ids: 128 random bits from a generator seeded from os.urandom once
# per process (and again in a forked child), not uuid4()'s os.urandom call per id (~1.5 us
# each, three a session). Not secrets: they name sessions, unguessability is not needed.
_ids = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ids.seed)
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def _random_hex(bits: int) -> str:
    """``bits`` random bits as lower-case hex, never all zero (W3C trace and span ids)."""
    return (_ids.getrandbits(bits) or 1).to_bytes(bits // 8, "big").hex()


_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


def _new_ids() -> tuple[str, str, str]:
    """``(session id, trace id, span id)`` from one draw of 320 random bits (a third of the
    time of three draws, each turned into text on its own)."""
    h = ((_ids.getrandbits(320) & _UUID4_CLEAR) | _UUID4_SET).to_bytes(40, "big").hex()  # 2x "%080x"
    trace, span = h[:32], h[32:48]  # the UUID's version bits are in the low 128
    if trace == _ZERO_TRACE or span == _ZERO_SPAN:  # W3C: all zero is invalid (p = 2**-64)
        return _new_ids()
    return f"{h[48:56]}-{h[56:60]}-{h[60:64]}-{h[64:68]}-{h[68:]}", trace, span


# attrs as given -> their redacted form, per redactor: a server opens a session per request
# with the same few attrs (method, route), and redacting two of them cost ~5 us a session
_redacted_attrs: dict[tuple[Any, ...], dict[str, str]] = {}
_REDACTED_ATTRS_MAX = 4096


def _safe_attrs(attrs: dict[Any, Any], config: Config) -> dict[str, str]:
    """``attrs`` as strings, redacted (a copy each time: Session.attrs is the caller's to change)."""
    redactor = _policy_for(config).redactor
    key = (redactor, *attrs.items())
    try:
        cached = _redacted_attrs.get(key)
    except TypeError:  # an unhashable value: str() of it, uncached
        return redactor.redact_mapping({str(k): str(v) for k, v in attrs.items()})  # type: ignore[no-any-return]
    if cached is None:
        cached = redactor.redact_mapping({str(k): str(v) for k, v in attrs.items()})
        if len(_redacted_attrs) >= _REDACTED_ATTRS_MAX:
            _redacted_attrs.clear()
        _redacted_attrs[key] = cached
    return dict(cached)


class SessionWarning(UserWarning):
    """Something about a session went wrong without stopping the program (data kept or counted)."""


def parse_traceparent(value: str | None) -> tuple[str, str | None, bool]:
    """Parse a W3C ``traceparent``; an invalid one warns and starts a new trace.

    Args:
        value: the header value, or None.
    Returns:
        ``(trace_id, parent_span_id or None, valid)``.
    """
    if value:
        m = _TRACEPARENT.match(value.strip().lower())
        if m and m.group(1) != "ff" and set(m.group(2)) != {"0"} and set(m.group(3)) != {"0"}:
            return m.group(2), m.group(3), True
        warnings.warn(f"traceparent {value[:80]!r} is not a valid W3C traceparent; starting a new trace", SessionWarning, stacklevel=4)
    return _random_hex(128), None, not value


class Session:
    """One recorded unit of work: its identity, its events, and where they go.

    Created by :func:`handit.session`, :func:`handit.start` or the decorator;
    not instantiated directly.
    """

    end_reason: str | None = None
    """How the session ended, in its ``session_end``: ``"stop"``, ``"exit"``, ``"signal SIGTERM"``,
    ``"exec"``, ``"os._exit"`` (set by :mod:`handit.lifecycle`; ``"stop"`` when unset)."""
    remote_parent: str | None = None
    """The id of the session this one continues in another process (:mod:`handit.propagation`)."""
    span_kind: str = "internal"
    """``"server"`` for a request's session opened by :mod:`handit.middleware` (its OpenTelemetry
    root span is then a SERVER span); ``http_status`` is that request's response status."""
    http_status: int | None = None
    otel_flags: str | None = None
    """The W3C trace flags of the ``traceparent`` sent on its HTTP calls when HANDIT_OTEL exports it (:mod:`handit.otel`)."""
    _ending = False  # stopped with stop(wait=False), not finished yet
    _on_finished: Callable[[Session], None] | None = None
    _stopper: tuple[Any, str] | None = None  # the thread that stopped it with wait=False

    def __init__(self, tag: str | None, attrs: dict[str, str] | None, traceparent: str | None, config: Config) -> None:
        self.id, self.trace_id, self.span_id = _new_ids()
        self.tag = tag
        # redacted here, once, so every sink and Session.attrs hold the safe form
        self.attrs = _safe_attrs(attrs, config) if attrs else {}
        self.parent_span_id = None
        if traceparent is not None:
            self.trace_id, self.parent_span_id, _ = parse_traceparent(traceparent)
        self.traceparent = traceparent
        self.config = config
        self.parent: Session | None = None
        self.slot = 0
        self.t0_ns = time.time_ns()
        self.t1_ns: int | None = None
        self.thread = threading.get_ident()  # the thread that started it
        self.thread_names: dict[str, str] = {}  # ident -> the thread's name, set at stop
        self.stats: dict[str, int] = {"calls": 0, "exceptions": 0, "dropped": 0, "blocks": 0, "bytes": 0}
        self._blocks: list[bytes] = []
        self._mem = 0
        self._spill: Any = None
        self._spill_index: list[tuple[int, int]] = []
        self._in_file: str | None = None  # blocks past the memory bound are read back from this trace file
        self._in_file_from = 0  # the file's size before this session's first block was written
        self._fold: Any = None  # handit.blocks.Fold, made at start for the engine in use
        self._descendants: Any = None  # Stats of the finished sessions started inside this one
        self._extra: list[dict[str, Any]] = []
        self._sinks: list[Any] = []
        self._builder: Any = None
        self._events: list[dict[str, Any]] | None = None
        self._token: Any = None
        self._codes: Any = None
        self.engine = ""
        self.source = ""

    def __repr__(self) -> str:
        state = "finished" if self.t1_ns else "active"
        return f"<handit.Session {self.tag!r} id={self.id} {state} engine={self.engine} source={self.source}>"

    # -- context manager --------------------------------------------------------------------
    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: Any) -> None:
        stop(self)

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        stop(self)

    # -- data in ---------------------------------------------------------------------------
    def _add_block(self, block: bytes) -> None:
        self.stats["blocks"] += 1
        self.stats["bytes"] += len(block)
        self._fold.feed(block)
        self._keep(block)  # before the sinks: a failing sink never loses the in-memory copy
        for sink in self._sinks:
            sink.block(self, block)

    def _keep(self, block: bytes) -> None:
        """Keep a block for :attr:`events`: the trace file this session writes holds them (no
        second copy); without one, in memory up to HANDIT_MAX_SESSION_MEMORY, then a spill file."""
        if self._in_file is not None:
            return
        # a trace file this session writes holds the blocks from the first: no copy in memory
        # (under tracemalloc, kept blocks were the program's memory: more-itertools'
        # test_repeated_zero_cache_peek_has_bounded_memory saw ~1 MB of them)
        for sink in self._sinks:
            if getattr(sink, "fmt", "") == "handit":
                self._in_file = sink.path
                # its blocks are written from here on: reading them back skips the earlier sessions
                # (a failed test after a 400 MB one read the whole file, ~1 s)
                self._in_file_from = sink.writer.end_offset()
                self._blocks.clear()
                self._mem = 0
                return
        if self._spill is None and self._mem + len(block) > self.config.max_session_memory:
            self._spill = tempfile.TemporaryFile(prefix="handit-spill-")  # created 0600
            weakref.finalize(self, self._spill.close)
        if self._spill is not None:
            off = self._spill.seek(0, os.SEEK_END)
            self._spill.write(block)
            self._spill_index.append((off, len(block)))
        else:
            self._blocks.append(block)
            self._mem += len(block)

    def add_events(self, events: list[dict[str, Any]]) -> None:
        """Add events made outside the engine (HTTP calls, the low-level API)."""
        _internal.watch_collections()
        if _internal.collecting():
            # from a finalizer (an HTTP response collected unread): this thread may hold the
            # writer's lock below, mid-frame; the events go at the next drain or stop
            _internal.defer(self.add_events, events)
            return
        self._extra.extend(events)
        for sink in self._sinks:
            sink.events(self, events)

    def _iter_blocks(self) -> Iterator[bytes]:
        if self._in_file is not None:
            from .tracefile import iter_session_blocks

            for sink in self._sinks:
                if getattr(sink, "fmt", "") == "handit":
                    sink.writer.flush()
            yield from iter_session_blocks(self._in_file, self.id, self._in_file_from)
            return
        yield from self._blocks
        if self._spill is not None:
            for off, size in self._spill_index:
                self._spill.seek(off)
                yield self._spill.read(size)

    # -- data out --------------------------------------------------------------------------
    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event of the session in the JSONL schema, decoded on use (for small sessions and
        tests: the summary needs none of them).

        While the session runs, what has arrived so far (pending records are drained first;
        calls still running end ``incomplete``); once it has ended, every event (kept).
        """
        if self._events is not None:
            return self._events
        if self._ending:
            stop(self)
        from .reader import TraceBuilder, rename_tasks

        running = self.t1_ns is None
        if running:
            _drain_now()
        builder = TraceBuilder(self.id, self._codes.code_info)
        out = [self.start_event(), *builder.extra(list(self._extra))]  # HTTP events wait for their calls
        for block in self._iter_blocks():
            out.extend(builder.feed(block))
        out.extend(builder.finish(self.t1_ns or time.time_ns()))
        if builder.task_names:
            rename_tasks(out, builder.task_names)
        if not running:
            out.append(self.end_event())
            self._events = out
        return out

    def start_event(self) -> dict[str, Any]:
        """The ``session_start`` event."""
        import platform

        return {
            "type": "session_start",
            "session_id": self.id,
            "tag": self.tag,
            "ts_ns": self.t0_ns,
            "attrs": self.attrs,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "parent_session_id": self.parent.id if self.parent else self.remote_parent,
            "pid": os.getpid(),
            "thread": self.thread,
            "runtime": {"language": "python", "version": platform.python_version()},
        }

    def end_event(self) -> dict[str, Any]:
        """The ``session_end`` event, with statistics."""
        return {
            "type": "session_end",
            "session_id": self.id,
            "ts_ns": self.t1_ns,
            "duration_ns": (self.t1_ns or 0) - self.t0_ns,
            "reason": self.end_reason or "stop",
            "stats": dict(self.stats),
            "threads": dict(self.thread_names),
        }

    def calls(self) -> list[dict[str, Any]]:
        """Call events only."""
        return [e for e in self.events if e["type"] == "call"]

    def iter_calls(self) -> Iterator[dict[str, Any]]:
        """The ``call``, ``return`` and ``exception`` events one at a time, decoded as they are read
        and not kept (:attr:`events` keeps them all): for a view of a session of any size."""
        if self._events is not None:
            yield from (e for e in self._events if e["type"] in ("call", "return", "exception"))
            return
        if self._ending:
            stop(self)
        from .reader import TraceBuilder

        if self.t1_ns is None:
            _drain_now()
        builder = TraceBuilder(self.id, self._codes.code_info)
        for block in self._iter_blocks():
            yield from builder.feed(block)
        yield from builder.finish(self.t1_ns or time.time_ns())

    def fold(self) -> dict[str, Any]:
        """The session's per-function figures so far (:meth:`handit.blocks.Fold.to_json`), without events.

        While the session runs, pending records are drained first and calls still open are
        counted as ended now (``incomplete``), in a copy.
        """
        if self._ending:
            stop(self)
        if self.t1_ns is not None:
            return self._fold.to_json()  # type: ignore[no-any-return]
        _drain_now()
        fold = self._fold.copy()
        fold.finish(time.time_ns())
        return fold.to_json()  # type: ignore[no-any-return]

    def summary_stats(self, nested: bool = False) -> Any:
        """The summary's aggregates (:class:`handit.renderers.summary.Stats`) from the session's fold:
        no event is decoded.

        Args:
            nested: add the finished sessions started inside this one (and inside those).
        """
        import copy

        from .renderers.summary import Stats

        stats = Stats()
        self._add_to(stats, self.fold())
        if nested and self._descendants is not None:
            own = stats.sessions
            stats = copy.deepcopy(self._descendants)
            self._add_to(stats, self.fold())
            stats.sessions = {**own, **stats.sessions}  # this session first
        return stats

    def _add_to(self, stats: Any, fold: dict[str, Any]) -> None:
        stats.add(self.start_event())
        stats.add_fold(fold, self._codes.code_info, self.id)
        stats.feed(self._extra)
        if self.t1_ns is not None:
            stats.add(self.end_event())

    def summary(self, top: int = 10) -> str:
        """A short text summary: calls, exceptions, the busiest functions (from the fold: no events)."""
        from .renderers.summary import plain_text, summary_blocks

        return plain_text(summary_blocks(self.summary_stats(), top=top))


# ---- engine lifetime ---------------------------------------------------------------------------


def _route(slot: int, block: bytes) -> None:
    session = _by_slot.get(slot)
    if session is not None:
        try:
            session._add_block(block)
        except Exception as exc:  # a sink failing never loses the in-memory copy
            session.stats["sink_errors"] = session.stats.get("sink_errors", 0) + 1
            _warn_once(f"handit could not write session {session.id}: {exc!r} (counted in each session's "
                       "stats['sink_errors']; said once)", key=f"sink:{exc!r}")


_warned: set[str] = set()


def _warn_once(message: str, key: str | None = None) -> None:
    """Warn once per ``key`` (default: the message) in this process: a failure that repeats
    with every session (a full disk, a server with a session per request) is said once."""
    key = key or message
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, SessionWarning, stacklevel=3)


# The engine choice and the Policy of the last install, reused while the settings they come
# from are the same (a session per request or per test would rebuild them each time:
# ~15 us each, a third of an empty session's start and stop).
_last_choice: list[tuple[Config, _engine.EngineChoice]] = []
_last_policy: list[Policy] = []


def _choose(config: Config) -> _engine.EngineChoice:
    if _last_choice and _last_choice[0][0] is config:
        return _last_choice[0][1]
    choice = _engine.choose(config.engine, config.source, config.require_compiled)
    _last_choice[:] = [(config, choice)]
    return choice


def _policy_for(config: Config) -> Policy:
    if _last_policy and _last_policy[0].config is config:
        return _last_policy[0]
    policy = Policy(config, generation=0)
    _last_policy[:] = [policy]
    return policy


def _install(config: Config) -> None:
    choice = _choose(config)
    policy = _policy_for(config)
    drain = Drain(choice.module, _route)
    drain.previewer = policy.previewer
    drain.on_idle = _after_drain
    choice.module.install(choice.source, policy)
    _state.update(choice=choice, drain=drain, policy=policy, config=config)
    _internal._hooks[:] = [choice.module.mark_internal_thread]
    _patch_threads(choice.module)
    drain.start()
    if config.instrument_http:
        _instrument_http(config)


def _instrument_http(config: Config) -> None:
    """HANDIT_INSTRUMENT_HTTP: patch the HTTP clients the program has imported (docs/http.md).

    The instrumentation is a leaf: imported by name here, only when the setting is on.
    """
    try:
        import importlib

        importlib.import_module("handit.instrument").on_first_session(config)
    except Exception as exc:
        _warn_once(f"handit could not instrument HTTP clients: {exc!r} (HANDIT_INSTRUMENT_HTTP=0 turns this off)")


def _uninstall(drained: bool = False) -> None:
    """Release the engine; ``drained``: the caller has just drained with no session active."""
    choice, drain = _state["choice"], _state["drain"]
    if choice is None or drain is None:
        return
    drain.stop()
    if not drained:
        drain.run_once()
    choice.module.uninstall()
    _unpatch_threads()
    lifecycle.release()
    _state.update(drain=None, policy=None, idle_since=None)


def _last_stopped() -> None:
    """No session is left (the engine paused): release the engine, or keep it for LINGER_S (see there)."""
    drain = _state["drain"]
    if LINGER_S > 0 and drain is not None and drain.background:
        _state["idle_since"] = time.monotonic()
        return
    _uninstall(drained=True)


def _release_if_idle() -> None:
    # the drain thread, after each drain while the engine lingers
    if _state["idle_since"] is None:
        return
    with _lock:
        since = _state["idle_since"]
        if since is not None and not _by_slot and time.monotonic() - since >= LINGER_S:
            _uninstall()


def release_idle() -> None:
    """Release an engine kept installed after its last session (see LINGER_S) now."""
    with _lock:
        if not _by_slot:
            _uninstall()


# ident -> name of the threads started inside a session, kept for the session_end of a
# session outliving them (a live thread's name is read at the end)
_thread_names: dict[int, str] = {}
_MAX_THREAD_NAMES = 10_000


def _names_of_threads(idents: Any, live: dict[Any, str] | None = None, stopper: tuple[Any, str] | None = None) -> dict[str, str]:
    """``{ident: name}`` (idents as strings, as JSON keys) of the threads a session saw
    (``live``: the live threads' names, when the caller has them; ``stopper``: the ident and
    name of the thread that stopped it, when not this one)."""
    names: dict[str, str] = {}
    if not idents:
        return names
    if stopper is None:
        here = threading.current_thread()
        stopper = (here.ident, here.name)
    for ident in idents:
        if ident == stopper[0]:  # most sessions: the stopping thread's alone (no enumerate())
            name = stopper[1]
        else:
            if live is None:
                live = {t.ident: t.name for t in threading.enumerate()}
            name = live.get(ident) or _thread_names.get(ident)  # type: ignore[assignment]
        if name:
            names[str(ident)] = name
    return names


def _patch_threads(engine: Any) -> None:
    """Threads and executor tasks started inside a session join it."""
    var = engine.session_var
    set_slot = engine.set_slot
    orig_start = threading.Thread.start
    orig_submit = ThreadPoolExecutor.submit

    def start(self: threading.Thread) -> None:
        slot = var.get()
        if slot:
            run = self.run

            def run_in_session() -> None:
                if len(_thread_names) >= _MAX_THREAD_NAMES:
                    _thread_names.clear()
                _thread_names[threading.get_ident()] = self.name
                set_slot(slot)
                run()

            self.run = run_in_session  # type: ignore[method-assign]
        orig_start(self)

    def submit(self: ThreadPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        slot = var.get()
        if slot:
            return orig_submit(self, _run_in_slot, engine, slot, fn, *args, **kwargs)
        return orig_submit(self, fn, *args, **kwargs)

    threading.Thread.start = start  # type: ignore[method-assign]
    ThreadPoolExecutor.submit = submit  # type: ignore[method-assign]
    _state["patched"] = (orig_start, start, orig_submit, submit)
    _asyncio_tasks().install(engine)


def _asyncio_tasks() -> Any:
    """The asyncio task markers' producer (a leaf, imported by name: docs/asyncio.md)."""
    import importlib

    return importlib.import_module("handit.instrument.asyncio_tasks")


def _run_in_slot(engine: Any, slot: int, fn: Any, *args: Any, **kwargs: Any) -> Any:
    token = engine.set_slot(slot)
    try:
        return fn(*args, **kwargs)
    finally:
        engine.reset_slot(token)


def _unpatch_threads() -> None:
    _asyncio_tasks().uninstall()
    patched = _state["patched"]
    if patched is None:
        return
    orig_start, start, orig_submit, submit = patched
    if threading.Thread.start is start:
        threading.Thread.start = orig_start  # type: ignore[method-assign]
    if ThreadPoolExecutor.submit is submit:
        ThreadPoolExecutor.submit = orig_submit  # type: ignore[method-assign]
    _state["patched"] = None


def _policy_changed(config: Config) -> None:
    """configure() between or during sessions: new filters take effect for new decisions."""
    with _lock:
        choice = _state["choice"]
        if not _by_slot:
            _uninstall()  # an idle engine: the next session installs one under the new settings
        elif choice is not None:
            policy = _policy_for(config)
            choice.module.set_policy(policy)
            _state["policy"] = policy
            _state["drain"].previewer = policy.previewer


on_change(_policy_changed)


# ---- start / stop ------------------------------------------------------------------------------


def start(tag: str | None = None, *, attrs: dict[str, str] | None = None, traceparent: str | None = None,
          parent_session_id: str | None = None) -> Session:
    """Start a session in the current thread or task.

    Args:
        tag: a name for the session (the original's ``agent``).
        attrs: string attributes stored with the session.
        traceparent: a W3C traceparent to join a distributed trace.
        parent_session_id: the session this one continues in a parent process.
    Returns:
        the running :class:`Session`; pass it to :func:`stop`.
    Raises:
        HanditError: the engine cannot start (e.g. no free sys.monitoring tool id).
    """
    config = get_config()
    if traceparent is None and config.otel:
        traceparent = _otel_parent()
    session = Session(tag, attrs, traceparent, config)
    session.remote_parent = parent_session_id
    fold = _fold_type(config)()
    with _lock:
        kept = False  # an engine kept from an earlier period (paused: see LINGER_S)
        if not _by_slot:
            lifecycle.install()
            if _state["drain"] is not None and _state["config"] is not config:
                _uninstall()  # idle under other settings
            if _state["drain"] is None:
                _install(config)
            else:
                kept = True
            _state["idle_since"] = None
            lifecycle.sessions_opened(session)
        choice = _state["choice"]
        try:
            _register(session, config, choice, fold)
        finally:
            if kept:
                # last: the profile function would see the rest of start (pure engine: ~1 us an event)
                choice.module.resume()
        choice.module.ensure_thread()
    return session


def _register(session: Session, config: Config, choice: _engine.EngineChoice, fold: Any) -> None:
    """Give ``session`` its slot, sinks and place as the current session (``_lock`` held)."""
    global _next_slot
    var = choice.module.session_var
    parent_slot = var.get()
    session.parent = _by_slot.get(parent_slot)
    _next_slot = _next_slot % 0xFFFF + 1
    while _next_slot in _by_slot:
        _next_slot = _next_slot % 0xFFFF + 1
    session.slot = _next_slot
    session.engine, session.source = choice.engine, choice.source
    session._codes = choice.module
    session._fold = fold
    choice.module.take_counts(session.slot)  # a reused slot starts from zero
    _by_slot[session.slot] = session
    _by_id[session.id] = session
    if _session_sampled(session, config):
        _open_sinks(session, config)
        choice.module.activate(session.slot)
    session._token = choice.module.set_slot(session.slot)


_fold_types: dict[tuple[bool, bool], Any] = {}  # (fallback, require_compiled) -> the Fold class


def _fold_type(config: Config) -> Any:
    key = (config.engine == "fallback", config.require_compiled)
    fold = _fold_types.get(key)
    if fold is None:
        try:
            fold = _fold_types[key] = fold_type("fallback" if key[0] else "compiled", key[1])
        except ImportError as exc:
            raise HanditError(f"HANDIT_REQUIRE_COMPILED is set but the compiled fold is not built ({exc})") from None
    return fold


def _otel_parent() -> str | None:
    """HANDIT_OTEL: a session without a traceparent joins the session it runs in, else the
    OpenTelemetry span active now (its root span becomes that span's child)."""
    outer = current()
    if outer is not None:
        return f"00-{outer.trace_id}-{outer.span_id}-{outer.otel_flags or '01'}"
    if "opentelemetry.trace" not in sys.modules:  # no span can be active: OpenTelemetry is not loaded
        return None
    from .otel import active_traceparent

    return active_traceparent()


def _session_sampled(session: Session, config: Config) -> bool:
    rate = config.session_sample_rate
    if rate >= 1.0:
        return True
    # decided on the trace id, so every process of a distributed trace agrees
    return int(session.trace_id[-16:], 16) < rate * 2**64


def _open_sinks(session: Session, config: Config) -> None:
    if config.otel:
        from . import otel

        sink = otel.open_sink(session, config)
        if sink is not None:
            sink.start(session)
            session._sinks.append(sink)
    if config.output_file:
        try:
            sink = sinks.FileSink(config.output_file, config.resolved_output_format, config.flush_every_ms / 1000)
            sink.start(session)
            session._sinks.append(sink)
        except OSError as exc:
            _warn_once(f"HANDIT_OUTPUT_FILE={config.output_file!r} cannot be written ({exc}); the trace stays in memory only")
    if config.endpoint:
        sink = sinks.EventSink(sinks.webhook_exporter(config))
        # the webhook registers its own exit handler; ours must run first so the
        # sessions' last events are sent
        lifecycle.exit_handler_last()
        sink.start(session)
        session._sinks.append(sink)


def stop(session: Session | None = None, *, wait: bool = True,
         on_finished: Callable[[Session], None] | None = None) -> Session | None:
    """End a session: drain its records, write its end, release the engine if it was the last.

    Args:
        session: the session to stop (default: the current one).
        wait: False: record nothing more for it and return; the background drain finishes it
            (drains its records, writes its end) at its next pass, ~10 ms later, so a server
            with a session per request does not drain at each request's end (reading its
            events, :func:`stop` or exit finish it at once). Only on the sys.monitoring source
            with a background drain; elsewhere it is finished here.
        on_finished: called with the session once it is finished (on the drain thread when
            ``wait`` is False); what it raises is warned about once, never raised.
    Returns:
        the stopped session, or None if there was none.
    """
    _internal.run_deferred()  # events finalizers added, before the session's end
    with _lock:
        choice = _state["choice"]
        if choice is None:
            return None
        var = choice.module.session_var
        if session is None:
            session = _by_slot.get(var.get())
            if session is None:
                return None
        if session.t1_ns is not None:
            if not session._ending:
                return session
            _ending.remove(session)  # stopped with wait=False, finished now
            session._ending = False
        else:
            if _by_slot.get(session.slot) is not session:
                return propagation.stop_inherited(session)  # the parent's, seen in a forked child
            if var.get() == session.slot and session._token is not None:
                try:
                    choice.module.reset_slot(session._token)
                except ValueError:  # stopped from another context
                    choice.module.set_slot(session.parent.slot if session.parent else 0)
            choice.module.deactivate(session.slot)
            if len(_by_slot) == 1:
                # the last: nothing is recorded from here on, and the rest of stop (the last drain
                # most) runs unprofiled (pure engine: ~1 us an event); see LINGER_S
                choice.module.pause()
            session.t1_ns = time.time_ns()
            if on_finished is not None:
                session._on_finished = on_finished
            if not wait and choice.source == "sysmon" and _state["drain"].background:
                # (the profile-function source's periodic drain may hold a thread's records
                # back, PY310/PY311 unwinds: only a session's own stop is sure to take them)
                session._ending = True
                here = threading.current_thread()
                session._stopper = (here.ident, here.name)  # (a thread per request may be gone when it is finished)
                if session.end_reason is None:
                    session.end_reason = "stop"  # not the reason of an exit that finishes it
                _ending.append(session)
                return session
        try:
            _state["drain"].run_once(if_pending=True)
        finally:
            _finish(session, choice)
    _call_on_finished(session)
    return session


# Sessions stopped with wait=False, in stop order: the drain thread finishes them (_after_drain).
_ending: list[Session] = []


def _finish(session: Session, choice: Any, live: dict[Any, str] | None = None) -> None:
    """A stopped session's records are drained: its counts, its end written (``_lock`` held;
    ``live``: the live threads' names, see _names_of_threads)."""
    session._fold.finish(session.t1_ns)
    session.thread_names = _names_of_threads(session._fold.threads, live, session._stopper)
    calls, exceptions, dropped = choice.module.take_counts(session.slot)
    session.stats["calls"] += calls
    session.stats["exceptions"] += exceptions
    session.stats["dropped"] += dropped
    if dropped:
        _warn_once(f"handit dropped {dropped} records of session {session.id} (HANDIT_BOUNDED_MEMORY, the recursion limit, or out of memory); gaps are marked")
    del _by_slot[session.slot]
    _by_id.pop(session.id, None)
    for sink in session._sinks:
        try:
            sink.end(session)
        except Exception as exc:
            _warn_once(f"handit could not finish writing session {session.id}: {exc!r}", key=f"sink-end:{exc!r}")
    _tell_ancestors(session)
    if not _by_slot:
        lifecycle.sessions_closed()
        _last_stopped()


def _call_on_finished(session: Session) -> None:
    fn = session._on_finished
    if fn is None:
        return
    session._on_finished = None
    try:
        fn(session)
    except Exception as exc:
        _warn_once(f"handit: a finished session's callback {fn!r} raised {exc!r} (said once)", key=f"on-finished:{exc!r}")


def _after_drain() -> None:
    """The drain thread, after each periodic drain: finish the sessions stopped with
    ``wait=False`` (drained once more first: one may have stopped during that drain), then
    release an engine left idle (see LINGER_S)."""
    if _ending:
        batch = _ending[:]
        drain = _state["drain"]
        if drain is not None:
            drain.run_once(if_pending=True)
        finished = []
        live = {t.ident: t.name for t in threading.enumerate()}  # once for the batch: not this thread's sessions
        with _lock:
            choice = _state["choice"]
            for session in batch:
                if session._ending:  # (not finished by a stop() meanwhile)
                    _ending.remove(session)
                    session._ending = False
                    _finish(session, choice, live)
                    finished.append(session)
        for session in finished:
            _call_on_finished(session)
    _release_if_idle()


def _drain_now() -> None:
    """Hand every session what its threads have recorded so far (reading a running session)."""
    drain = _state["drain"]
    if drain is not None:
        drain.run_once()


def _tell_ancestors(session: Session) -> None:
    """A finished session's figures join those of the running sessions it was started inside."""
    parent = session.parent
    if parent is None:
        return
    from .renderers.summary import Stats

    fold = session._fold.to_json()
    while parent is not None:
        if parent.t1_ns is None:
            if parent._descendants is None:
                parent._descendants = Stats()
            session._add_to(parent._descendants, fold)
        parent = parent.parent


def current() -> Session | None:
    """The session active in this thread or task, or None."""
    choice = _state["choice"]
    if choice is None:
        return None
    return _by_slot.get(choice.module.session_var.get())


def by_id(session_id: str) -> Session | None:
    """An active session by its id."""
    return _by_id.get(session_id)


def active_sessions() -> list[Session]:
    """Every active session."""
    return list(_by_slot.values())


def engine_info() -> tuple[str, str, str] | None:
    """``(engine, source, reason)`` of the installed engine, or None."""
    choice = _state["choice"]
    return (choice.engine, choice.source, choice.reason) if choice else None


def after_fork_in_child() -> None:
    """A forked child: the parent's sessions and sinks are the parent's (step 3 of
    :data:`handit.lifecycle.FORK_STEPS`)."""
    global _lock
    _lock = threading.RLock()  # another thread of the parent may have held it at fork()
    _by_slot.clear()
    _by_id.clear()
    _ending.clear()
    propagation.after_fork_in_child()
    sinks.forget_all()


def uninstall_after_fork() -> None:
    """A forked child: the parent's engine installation goes (step 4 of :data:`handit.lifecycle.FORK_STEPS`)."""
    choice = _state["choice"]
    if choice is not None:
        try:
            choice.module.uninstall()
        finally:
            _unpatch_threads()
    _state.update(choice=None, drain=None, policy=None, idle_since=None)


def require_no_sessions() -> None:
    """Raise HanditError if a session is active (for tests and tools)."""
    if _by_slot:
        raise HanditError(f"{len(_by_slot)} handit session(s) still active")
