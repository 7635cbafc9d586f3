"""Drain stage: every thread's pending records -> encoded blocks routed to their sessions."""
from __future__ import annotations

import threading
import warnings
from typing import Any, Callable

from ._internal import start_internal_thread
from .clock import Calibration

DRAIN_INTERVAL_S = 0.01  # ~10 ms of records: they are drained while still in cache


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
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def run_once(self) -> int:
        """Drain everything pending now; returns the number of blocks routed."""
        with self._lock:
            blocks = self.engine.drain(self.calibration, self.previewer)
            for slot, block in blocks:
                self.route(slot, block)
            return len(blocks)

    def start(self) -> None:
        """Drain periodically from a background thread that is never traced."""
        if self._thread is None:
            self._stop.clear()
            self._thread = start_internal_thread(self._loop, "drain")

    def stop(self) -> None:
        """Stop the background thread (without joining during interpreter shutdown)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)

    def _loop(self) -> None:
        while not self._stop.wait(DRAIN_INTERVAL_S):
            try:
                self.run_once()
            except Exception as exc:  # never takes the program down; said once, counted
                self.errors += 1
                if self.errors == 1:
                    warnings.warn(f"handit: draining records failed ({exc!r}); will retry", RuntimeWarning, stacklevel=1)
