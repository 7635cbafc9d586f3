"""Instrumentation stage, ``requests``: ``Session.send`` -> one recorded exchange per program call
(redirects followed inside it count once; the urllib3 call beneath is not recorded again)."""
from __future__ import annotations

import functools
import weakref
from typing import Any, Iterator

from . import _record
from ._base import BaseInstrumentor


def _watch_stream(call: _record.HttpCall, response: Any) -> None:
    """Record what the program reads of a ``stream=True`` response, then finish at its end or close."""
    iter_content = response.iter_content
    status, headers, redirects = response.status_code, response.headers, len(response.history)

    def recorded_iter_content(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for chunk in iter_content(*args, **kwargs):
            call.tap.feed(chunk)
            yield chunk
        call.finish(status, headers, redirects=redirects)

    response.iter_content = recorded_iter_content
    _record.call_after(response, "close", lambda: call.finish(status, headers, redirects=redirects))
    # a response dropped unread still gets its answer recorded (status, headers, no body)
    weakref.finalize(response, call.finish, status, headers, None, None, redirects).atexit = False


class Instrumentor(BaseInstrumentor):
    """Patches ``requests.Session.send``."""

    library = "requests"

    def _patch(self) -> list[tuple[Any, str, Any, Any]]:
        import requests.sessions

        original = requests.sessions.Session.send

        @functools.wraps(original)
        def send(self: Any, request: Any, **kwargs: Any) -> Any:
            call = _record.begin(request.method, request.url, request.headers, request.body)
            if call is None:
                return original(self, request, **kwargs)
            _record.add_traceparent(call, request.headers, in_place=True)
            response = call.run(original, self, request, **kwargs)
            try:
                if kwargs.get("stream"):
                    _watch_stream(call, response)
                else:
                    call.finish(response.status_code, response.headers, body=response.content, redirects=len(response.history))
            except Exception:
                call.finish(response.status_code, response.headers)
            return response

        return [(requests.sessions.Session, "send", original, send)]
