"""handit: record what a program's own functions did — calls, arguments, return values,
exceptions and HTTP calls — into sessions, with little overhead and no secret leaked."""
from __future__ import annotations

from .api import end_tracing, entrypoint, session, start, start_tracing, stop, suppressed, trace, tracing
from .config import Config, configure, get_config, reset_config
from .errors import ConfigError, HanditError
from .preview import register_preview, unregister_preview
from .session import Session, current

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "HanditError",
    "Session",
    "configure",
    "current",
    "end_tracing",
    "entrypoint",
    "get_config",
    "register_preview",
    "reset_config",
    "session",
    "start",
    "start_tracing",
    "stop",
    "suppressed",
    "trace",
    "tracing",
    "unregister_preview",
]
