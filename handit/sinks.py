"""Sinks: what a session's blocks and events are written to while it runs (files, exporters)."""
from __future__ import annotations

import os
from typing import Any

from .reader import TraceBuilder

_writers: dict[str, Any] = {}  # one writer per output file in this process
_written_codes: dict[str, dict[Any, int]] = {}  # per writer: code-table entries already written
_exporters: dict[str, Any] = {}  # one HTTP exporter per endpoint


def _builder(builders: dict[str, TraceBuilder], session: Any) -> TraceBuilder:
    """The session's decoder in a sink (made at its first block or extra event)."""
    builder = builders.get(session.id)
    if builder is None:
        builder = builders[session.id] = TraceBuilder(session.id, session._codes.code_info)
    return builder


def _extra(builders: dict[str, TraceBuilder], session: Any, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What to write now of ``events``: all of them once the session has ended (an answer
    finished after it, its parent already on it), else what the builder does not hold back."""
    if session.t1_ns is not None and session.id not in builders:
        return events
    return _builder(builders, session).extra(events)


class FileSink:
    """Writes a session's blocks to a compact trace file, or its events to JSONL."""

    def __init__(self, path: str, fmt: str, flush_interval: float | None = 1.0) -> None:
        self.path = path
        self.fmt = fmt
        self.builders: dict[str, Any] = {}
        key = f"{fmt}:{os.path.abspath(path)}"
        writer = _writers.get(key)
        if writer is None:
            if fmt == "jsonl":
                from .exporters.jsonl import JsonlExporter

                writer = JsonlExporter(path, flush_interval=flush_interval)
            else:
                from .tracefile import TraceFileWriter

                writer = TraceFileWriter(path, flush_interval=flush_interval)
            _writers[key] = writer
        self.writer = writer
        self.writer_codes = _written_codes.setdefault(key, {})

    def start(self, session: Session) -> None:
        if self.fmt == "jsonl":
            self.writer.write_events([session.start_event()])
        else:
            self.writer.session_start(session.start_event())

    def block(self, session: Session, block: bytes) -> None:
        if self.fmt == "jsonl":
            self.writer.write_events(_builder(self.builders, session).feed(block))
        else:
            codes = session._codes
            self.writer.codes(codes.codes_since(self.writer_codes.get(codes, 0)))
            self.writer_codes[codes] = codes.code_count()
            self.writer.block(session.id, block)

    def events(self, session: Session, events: list[dict[str, Any]]) -> None:
        if self.fmt == "jsonl":  # HTTP events wait in the builder for the call that made them
            self.writer.write_events(_extra(self.builders, session, events))
        else:
            self.writer.events(events)

    def end(self, session: Session) -> None:
        if self.fmt == "jsonl":
            builder = self.builders.pop(session.id, None)
            if builder is not None:
                self.writer.write_events(builder.finish(session.t1_ns))
            self.writer.write_events([session.end_event()])
        else:
            self.writer.fold(session.id, session.fold())
            self.writer.session_end(session.end_event())
        self.writer.flush()


class EventSink:
    """Feeds a session's events (decoded from its blocks) to an exporter."""

    def __init__(self, exporter: Any) -> None:
        self.exporter = exporter
        self.builders: dict[str, TraceBuilder] = {}

    def start(self, session: Any) -> None:
        self.exporter.write_events([session.start_event()])

    def block(self, session: Any, block: bytes) -> None:
        self.exporter.write_events(_builder(self.builders, session).feed(block))

    def events(self, session: Any, events: list[dict[str, Any]]) -> None:
        self.exporter.write_events(_extra(self.builders, session, events))

    def end(self, session: Any) -> None:
        builder = self.builders.pop(session.id, None)
        if builder is not None:
            self.exporter.write_events(builder.finish(session.t1_ns))
        self.exporter.write_events([session.end_event()])


def webhook_exporter(config: Any) -> Any:
    """The process's exporter for HANDIT_ENDPOINT (created once per endpoint)."""
    exporter = _exporters.get(config.endpoint)
    if exporter is None:
        from .exporters.webhook import WebhookExporter

        exporter = WebhookExporter(
            config.endpoint,
            config.api_key,
            spool_dir=config.spool_dir,
            timeout=config.http_timeout,
            max_spool_bytes=config.max_spool_bytes,
            max_queue_bytes=config.max_buffer_bytes,
            allow_insecure_http=config.allow_insecure_http,
            flush_interval=config.flush_every_ms / 1000,
            exit_timeout=config.exit_timeout,
        )
        _exporters[config.endpoint] = exporter
    return exporter


def flush_all(final: bool = True) -> None:
    """Flush every file writer, then the exporters, waiting at most HANDIT_EXIT_TIMEOUT for them. Never raises.

    Args:
        final: the process is ending (exit, a signal's default action, exec): the
            exporters' exit flush, which also sends the spool and then stops their
            threads (see WebhookExporter.flush_at_exit). False (the program's own signal
            handler runs next and the program may go on): send what is queued, within
            HANDIT_EXIT_TIMEOUT, and keep running.
    """
    for writer in list(_writers.values()):
        try:
            writer.flush()
        except Exception:
            pass
    for exporter in list(_exporters.values()):
        try:
            if final:
                exporter.flush_at_exit()
            else:
                exporter.flush(exporter.exit_timeout)
        except Exception:
            pass


def forget_all() -> None:
    """Drop every writer and exporter without writing (a forked child)."""
    _writers.clear()
    _written_codes.clear()
    _exporters.clear()
