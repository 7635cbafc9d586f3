"""Instrumentation stage, shared part: one HTTP exchange -> redacted ``http_request`` / ``http_response`` events.

Every client module calls :func:`begin` before sending and :meth:`HttpCall.finish` once the
answer is complete (read to its end, closed, or failed). Bodies pass through a
:class:`BodyTap` that keeps at most ``HANDIT_MAX_BODY`` bytes of what the program itself
read; handit never reads a stream on the program's behalf.
"""
from __future__ import annotations

import contextvars
import itertools
import json
import sys
import threading
import time
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

from .. import sessions as _sessions
from ..config import get_config
from ..redact import REDACTED
from . import _llm

# Set while one client records a request, so a client it wraps (urllib3 under requests)
# does not record the same request again.
_recording: contextvars.ContextVar[bool] = contextvars.ContextVar("handit_http_recording", default=False)
_ids = itertools.count(1)

_TEXT_TYPES = ("text/", "json", "xml", "x-www-form-urlencoded", "event-stream", "javascript", "graphql", "yaml")


def _otel_suppressed() -> bool:
    """True when OpenTelemetry's suppression key is set in the current context (only if it is loaded)."""
    ctx = sys.modules.get("opentelemetry.context")
    if ctx is None:
        return False
    try:
        return bool(ctx.get_value(ctx._SUPPRESS_INSTRUMENTATION_KEY))  # type: ignore[attr-defined]
    except Exception:
        return False


def now_ns() -> int:
    """Epoch nanoseconds on the engine's clock, as its records are converted (:mod:`handit.clock`).

    HTTP events and calls are then ordered on one clock: the system clock, which NTP may
    slew by up to 500 ppm from the engine's TSC, would put a request's start milliseconds
    away from the calls around it after minutes of tracing, and link it to the wrong call.
    """
    drain = _sessions._state.get("drain")
    if drain is not None:
        cal = drain.calibration
        try:
            return int(cal.to_epoch_ns(cal.read_ticks()))
        except Exception:
            pass
    return time.time_ns()


def _active_session() -> Any:
    """The session to record into, or None (no session, already recording, suppressed, handit's own thread)."""
    if _recording.get():
        return None
    session = _sessions.current()
    if session is None or session.t1_ns is not None:
        return None
    if threading.current_thread().name.startswith("handit-") or _otel_suppressed():
        return None
    return session


def _redactor() -> Any:
    from ..lowlevel import _redactor as lowlevel_redactor

    return lowlevel_redactor()


def redact_url(url: str) -> str:
    """The URL with its userinfo replaced and secret query values redacted."""
    try:
        parts = urlsplit(url) if "@" in url else None  # no '@': no userinfo (urlsplit is ~2 us)
        if parts is not None and (parts.username is not None or parts.password is not None):
            host = parts.netloc.rpartition("@")[2]
            url = urlunsplit((parts.scheme, f"{REDACTED}@{host}", parts.path, parts.query, parts.fragment))
    except ValueError:
        pass
    return _redactor().redact_url(url)


def redact_headers(headers: Any) -> dict[str, str]:
    """Headers with the sensitive ones (built-in and ``HANDIT_REDACT_HEADERS``) redacted."""
    if headers is None:
        return {}
    items: Iterable[Any]
    if isinstance(headers, Mapping):
        items = headers.items()
    elif hasattr(headers, "items"):
        items = headers.items()
    else:
        items = headers
    out = _redactor().redact_headers(list(items))
    extra = _extra_headers(get_config())
    if extra:
        for name in out:
            if name.lower() in extra:
                out[name] = REDACTED
    return out


_extra_for: list[tuple[Any, frozenset[str]]] = []  # (config, its HANDIT_REDACT_HEADERS lower-cased)


def _extra_headers(config: Any) -> frozenset[str]:
    if not _extra_for or _extra_for[0][0] is not config:
        _extra_for[:] = [(config, frozenset(name.lower() for name in config.redact_headers))]
    return _extra_for[0][1]


def header(headers: Mapping[str, str], name: str) -> str:
    """A header's value by case-insensitive name ('' if absent)."""
    low = name.lower()
    for key, value in headers.items():
        if key.lower() == low:
            return value
    return ""


def _is_text(content_type: str, data: bytes) -> bool:
    ct = content_type.lower()
    if ct:
        return any(t in ct for t in _TEXT_TYPES)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(data) - 3  # cut inside a multi-byte character
    return True


def render_body(data: bytes | None, size: int, content_type: str) -> str | None:
    """A recorded body: redacted text or JSON (cut at ``HANDIT_MAX_BODY``), or a binary marker.

    Args:
        data: the first bytes of the body (up to the cap), or None when none was sent or read.
        size: the body's full size as far as it was read.
        content_type: its Content-Type header.
    Returns:
        the text to store, or None.
    """
    if data is None or (not data and not size):
        return None
    cap = get_config().max_body
    if not _is_text(content_type, data):
        return f"<binary {size} bytes{', ' + content_type if content_type else ''}>"
    if cap == 0:
        return f"<{size} bytes not recorded (HANDIT_MAX_BODY=0)>"
    text = data[:cap].decode("utf-8", "replace")
    redactor = _redactor()
    if "x-www-form-urlencoded" in content_type.lower():
        text = redactor.redact_url("?" + text)[1:]
    else:
        try:
            text = json.dumps(redactor.redact_mapping(json.loads(text)), ensure_ascii=False)
        except ValueError:
            text = redactor.redact_text(text)
    if size > cap:
        text += f"... <{size - cap} more bytes>"
    return text


class BodyTap:
    """What the program read of a body: the first ``HANDIT_MAX_BODY`` bytes, the total size,
    and (for LLM calls) a parser fed every chunk."""

    __slots__ = ("head", "size", "cap", "llm", "first_ns", "last_ns")

    def __init__(self, llm: _llm.LlmParser | None = None) -> None:
        self.head = bytearray()
        self.size = 0
        self.cap = get_config().max_body
        self.llm = llm
        self.first_ns = 0
        self.last_ns = 0

    def feed(self, chunk: Any) -> None:
        """Account for one chunk the program read (bytes or str); never raises."""
        try:
            if not chunk:
                return
            if isinstance(chunk, str):
                chunk = chunk.encode("utf-8", "replace")
            self.last_ns = now_ns()
            if not self.first_ns:
                self.first_ns = self.last_ns
            self.size += len(chunk)
            room = self.cap - len(self.head)
            if room > 0:
                self.head += chunk[:room]
            if self.llm is not None:
                self.llm.feed(chunk)
        except Exception:
            pass


class HttpCall:
    """One recorded exchange: its request event is out; :meth:`finish` writes the response."""

    __slots__ = ("session", "id", "t0", "method", "url", "tap", "done", "llm", "token", "answers", "traceparent", "answered", "request")

    def __init__(self, session: Any, method: str, url: str, llm: _llm.LlmParser | None) -> None:
        self.session = session
        self.id = next(_ids)
        self.t0 = now_ns()
        self.method = method
        self.url = url
        self.llm = llm
        self.tap = BodyTap(llm)
        self.done = False
        self.token: Any = None
        self.answers: tuple[type[BaseException], ...] = ()  # exceptions that carry an answer (urllib's HTTPError)
        self.traceparent: str | None = None  # sent with the request when HANDIT_OTEL exports the session
        self.answered = 0  # when the client handed the answer (its headers) to the program
        self.request: dict[str, Any] = {}  # its http_request event (given its parent_id once linked)

    def enter(self) -> None:
        """Mark this context as recording (inner clients skip) until :meth:`leave`."""
        self.token = _recording.set(True)

    def leave(self) -> None:
        """Undo :meth:`enter`."""
        if self.token is not None:
            try:
                _recording.reset(self.token)
            except ValueError:  # left from another context (a generator finished elsewhere)
                _recording.set(False)
            self.token = None

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the client's own function as this exchange: inner clients skip it, and an
        exception (not in :attr:`answers`) finishes the exchange with it before propagating."""
        self.enter()
        try:
            answer = fn(*args, **kwargs)
            self.answered = now_ns()
            return answer
        except BaseException as exc:
            self._failed(exc)
            raise
        finally:
            self.leave()

    async def arun(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """:meth:`run` for a coroutine function."""
        self.enter()
        try:
            answer = await fn(*args, **kwargs)
            self.answered = now_ns()
            return answer
        except BaseException as exc:
            self._failed(exc)
            raise
        finally:
            self.leave()

    def _failed(self, exc: BaseException) -> None:
        # an exception that is not an answer (an HTTPError is one) ends the exchange with it
        if isinstance(exc, self.answers):
            self.answered = now_ns()
        else:
            self.finish(error=exc)

    def finish(self, status: int = 0, headers: Any = None, error: BaseException | str | None = None,
               body: bytes | None = None, redirects: int = 0) -> None:
        """Write the ``http_response`` event (once; later calls do nothing); never raises.

        The exchange ends now when it failed or ``body`` is given; else (a response the
        program read itself, then closed or dropped) when the program had its last byte, or
        the answer if it read none: a body left unread until the response is collected does
        not stretch the request's time.

        Args:
            status: the HTTP status, 0 when there was none.
            headers: the response headers.
            error: the exception that ended the exchange, if any.
            body: the whole body when the client read it already; else what the tap saw.
            redirects: redirects followed to reach this answer.
        """
        if self.done:
            return
        self.done = True
        try:
            if error is None and body is None and self.answered:
                t1 = max(self.answered, self.tap.last_ns)
            else:
                t1 = now_ns()
            hdrs = redact_headers(headers)
            ctype = header(hdrs, "content-type")
            tap = self.tap
            if body is not None:
                tap.feed(body)
            if isinstance(error, BaseException):
                error = f"{type(error).__name__}: {error}"
            event: dict[str, Any] = {
                "type": "http_response", "session_id": self.session.id, "request_id": self.id,
                "status": int(status or 0), "t1_ns": t1, "dt_ns": t1 - self.t0, "headers": hdrs,
                "bytes_in": tap.size, "error": _redactor().redact_text(str(error)) if error else None,
                "response_body": render_body(bytes(tap.head), tap.size, ctype) if tap.size else None,
                "thread": threading.get_ident(),
            }
            if "parent_id" in self.request:  # linked already (an answer finished after its session)
                event["parent_id"] = self.request["parent_id"]
            if redirects:
                event["redirects"] = redirects
            if self.llm is not None:
                fields = self.llm.result(tap.first_ns - self.t0 if tap.first_ns else 0, ctype)
                if fields:
                    event["llm"] = fields
            self.session.add_events([event])
        except Exception:
            pass


def begin(method: str, url: str, headers: Any = None, body: Any = None, *, json_body: Any = None) -> HttpCall | None:
    """Start recording a request if a session wants it, and write its ``http_request`` event.

    Args:
        method: the HTTP method.
        url: the full URL.
        headers: the request headers (mapping or pairs).
        body: the request body if it is bytes or str (streams are not read: size unknown).
        json_body: a JSON-serialisable body not yet encoded (aiohttp's ``json=``).
    Returns:
        the :class:`HttpCall` to finish, or None when nothing is recorded. Never raises.
    """
    try:
        session = _active_session()
        if session is None:
            return None
        config = get_config()
        if config.endpoint and url.startswith(config.endpoint):
            return None  # handit's own export traffic
        method = str(method or "GET").upper()
        url = str(url)
        if json_body is not None:
            body = json.dumps(json_body).encode()
        if isinstance(body, str):
            body = body.encode("utf-8", "replace")
        data = bytes(body) if isinstance(body, (bytes, bytearray, memoryview)) else None
        llm = _llm.recognise(method, url, data)
        call = HttpCall(session, method, url, llm)
        hdrs = redact_headers(headers)
        event = {
            "type": "http_request", "session_id": session.id, "request_id": call.id, "method": method,
            "url": redact_url(url), "t0_ns": call.t0, "headers": hdrs,
            "bytes_out": len(data) if data is not None else 0,
            "request_body": render_body(data[: max(config.max_body, 1)], len(data), header(hdrs, "content-type")) if data else None,
            "thread": threading.get_ident(),
        }
        if session.otel_flags is not None:  # HANDIT_OTEL: the request's CLIENT span id, announced downstream
            from ..otel import client_traceparent

            call.traceparent, event["span_id"] = client_traceparent(session) or (None, None)
        call.request = event
        session.add_events([event])
        return call
    except Exception:
        return None


def add_traceparent(call: HttpCall, headers: Any, in_place: bool = False) -> Any:
    """``headers`` with the call's ``traceparent`` (HANDIT_OTEL), unless they carry one already.

    Args:
        call: the recorded exchange.
        headers: a mapping, pairs, or None.
        in_place: change a mutable mapping itself (one made for this request only); else a copy.
    Returns:
        the headers to send.
    """
    value = call.traceparent
    if value is None:
        return headers
    if headers is None:
        return {"traceparent": value}
    items = list(headers.items() if hasattr(headers, "items") else headers)
    if any(str(k).lower() == "traceparent" for k, _ in items):
        return headers
    if hasattr(headers, "__setitem__") and hasattr(headers, "items"):
        if not in_place:
            headers = headers.copy()
        headers["traceparent"] = value
        return headers
    return [*items, ("traceparent", value)]


def call_after(obj: Any, name: str, after: Callable[[], None]) -> None:
    """Replace the method ``name`` of the instance ``obj`` by one that calls it, then ``after``."""
    original = getattr(obj, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        finally:
            after()

    setattr(obj, name, wrapper)
