"""Instrumentation stage, ``urllib.request``: ``OpenerDirector.open`` -> one recorded exchange per
call (redirects followed inside it count once; handit's own exporter traffic is skipped)."""
from __future__ import annotations

import copy
import functools
import weakref
from typing import Any

from . import _record
from ._base import BaseInstrumentor


def _watch(call: _record.HttpCall, response: Any) -> None:
    """Record what the program reads of the response; finish at its end or close."""
    status, headers = response.status or getattr(response, "code", 0), response.headers.items()
    read, readline = response.read, response.readline

    def recorded_read(amt: Any = None, *args: Any) -> Any:
        data = read(amt, *args) if amt is not None or args else read()
        call.tap.feed(data)
        if amt is None or amt < 0 or not data:
            call.finish(status, headers)
        return data

    def recorded_readline(*args: Any) -> Any:
        line = readline(*args)
        call.tap.feed(line)
        if not line:
            call.finish(status, headers)
        return line

    response.read = recorded_read
    response.readline = recorded_readline
    _record.call_after(response, "close", lambda: call.finish(status, headers))
    weakref.finalize(response, call.finish, status, headers).atexit = False


class Instrumentor(BaseInstrumentor):
    """Patches ``urllib.request.OpenerDirector.open``."""

    library = "urllib.request"

    def _patch(self) -> list[tuple[Any, str, Any, Any]]:
        import urllib.error
        import urllib.request

        original = urllib.request.OpenerDirector.open

        @functools.wraps(original)
        def open(self: Any, fullurl: Any, data: Any = None, *args: Any, **kwargs: Any) -> Any:
            try:
                if isinstance(fullurl, str):
                    request = urllib.request.Request(fullurl, data=data)
                else:
                    request = fullurl
                    if data is not None:
                        request.data = data
                headers = request.header_items() + list(request.unredirected_hdrs.items())
                call = _record.begin(request.get_method(), request.full_url, headers, request.data)
            except Exception:
                call = None
            if call is None:
                return original(self, fullurl, data, *args, **kwargs)
            call.answers = (urllib.error.HTTPError,)
            if call.traceparent and not request.has_header("Traceparent"):
                fullurl, data = copy.copy(request), None  # the program's Request object stays as it was
                fullurl.unredirected_hdrs = {**request.unredirected_hdrs, "Traceparent": call.traceparent}
            try:
                response = call.run(original, self, fullurl, data, *args, **kwargs)
            except urllib.error.HTTPError as exc:
                try:  # an HTTPError is also the response: its body is read through it
                    _watch(call, exc)
                except Exception:
                    call.finish(exc.code, None)
                raise
            try:
                _watch(call, response)
            except Exception:
                call.finish(getattr(response, "status", 0), None)
            return response

        return [(urllib.request.OpenerDirector, "open", original, open)]
