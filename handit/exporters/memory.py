"""Memory exporter: events -> a list in this process (for tests and tools)."""
from __future__ import annotations

import threading
from typing import Any

from .base import Exporter

__all__ = ["MemoryExporter"]


class MemoryExporter(Exporter):
    """Keeps every event it is given, in order, in :attr:`events`.

    Thread-safe. ``flush`` and ``close`` do nothing to the kept events; after
    ``close`` new events are counted as dropped.
    """

    name = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []
        self.closed = False
        self._lock = threading.Lock()
        self.stats = {"events": 0, "dropped": 0, "flushes": 0}

    def __repr__(self) -> str:
        return f"<MemoryExporter events={len(self.events)}>"

    def write_events(self, events: list[dict[str, Any]]) -> None:
        """Keep a batch of events.

        Args:
            events: event dicts in the JSONL schema.
        """
        with self._lock:
            if self.closed:
                self.stats["dropped"] += len(events)
                return
            self.events.extend(events)
            self.stats["events"] += len(events)

    def flush(self, timeout: float | None = None) -> None:
        """Count the flush (tests check that sessions flush)."""
        self.stats["flushes"] += 1

    def close(self) -> None:
        """Accept nothing afterwards."""
        self.flush()
        self.closed = True

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        """The kept events whose ``type`` is ``kind``."""
        with self._lock:
            return [e for e in self.events if e.get("type") == kind]

    def clear(self) -> None:
        """Forget the kept events."""
        with self._lock:
            self.events.clear()
