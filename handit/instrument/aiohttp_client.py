"""Instrumentation stage, ``aiohttp``: ``ClientSession._request`` -> one recorded exchange per call;
the body is recorded as the program reads it through ``response.content`` (a watching proxy)."""
from __future__ import annotations

import functools
import weakref
from typing import Any, AsyncIterator

from . import _record
from ._base import BaseInstrumentor


class _WatchedStream:
    """Stands in for ``ClientResponse.content``: every read goes to the real stream, and is fed
    to the exchange's tap; the exchange finishes when the stream is at its end."""

    def __init__(self, stream: Any, call: _record.HttpCall, status: int, headers: Any) -> None:
        self._stream, self._call, self._status, self._headers = stream, call, status, headers

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _got(self, data: bytes) -> bytes:
        self._call.tap.feed(data)
        if not data or self._stream.at_eof():
            self._call.finish(self._status, self._headers)
        return data

    async def read(self, n: int = -1) -> bytes:
        return self._got(await self._stream.read(n))

    async def readany(self) -> bytes:
        return self._got(await self._stream.readany())

    async def readline(self) -> bytes:
        return self._got(await self._stream.readline())

    async def readexactly(self, n: int) -> bytes:
        return self._got(await self._stream.readexactly(n))

    async def readchunk(self) -> tuple[bytes, bool]:
        data, end = await self._stream.readchunk()
        self._got(data)
        return data, end

    async def _lines(self) -> AsyncIterator[bytes]:
        while line := await self.readline():
            yield line

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._lines()

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        """Chunks of at most ``n`` bytes."""
        while chunk := await self.read(n):
            yield chunk

    async def iter_any(self) -> AsyncIterator[bytes]:
        """Chunks as they arrive."""
        while chunk := await self.readany():
            yield chunk

    async def iter_chunks(self) -> AsyncIterator[tuple[bytes, bool]]:
        """``(data, end_of_http_chunk)`` pairs."""
        while True:
            data, end = await self.readchunk()
            if not data and not end:
                return
            yield data, end


def _watch(call: _record.HttpCall, response: Any) -> None:
    status, headers = response.status, response.headers
    redirects = len(response.history)
    response.content = _WatchedStream(response.content, call, status, headers)
    for name in ("release", "close"):
        _record.call_after(response, name, lambda: call.finish(status, headers, redirects=redirects))
    weakref.finalize(response, call.finish, status, headers, None, None, redirects).atexit = False


class Instrumentor(BaseInstrumentor):
    """Patches ``aiohttp.ClientSession._request`` (what ``get``/``post``/``request`` all await)."""

    library = "aiohttp"

    def _patch(self) -> list[tuple[Any, str, Any, Any]]:
        import aiohttp

        original = aiohttp.ClientSession._request

        @functools.wraps(original)
        async def _request(self: Any, method: str, str_or_url: Any, *args: Any, **kwargs: Any) -> Any:
            call = None
            try:
                url = aiohttp.client.URL(str(str_or_url))
                if kwargs.get("params"):
                    url = url.extend_query(kwargs["params"])
                headers = list(self.headers.items()) + list(dict(kwargs.get("headers") or {}).items())
                call = _record.begin(method, str(url), headers, kwargs.get("data"), json_body=kwargs.get("json"))
            except Exception:
                call = None
            if call is None:
                return await original(self, method, str_or_url, *args, **kwargs)
            if call.traceparent and not any(k.lower() == "traceparent" for k in self.headers):
                kwargs["headers"] = _record.add_traceparent(call, kwargs.get("headers"))
            response = await call.arun(original, self, method, str_or_url, *args, **kwargs)
            try:
                _watch(call, response)
            except Exception:
                call.finish(response.status, response.headers)
            return response

        return [(aiohttp.ClientSession, "_request", original, _request)]
