"""Exporter interface: one small base class that every sink implements."""
from __future__ import annotations

from typing import Any


class Exporter:
    """A sink for events in the JSONL schema (dicts, already redacted).

    Subclasses implement :meth:`write_events`; :meth:`flush` and :meth:`close`
    default to no-ops. An exporter never raises into the traced program: errors
    are counted in :attr:`stats` and reported through :mod:`warnings` once.
    """

    name = "exporter"

    def __init__(self) -> None:
        self.stats: dict[str, int] = {}

    def write_events(self, events: list[dict[str, Any]]) -> None:
        """Accept a batch of events.

        Args:
            events: event dicts in the JSONL schema, ``type`` first.
        """
        raise NotImplementedError

    def flush(self, timeout: float | None = None) -> None:
        """Push out what is buffered, waiting at most ``timeout`` seconds."""

    def close(self) -> None:
        """Flush and release resources; the exporter accepts nothing afterwards."""
        self.flush()
