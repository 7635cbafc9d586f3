"""OpenTelemetry stage, the exporter: a session's blocks and events -> one handit thread that decodes them,
keeps the calls worth a span (:mod:`.tree`) and, when the session ends, makes its spans (:mod:`.spans`)
through the application's TracerProvider (or handit's own OTLP/HTTP one when it has none).

The program's threads only queue references to blocks the session keeps anyway; decoding,
span making and exporting happen in handit's ``handit-otel`` thread and the SDK's processor.
"""
from __future__ import annotations

import collections
import os
import sys
import threading
import time
import warnings
from typing import Any

from .. import _internal, sinks
from ..config import Config
from ..reader import TraceBuilder
from .tree import CallTree

__all__ = ["OtelExporter", "OtelSink", "exporter"]

MAX_QUEUED_BYTES = 64 * 1024 * 1024
"""Bytes of blocks waiting for the ``handit-otel`` thread; past it a session's blocks are dropped
for OpenTelemetry only (counted in ``handit.otel.blocks_dropped`` on its root span, warned once)."""

_KEY = "otel:"  # the exporter's key among sinks._exporters (flushed at exit with the others)


class _SessionState:
    __slots__ = ("builder", "tree", "extra", "dropped")

    def __init__(self, session: Any, config: Config) -> None:
        self.builder = TraceBuilder(session.id, session._codes.code_info)
        self.tree = CallTree(int(config.otel_min_duration * 1e9), config.otel_max_spans - 1)
        self.extra: list[dict[str, Any]] = []
        self.dropped = 0


class OtelSink:
    """A session's sink (see :mod:`handit.sinks`): hands everything to the process's :class:`OtelExporter`."""

    def __init__(self, exporter: OtelExporter) -> None:
        self.exporter = exporter

    def start(self, session: Any) -> None:
        session.otel_flags = "01"
        if session.parent_span_id and isinstance(session.traceparent, str):
            session.otel_flags = session.traceparent.strip()[-2:]
        self.exporter.put("start", session, None)

    def block(self, session: Any, block: bytes) -> None:
        self.exporter.put("block", session, block)

    def events(self, session: Any, events: list[dict[str, Any]]) -> None:
        self.exporter.put("events", session, events)

    def end(self, session: Any) -> None:
        self.exporter.put("end", session, None)


class OtelExporter:
    """Turns finished sessions into spans in its own thread; never blocks or fails the program.

    Args:
        config: the settings of the session that created it (the span limits are read per session).

    Attributes:
        stats: ``sessions`` and ``spans`` exported, ``unexported`` sessions (no provider),
            ``errors``, ``blocks_dropped``.
        exit_timeout: seconds the exit waits for spans to be made and flushed.
    """

    def __init__(self, config: Config) -> None:
        self.pid = os.getpid()
        self.exit_timeout = config.exit_timeout
        self.stats = {"sessions": 0, "spans": 0, "unexported": 0, "errors": 0, "blocks_dropped": 0}
        self._cond = threading.Condition(threading.Lock())
        self._jobs: collections.deque[tuple[str, Any, Any]] = collections.deque()
        self._queued_bytes = 0
        self._flush_asked = self._flush_done = 0  # flush jobs queued / finished by the thread
        self._states: dict[str, _SessionState] = {}
        self._tracers: dict[int, tuple[Any, Any]] = {}
        self._used: list[Any] = []  # providers spans went to (flushed at exit)
        self._own: Any = None
        self._warned: set[str] = set()
        try:  # here, at a session's start: made at exit, its threads could not start
            self._own = _own_provider()
        except Exception as exc:
            self._warn("own", f"handit could not set up OTLP/HTTP export to OTEL_EXPORTER_OTLP_ENDPOINT: {exc!r}")
        # started now, at a session's start: never at exit (3.12.0-3.12.2 cannot start threads then)
        self._thread = _internal.start_internal_thread(self._run, "otel")

    def put(self, kind: str, session: Any, payload: Any) -> None:
        """Queue one piece of a session for the exporter's thread. Never raises, never waits."""
        with self._cond:
            if kind == "block":
                if self._queued_bytes + len(payload) > MAX_QUEUED_BYTES:
                    self.stats["blocks_dropped"] += 1
                    kind, payload = "dropped", None
                else:
                    self._queued_bytes += len(payload)
            self._jobs.append((kind, session, payload))
            self._cond.notify()

    # -- the exporter's thread -------------------------------------------------------------------
    def _run(self) -> None:
        from .. import sessions

        choice = sessions._state.get("choice")
        if choice is not None:
            choice.module.set_slot(0)  # started inside a session: this thread belongs to none
        while True:
            with self._cond:
                while not self._jobs:
                    self._cond.wait()
                kind, session, payload = self._jobs.popleft()
                if kind == "block":
                    self._queued_bytes -= len(payload)
            try:
                self._handle(kind, session, payload)
            except Exception as exc:
                self.stats["errors"] += 1
                which = getattr(session, "id", "-")
                if kind == "end":
                    self._states.pop(which, None)
                self._warn(f"job:{type(exc).__name__}", f"handit could not export session {which} to OpenTelemetry: {exc!r} "
                           "(counted in the exporter's stats['errors']; said once)")

    def _state(self, session: Any) -> _SessionState:
        state = self._states.get(session.id)
        if state is None:
            state = self._states[session.id] = _SessionState(session, session.config)
        return state

    def _handle(self, kind: str, session: Any, payload: Any) -> None:
        if kind == "start":
            self._state(session)
        elif kind == "block":
            state = self._state(session)
            state.tree.feed(state.builder.iter_feed(payload))
        elif kind == "events":
            self._state(session).extra.extend(payload)
        elif kind == "dropped":
            self._state(session).dropped += 1
        elif kind == "end":
            state = self._states.pop(session.id, None) or _SessionState(session, session.config)
            self._export(session, state)
        elif kind == "flush":
            # here, not in the caller: the SDK's force_flush ignores its timeout and waits for
            # the exporter (opentelemetry-python#4568); the caller waits for this job, bounded
            try:
                for provider in list(self._used):
                    force_flush = getattr(provider, "force_flush", None)
                    if force_flush is not None:
                        force_flush(int(payload * 1000))
            finally:
                with self._cond:
                    self._flush_done += 1
                    self._cond.notify_all()

    def _export(self, session: Any, state: _SessionState) -> None:
        from .spans import emit_session, http_exchanges

        state.tree.feed(state.builder.finish(session.t1_ns))
        exchanges = http_exchanges(state.extra)
        room = max(0, session.config.otel_max_spans - 1)
        http_cut = max(0, len(exchanges) - room)
        exchanges = exchanges[:room]
        state.tree.max_calls = room - len(exchanges)
        state.tree.finish()
        tracer = self._tracer()
        if tracer is None:
            self.stats["unexported"] += 1
            self._warn("none", "HANDIT_OTEL is on, but the application has set no OpenTelemetry TracerProvider and "
                       "OTEL_EXPORTER_OTLP_ENDPOINT is not set: sessions are not exported (counted in stats['unexported'])")
            return
        if state.dropped:
            session.stats["otel_blocks_dropped"] = state.dropped
            self._warn("dropped", f"handit's OpenTelemetry export fell {MAX_QUEUED_BYTES} bytes behind; parts of "
                       "sessions were not exported (counted in handit.otel.blocks_dropped on their root spans)")
        self.stats["spans"] += emit_session(tracer[0], tracer[1], session, state.tree, exchanges, http_cut)
        self.stats["sessions"] += 1

    def _tracer(self) -> tuple[Any, Any] | None:
        """handit's tracer from the application's provider, else from handit's own, else None."""
        from opentelemetry import trace

        from .. import __version__
        from .spans import tracer_for

        provider = trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider):  # the application has set none
            provider = self._own
            if provider is None:
                return None
        got = self._tracers.get(id(provider))
        if got is None:
            got = self._tracers[id(provider)] = tracer_for(provider, __version__)
            self._used.append(provider)
        return got

    # -- flushing --------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Make the spans of every session ended so far and flush the providers they went to.

        Args:
            timeout: most seconds to wait, in all (None: :attr:`exit_timeout`).
        Returns:
            True if everything was made and flushed in time. Never raises, starts no thread.
        """
        wait = self.exit_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        try:
            with self._cond:
                self._flush_asked += 1
                ticket = self._flush_asked
                self._jobs.append(("flush", None, wait))
                self._cond.notify_all()
                while self._flush_done < ticket and self._thread.is_alive():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(left)
                return self._flush_done >= ticket
        except Exception:
            return False

    def flush_at_exit(self) -> None:
        """The exit path: :meth:`flush` within HANDIT_EXIT_TIMEOUT. Starts no thread, never raises."""
        if os.getpid() != self.pid:
            return
        if not self.flush(self.exit_timeout):
            self._warn("exit", f"handit: OpenTelemetry spans were not all made and exported within "
                       f"HANDIT_EXIT_TIMEOUT={self.exit_timeout:g}s; the rest is dropped at exit")

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            from ..sessions import SessionWarning

            try:
                warnings.warn(message, SessionWarning, stacklevel=2)
            except Exception:  # an error filter in a thread, or at exit
                pass


def _own_provider() -> Any:
    """An SDK TracerProvider exporting OTLP/HTTP in batches, when the application has none and
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set; never made global."""
    from opentelemetry import trace

    env = os.environ
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return None
    if not (env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attrs = {}
    if not env.get("OTEL_SERVICE_NAME") and "service.name=" not in env.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        attrs["service.name"] = os.path.basename(sys.argv[0] if sys.argv and sys.argv[0] else "") or "python"
    # not shut down by the SDK at exit (that waits for the exporter without a bound): handit's
    # exit flush gives it HANDIT_EXIT_TIMEOUT
    provider = TracerProvider(resource=Resource.create(attrs), shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


_lock = threading.Lock()


def exporter(config: Config) -> OtelExporter:
    """The process's exporter (made at the first exported session; again in a forked child)."""
    with _lock:
        current = sinks._exporters.get(_KEY)
        if current is None or current.pid != os.getpid():
            current = sinks._exporters[_KEY] = OtelExporter(config)
        return current  # type: ignore[no-any-return]
