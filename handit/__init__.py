"""handit: record what a program's own functions did — calls, arguments, return values,
exceptions and HTTP calls — into sessions, with little overhead and no secret leaked.

Importing handit only defines names: each public name's module is imported on first use
(PEP 562), and nothing is installed (no exit, fork or signal hook) until the first session
starts (see :mod:`handit.lifecycle`).

PYTEST_DONT_REWRITE: handit ships a pytest plugin, so pytest would rewrite its assertions
and warn that handit was imported first (it is, under ``handit run -m pytest``).
"""
TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing alone costs ~15 ms

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
    "instrument",
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
    "uninstrument",
    "unregister_preview",
]

# public name -> the submodule that defines it
_HOMES = {
    **dict.fromkeys(("end_tracing", "entrypoint", "session", "start", "start_tracing", "stop", "suppressed",
                     "trace", "tracing"), "api"),
    **dict.fromkeys(("Config", "configure", "get_config", "reset_config"), "config"),
    **dict.fromkeys(("ConfigError", "HanditError"), "errors"),
    **dict.fromkeys(("instrument", "uninstrument"), "instrument"),
    **dict.fromkeys(("end_session", "flush_events_to_file", "on_call", "on_call_with_args", "on_exception",
                     "on_http_request", "on_http_response", "on_return", "on_return_with_preview",
                     "start_session", "suppress_profiler_enter", "suppress_profiler_exit"), "lowlevel"),
    **dict.fromkeys(("register_preview", "unregister_preview"), "preview"),
    **dict.fromkeys(("Session", "current"), "sessions"),
}


def __getattr__(name: str) -> "Any":
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'handit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # the next lookup is a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports on use
    from typing import Any

    from .api import end_tracing, entrypoint, session, start, start_tracing, stop, suppressed, trace, tracing
    from .config import Config, configure, get_config, reset_config
    from .errors import ConfigError, HanditError
    from .instrument import instrument, uninstrument
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
