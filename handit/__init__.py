"""handit: record what a program's own functions did — calls, arguments, return values,
exceptions and HTTP calls — into sessions, with little overhead and no secret leaked."""
from __future__ import annotations

from .api import end_tracing, entrypoint, session, start, start_tracing, stop, suppressed, trace, tracing
from .config import Config, configure, get_config, reset_config
from .errors import ConfigError, HanditError
from .lowlevel import (
    end_session,
    flush_events_to_file,
    on_call,
    on_call_with_args,
    on_exception,
    on_http_request,
    on_http_response,
    on_return,
    on_return_with_preview,
    start_session,
    suppress_profiler_enter,
    suppress_profiler_exit,
)
from .preview import register_preview, unregister_preview
from .sessions import Session, current

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "HanditError",
    "Session",
    "configure",
    "current",
    "end_session",
    "end_tracing",
    "entrypoint",
    "flush_events_to_file",
    "get_config",
    "on_call",
    "on_call_with_args",
    "on_exception",
    "on_http_request",
    "on_http_response",
    "on_return",
    "on_return_with_preview",
    "register_preview",
    "reset_config",
    "session",
    "start",
    "start_session",
    "start_tracing",
    "stop",
    "suppress_profiler_enter",
    "suppress_profiler_exit",
    "suppressed",
    "trace",
    "tracing",
    "unregister_preview",
]
