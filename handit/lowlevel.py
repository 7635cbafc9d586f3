"""The original bindings' low-level calls, by session id: events made outside the engine."""
from __future__ import annotations

import json
import threading
import time
import warnings
from typing import Any, Mapping

from . import sessions as _session
from ._policy import Policy
from .config import get_config

_tls = threading.local()


class LowLevelWarning(UserWarning):
    """A low-level call named a session that is not active; its event was not recorded."""


def _redactor() -> Any:
    policy = _session._state.get("policy")
    return (policy or Policy(get_config())).redactor


def _previewer() -> Any:
    policy = _session._state.get("policy")
    return (policy or Policy(get_config())).previewer


def _emit(session_id: str, event: dict[str, Any]) -> None:
    s = _session.by_id(session_id)
    if s is None:
        # the original filed such events under a made-up session id; handit says so instead
        warnings.warn(f"handit: no active session {session_id!r}; {event['type']} event not recorded", LowLevelWarning, stacklevel=3)
        return
    s.add_events([event])


def _previews(raw: Any) -> dict[str, str]:
    """A JSON text or mapping of name -> value, redacted by name and by value."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {"<unparsed>": _previewer().preview(raw)}
    if not isinstance(raw, Mapping):
        return {}
    redactor, previewer = _redactor(), _previewer()
    out = {}
    for k, v in raw.items():
        name = str(k)
        if redactor.is_secret_name(name):
            out[name] = "<redacted>"
        elif isinstance(v, str):  # already a preview string: redact it, keep it
            out[name] = redactor.redact_text(v)[: get_config().max_str]
        else:
            out[name] = previewer.preview(v)
    return out


def start_session(tag: str | None = None, attrs: dict[str, str] | None = None, traceparent: str | None = None, span_id: str | None = None) -> str:
    """Start a session in the current context (the original's ``start_session``).

    Args:
        tag: the session tag.
        attrs: string attributes.
        traceparent: a W3C traceparent.
        span_id: accepted for compatibility; the span id comes from traceparent.
    Returns:
        the session id.
    """
    return _session.start(tag, attrs=attrs, traceparent=traceparent).id


def end_session(session_id: str) -> None:
    """Stop a session by id."""
    s = _session.by_id(session_id)
    if s is not None:
        _session.stop(s)


def on_call(session_id: str, func: str, module: str, file: str, line: int, t0_ns: int) -> None:
    """Record a call made outside the engine."""
    on_call_with_args(session_id, func, module, file, line, t0_ns, None)


def on_call_with_args(session_id: str, func: str, module: str, file: str, line: int, t0_ns: int, args_preview_json: Any) -> None:
    """Record a call with its argument previews (JSON text or a mapping), redacted."""
    _emit(session_id, {"type": "call", "session_id": session_id, "func": func, "module": module, "file": file, "line": int(line), "t0_ns": int(t0_ns), "args_preview": _previews(args_preview_json)})


def on_return(session_id: str, func: str, t1_ns: int, dt_ns: int) -> None:
    """Record a return made outside the engine."""
    on_return_with_preview(session_id, func, t1_ns, dt_ns, None)


def on_return_with_preview(session_id: str, func: str, t1_ns: int, dt_ns: int, locals_preview_json: Any) -> None:
    """Record a return with its value previews (JSON text or a mapping), redacted."""
    _emit(session_id, {"type": "return", "session_id": session_id, "func": func, "t1_ns": int(t1_ns), "dt_ns": int(dt_ns), "locals_preview": _previews(locals_preview_json)})


def on_exception(session_id: str, func: str, ts_ns: int, type_name: str, message: str) -> None:
    """Record an exception; the message is redacted."""
    _emit(session_id, {"type": "exception", "session_id": session_id, "func": func, "ts_ns": int(ts_ns), "type_name": type_name, "message": _redactor().redact_text(str(message))})


def _body(body: Any) -> str | None:
    if body is None:
        return None
    if isinstance(body, (bytes, bytearray)):
        body = bytes(body).decode("utf-8", "replace")
    text = str(body)
    try:
        return json.dumps(_redactor().redact_mapping(json.loads(text)), ensure_ascii=False)[: get_config().max_str * 16]
    except ValueError:
        return _redactor().redact_text(text)[: get_config().max_str * 16]


def on_http_request(session_id: str, method: str, url: str, t0_ns: int, headers: Mapping[str, str] | None = None, bytes_out: int = 0, request_body: Any = None) -> None:
    """Record an outgoing HTTP request; URL, headers and body are redacted."""
    r = _redactor()
    _emit(session_id, {"type": "http_request", "session_id": session_id, "method": method, "url": r.redact_url(url), "t0_ns": int(t0_ns), "headers": r.redact_headers(headers or {}), "bytes_out": int(bytes_out), "request_body": _body(request_body)})


def on_http_response(session_id: str, status: int, t1_ns: int, dt_ns: int, headers: Mapping[str, str] | None = None, bytes_in: int = 0, error: str | None = None, response_body: Any = None) -> None:
    """Record an HTTP response; headers and body are redacted."""
    r = _redactor()
    _emit(session_id, {"type": "http_response", "session_id": session_id, "status": int(status), "t1_ns": int(t1_ns), "dt_ns": int(dt_ns), "headers": r.redact_headers(headers or {}), "bytes_in": int(bytes_in), "error": r.redact_text(error) if error else None, "response_body": _body(response_body)})


def suppress_profiler_enter() -> None:
    """Stop recording in this thread or task until the matching :func:`suppress_profiler_exit`."""
    choice = _session._state["choice"]
    stack = _tls.__dict__.setdefault("tokens", [])
    stack.append(choice.module.set_slot(0) if choice else None)


def suppress_profiler_exit() -> None:
    """Undo one :func:`suppress_profiler_enter` (extra exits are ignored)."""
    stack = _tls.__dict__.get("tokens")
    if stack:
        token = stack.pop()
        choice = _session._state["choice"]
        if token is not None and choice is not None:
            try:
                choice.module.reset_slot(token)
            except ValueError:
                choice.module.set_slot(0)


def flush_events_to_file(path: str) -> int:
    """Write every active session's events so far to a JSONL file (appended, mode 0600).

    Returns:
        the number of events written.
    """
    from .exporters.jsonl import JsonlExporter

    drain = _session._state.get("drain")
    if drain is not None:
        drain.run_once()
    exporter = JsonlExporter(path)
    n = 0
    for s in _session.active_sessions():
        events = s.events
        exporter.write_events(events)
        n += len(events)
    exporter.close()
    return n


def now_ns() -> int:
    """Wall-clock nanoseconds, the timestamps events use."""
    return time.time_ns()
