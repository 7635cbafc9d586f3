"""Inbound stage, shared part: start and stop a request's session without ever failing the request."""
from __future__ import annotations

import warnings
from typing import Any, Callable

from .. import sessions as _sessions


def start(tag: str, attrs: dict[str, str], traceparent: str | None) -> Any:
    """Start the request's session, or return None if handit cannot (the request runs untraced)."""
    try:
        session = _sessions.start(tag, attrs=attrs, traceparent=traceparent)
        session.span_kind = "server"
        return session
    except Exception as exc:
        _sessions._warn_once(f"handit could not start a session for a request: {exc!r} (said once)", key=f"mw:{exc!r}")
        return None


def stop(session: Any, on_end: Callable[[Any], None] | None, status: int | None, background: bool) -> None:
    """Stop the request's session (``status``: the response's); ``on_end`` is called with it once
    it is finished: by the background drain when ``background`` (``sessions.stop(wait=False)``),
    else before this returns. Nothing raised reaches the server."""
    if session is None:
        return
    try:
        session.http_status = status
        _sessions.stop(session, wait=not background, on_finished=on_end)
    except Exception as exc:
        warnings.warn(f"handit: ending a request's session failed: {exc!r}", _sessions.SessionWarning, stacklevel=2)
