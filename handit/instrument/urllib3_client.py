"""Instrumentation stage, ``urllib3``: ``HTTPConnectionPool.urlopen`` -> one recorded exchange per
call (skipped beneath ``requests``, which records the same request itself)."""
from __future__ import annotations

import functools
import inspect
import weakref
from typing import Any, Iterator

from . import _record
from ._base import BaseInstrumentor


def _full_url(pool: Any, url: str) -> str:
    if "://" in url:
        return url
    port = f":{pool.port}" if pool.port and pool.port != {"http": 80, "https": 443}.get(pool.scheme) else ""
    return f"{pool.scheme}://{pool.host}{port}{url}"


def _watch_stream(call: _record.HttpCall, response: Any) -> None:
    """Record what the program reads of an unpreloaded response; finish at its end or release."""
    status, headers = response.status, response.headers
    read, read_chunked, release_conn, close = response.read, response.read_chunked, response.release_conn, response.close
    state = {"reading": False}

    def recorded_read(amt: Any = None, *args: Any, **kwargs: Any) -> Any:
        data = read(amt, *args, **kwargs)
        if not state["reading"]:
            call.tap.feed(data)
            if amt is None or not data:
                call.finish(status, headers)
        return data

    def recorded_read_chunked(*args: Any, **kwargs: Any) -> Iterator[bytes]:
        state["reading"] = True
        try:
            for chunk in read_chunked(*args, **kwargs):
                call.tap.feed(chunk)
                yield chunk
        finally:
            state["reading"] = False
        call.finish(status, headers)

    def recorded_release_conn() -> None:
        release_conn()
        call.finish(status, headers)

    def recorded_close() -> None:
        close()
        call.finish(status, headers)

    response.read = recorded_read
    response.read_chunked = recorded_read_chunked
    response.release_conn = recorded_release_conn
    response.close = recorded_close
    weakref.finalize(response, call.finish, status, headers).atexit = False


class Instrumentor(BaseInstrumentor):
    """Patches ``urllib3.connectionpool.HTTPConnectionPool.urlopen``."""

    library = "urllib3"

    def _patch(self) -> list[tuple[Any, str, Any, Any]]:
        import urllib3.connectionpool

        pool_class = urllib3.connectionpool.HTTPConnectionPool
        original = pool_class.urlopen
        signature = inspect.signature(original)

        @functools.wraps(original)
        def urlopen(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            if _record._recording.get():  # beneath requests (or a redirect of ours): recorded already
                return original(self, method, url, *args, **kwargs)
            try:
                bound = signature.bind(self, method, url, *args, **kwargs).arguments
            except TypeError:
                bound = {}
            call = _record.begin(method, _full_url(self, url), bound.get("headers"), bound.get("body"))
            if call is None:
                return original(self, method, url, *args, **kwargs)
            call.enter()
            try:
                response = original(self, method, url, *args, **kwargs)
            except BaseException as exc:
                call.leave()
                call.finish(error=exc)
                raise
            call.leave()
            try:
                if bound.get("preload_content", True):
                    call.finish(response.status, response.headers, body=response.data)
                else:
                    _watch_stream(call, response)
            except Exception:
                call.finish(response.status, response.headers)
            return response

        return [(pool_class, "urlopen", original, urlopen)]
