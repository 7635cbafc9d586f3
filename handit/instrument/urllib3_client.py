"""Instrumentation stage, ``urllib3``: ``HTTPConnectionPool.urlopen`` -> one recorded exchange per
call (skipped beneath ``requests``, which records the same request itself)."""
from __future__ import annotations

import functools
import inspect
import weakref
from typing import Any, Callable, Iterator

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
    read, read_chunked = response.read, response.read_chunked
    # urllib3 releases the connection from inside the read that drains it: the exchange
    # finishes after that read's bytes are counted, not at the release
    state = {"in_read": False, "ended": False}

    def recorded_read(amt: Any = None, *args: Any, **kwargs: Any) -> Any:
        state["in_read"] = True
        try:
            data = read(amt, *args, **kwargs)
        finally:
            state["in_read"] = False
        call.tap.feed(data)
        if amt is None or not data or state["ended"]:
            call.finish(status, headers)
        return data

    def recorded_read_chunked(*args: Any, **kwargs: Any) -> Iterator[bytes]:
        for chunk in read_chunked(*args, **kwargs):
            call.tap.feed(chunk)
            yield chunk
        call.finish(status, headers)

    def ended() -> None:
        if state["in_read"]:
            state["ended"] = True
        else:
            call.finish(status, headers)

    response.read = recorded_read
    response.read_chunked = recorded_read_chunked
    _record.call_after(response, "release_conn", ended)
    _record.call_after(response, "close", ended)
    weakref.finalize(response, call.finish, status, headers).atexit = False


def _with_traceparent(call: _record.HttpCall, signature: inspect.Signature, owner: Any, method: str, url: str,
                      args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call's arguments with its ``traceparent`` added to the headers (a pool's or a manager's ``kw``)."""
    try:
        bound = signature.bind(owner, method, url, *args, **kwargs)
    except TypeError:
        return args, kwargs
    where = bound.arguments if "headers" in signature.parameters else bound.arguments.setdefault("kw", {})
    where["headers"] = _record.add_traceparent(call, where.get("headers") or getattr(owner, "headers", None))
    return bound.args[3:], bound.kwargs


def _wrap(original: Any, full_url: Callable[[Any, str], str]) -> Any:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def urlopen(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if _record._recording.get():  # beneath requests, a PoolManager, or a redirect of ours
            return original(self, method, url, *args, **kwargs)
        try:
            bound = signature.bind(self, method, url, *args, **kwargs).arguments
        except TypeError:
            bound = {}
        call = _record.begin(method, full_url(self, url), bound.get("headers"), bound.get("body"))
        if call is None:
            return original(self, method, url, *args, **kwargs)
        if call.traceparent is not None:
            args, kwargs = _with_traceparent(call, signature, self, method, url, args, kwargs)
        response = call.run(original, self, method, url, *args, **kwargs)
        try:
            extra = bound.get("response_kw") or bound.get("kw") or {}  # the pool's and the manager's **kwargs
            preload = bound.get("preload_content", extra.get("preload_content", True))
            if preload:
                call.finish(response.status, response.headers, body=response.data)
            else:
                _watch_stream(call, response)
        except Exception:
            call.finish(response.status, response.headers)
        return response

    return urlopen


class Instrumentor(BaseInstrumentor):
    """Patches ``PoolManager.urlopen`` (redirects it follows count once) and
    ``HTTPConnectionPool.urlopen`` (pools used directly)."""

    library = "urllib3"

    def _patch(self) -> list[tuple[Any, str, Any, Any]]:
        import urllib3.connectionpool
        import urllib3.poolmanager

        pool, manager = urllib3.connectionpool.HTTPConnectionPool, urllib3.poolmanager.PoolManager
        return [
            (pool, "urlopen", pool.urlopen, _wrap(pool.urlopen, _full_url)),
            (manager, "urlopen", manager.urlopen, _wrap(manager.urlopen, lambda _manager, url: url)),
        ]
