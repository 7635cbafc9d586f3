"""Instrumentation stage, ``httpx``: ``Client.send`` and ``AsyncClient.send`` -> one recorded
exchange per program call (httpcore beneath is not patched; redirects count once)."""
from __future__ import annotations

import functools
import weakref
from typing import Any, AsyncIterator, Iterator

from . import _record
from ._base import BaseInstrumentor


def _request_body(request: Any) -> Any:
    try:
        return request.content
    except Exception:  # a streaming body not read yet: never read it for the program
        return None


def _watch_stream(call: _record.HttpCall, response: Any) -> None:
    """Record what the program reads of a streamed response; finish at its end or close."""
    status, headers, redirects = response.status_code, response.headers, len(response.history)
    state = {"reading": False}
    iter_bytes, aiter_bytes, close, aclose = response.iter_bytes, response.aiter_bytes, response.close, response.aclose

    def recorded_iter_bytes(*args: Any, **kwargs: Any) -> Iterator[bytes]:
        state["reading"] = True  # httpx closes the response inside the last read: finish after it
        try:
            for chunk in iter_bytes(*args, **kwargs):
                call.tap.feed(chunk)
                yield chunk
        finally:
            state["reading"] = False
        call.finish(status, headers, redirects=redirects)

    async def recorded_aiter_bytes(*args: Any, **kwargs: Any) -> AsyncIterator[bytes]:
        state["reading"] = True  # httpx closes the response inside the last read: finish after it
        try:
            async for chunk in aiter_bytes(*args, **kwargs):
                call.tap.feed(chunk)
                yield chunk
        finally:
            state["reading"] = False
        call.finish(status, headers, redirects=redirects)

    def recorded_close() -> None:
        close()
        if not state["reading"]:
            call.finish(status, headers, redirects=redirects)

    async def recorded_aclose() -> None:
        await aclose()
        if not state["reading"]:
            call.finish(status, headers, redirects=redirects)

    response.iter_bytes = recorded_iter_bytes
    response.aiter_bytes = recorded_aiter_bytes
    response.close = recorded_close
    response.aclose = recorded_aclose
    weakref.finalize(response, call.finish, status, headers, None, None, redirects).atexit = False


def _answered(call: _record.HttpCall, response: Any, stream: bool) -> None:
    try:
        if stream:
            _watch_stream(call, response)
        else:
            call.finish(response.status_code, response.headers, body=response.content, redirects=len(response.history))
    except Exception:
        call.finish(response.status_code, response.headers)


class Instrumentor(BaseInstrumentor):
    """Patches ``httpx.Client.send`` and ``httpx.AsyncClient.send``."""

    library = "httpx"

    def _patch(self) -> list[tuple[Any, str, Any, Any]]:
        import httpx

        sync_send, async_send = httpx.Client.send, httpx.AsyncClient.send

        @functools.wraps(sync_send)
        def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            call = _record.begin(request.method, str(request.url), request.headers.multi_items(), _request_body(request))
            if call is None:
                return sync_send(self, request, *args, **kwargs)
            _record.add_traceparent(call, request.headers, in_place=True)
            response = call.run(sync_send, self, request, *args, **kwargs)
            _answered(call, response, bool(kwargs.get("stream")))
            return response

        @functools.wraps(async_send)
        async def asend(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            call = _record.begin(request.method, str(request.url), request.headers.multi_items(), _request_body(request))
            if call is None:
                return await async_send(self, request, *args, **kwargs)
            _record.add_traceparent(call, request.headers, in_place=True)
            response = await call.arun(async_send, self, request, *args, **kwargs)
            _answered(call, response, bool(kwargs.get("stream")))
            return response

        return [(httpx.Client, "send", sync_send, send), (httpx.AsyncClient, "send", async_send, asend)]
