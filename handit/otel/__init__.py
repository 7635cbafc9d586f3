"""OpenTelemetry stage: finished sessions -> traces (HANDIT_OTEL; ``pip install 'handit[otel]'``).

A session becomes a root span (a child of its incoming ``traceparent``, of the session it
runs in, or of the OpenTelemetry span active when it starts), its calls child spans, its
HTTP calls CLIENT spans (LLM calls with ``gen_ai.*`` and OpenInference attributes). Spans
are made after the fact in handit's own thread (:mod:`.export`), through the application's
TracerProvider. Nothing here imports OpenTelemetry until a session is exported.
"""
from __future__ import annotations

import sys
from typing import Any

from ..config import Config

__all__ = ["active_traceparent", "client_traceparent", "open_sink"]

_missing_warned = False


def open_sink(session: Any, config: Config) -> Any:
    """The session's OpenTelemetry sink, or None (warned once) when OpenTelemetry is not installed.

    Args:
        session: the session starting.
        config: its settings (HANDIT_OTEL is on).
    """
    global _missing_warned
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        if not _missing_warned:
            _missing_warned = True
            import warnings

            from ..sessions import SessionWarning

            warnings.warn("HANDIT_OTEL is on but OpenTelemetry is not installed (pip install 'handit[otel]'); "
                          "sessions are not exported", SessionWarning, stacklevel=4)
        return None
    try:
        from .export import OtelSink, exporter

        return OtelSink(exporter(config))
    except Exception as exc:
        from ..sessions import _warn_once

        _warn_once(f"handit could not start OpenTelemetry export: {exc!r}; sessions are not exported")
        return None


def active_traceparent() -> str | None:
    """The W3C traceparent of the OpenTelemetry span active in this context, or None
    (OpenTelemetry not imported by the program, or no valid span active)."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    try:
        ctx = trace.get_current_span().get_span_context()
        if not ctx.is_valid:
            return None
        return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags) & 0xFF:02x}"
    except Exception:
        return None


def client_traceparent(session: Any) -> tuple[str, str] | None:
    """A ``traceparent`` for an HTTP request made in ``session`` and the span id it announces
    (the request's CLIENT span takes it), or None when the session is not exported.

    Args:
        session: the session the request is recorded in.
    """
    flags = getattr(session, "otel_flags", None)
    if flags is None:
        return None
    from ..sessions import _random_hex

    span_id = _random_hex(64)
    return f"00-{session.trace_id}-{span_id}-{flags}", span_id
