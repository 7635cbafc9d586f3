"""Drain stage: every thread's pending records -> encoded blocks routed to their sessions."""
from __future__ import annotations

import threading
import warnings
from typing import Any, Callable

from ._internal import run_deferred, start_internal_thread
from .clock import Calibration

DRAIN_INTERVAL_S = 0.01  # ~10 ms of records: they are drained while still in cache
BACKGROUND = True  # False: no background draining, records wait for the session's stop (tests, benchmarks)

# One drain at a time per process, whichever Drain runs it: blocks reach their sessions in order.
_drain_lock = threading.Lock()
_drain_owner = 0  # the thread running a drain now (0: none)
HAND_OVER_WAIT_S = 1.0  # a recording thread waits this long at most for the drain it hands work to


class Drain:
    """Pulls records from one engine and hands each session its blocks.

    Args:
        engine: the engine module (compiled or fallback).
        route: called with ``(slot, block)`` for every encoded block.
    """

    def __init__(self, engine: Any, route: Callable[[int, bytes], None]) -> None:
        self.engine = engine
        self.route = route
        self.calibration = Calibration(engine.read_ticks, engine.TICKS_ARE_NS)
        self.previewer: Any = None
        self.errors = 0
        self.on_idle: Callable[[], None] | None = None  # called by the drain thread after each drain

    @property
    def background(self) -> bool:
        """Whether the drain thread drains this one periodically."""
        return _worker.attached(self)

    def run_once(self, if_pending: bool = False) -> int:
        """Drain everything pending now; returns the number of blocks routed.

        Args:
            if_pending: do nothing when the engine holds nothing (a session that recorded
                nothing stops without a drain: ~10 us less). Checked under the drain lock,
                so blocks a drain on another thread is routing are routed before this returns.
        """
        with _drain_lock:
            if if_pending and not self.engine.pending():
                return 0
            return self._run_locked()

    def _run_locked(self) -> int:
        global _drain_owner
        _drain_owner = threading.get_ident()
        try:
            return int(self.engine.drain(self.calibration, self.previewer, self.route))
        finally:
            _drain_owner = 0

    def hand_over(self) -> None:
        """A recording thread's records wait past the engine's bound: drain them on that thread.

        Waits for a drain under way (the writer is behind: the program waits with it, as
        it would for a full pipe) at most :data:`HAND_OVER_WAIT_S`; does nothing when the
        calling thread is the one draining (a preview running user code).
        """
        if _drain_owner == threading.get_ident():
            return
        if _drain_lock.acquire(timeout=HAND_OVER_WAIT_S):
            try:
                self._run_locked()
            finally:
                _drain_lock.release()

    def start(self) -> None:
        """Drain periodically from handit's background thread (never traced); recording threads
        drain themselves when their records pile up."""
        self.engine.set_backlog_hook(self.hand_over)
        if BACKGROUND:
            _worker.attach(self)

    def stop(self) -> None:
        """No more periodic drains of this engine (the caller drains what is left)."""
        self.engine.set_backlog_hook(None)
        _worker.detach(self)


class _Worker:
    """The one background thread that drains the attached :class:`Drain` every interval.

    It outlives sessions (idle, without wake-ups, while none is open), so starting
    and stopping a session never starts or joins a thread.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._drain: Drain | None = None
        self._thread: threading.Thread | None = None

    def after_fork_in_child(self) -> None:
        """The child has no drain thread, and no lock held by one."""
        self.__init__()  # type: ignore[misc]

    def attach(self, drain: Drain) -> None:
        with self._cond:
            self._drain = drain
            if self._thread is None:
                try:
                    self._thread = start_internal_thread(self._loop, "drain")
                except RuntimeError:  # interpreter shutting down: records are drained at stop
                    pass
            self._cond.notify()

    def attached(self, drain: Drain) -> bool:
        return self._drain is drain and self._thread is not None

    def detach(self, drain: Drain) -> None:
        with self._cond:
            if self._drain is drain:
                self._drain = None

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._drain is None:
                    self._cond.wait()
                drain = self._drain
            try:
                # the compiled engine encodes full chunks here, without the GIL, as they fill
                drain.engine.encode_while_waiting(DRAIN_INTERVAL_S, drain.calibration)
                if self._drain is not drain:
                    continue
                drain.run_once()
                run_deferred()
                if drain.on_idle is not None:
                    drain.on_idle()
            except Exception as exc:  # never takes the program down; said once, counted
                drain.errors += 1
                if drain.errors == 1:
                    warnings.warn(f"handit: draining records failed ({exc!r}); will retry", RuntimeWarning, stacklevel=1)


def after_fork_in_child() -> None:
    """A forked child: no drain thread, no lock held by one (step 2 of :data:`handit.lifecycle.FORK_STEPS`)."""
    global _drain_lock
    _drain_lock = threading.Lock()
    _worker.after_fork_in_child()


_worker = _Worker()
