"""Inbound stage, ASGI (Starlette, FastAPI): each HTTP request -> a session tagged ``METHOD route``,
joining the request's W3C ``traceparent``, open until the response body has ended."""
from __future__ import annotations

from typing import Any, Callable

from . import _common

ROUTE_CACHE = 4096
"""Route templates remembered per middleware, by method and path: matching every route of
the app again (Starlette's ``Route.matches``, a regex each) cost more than the rest of a
trivial request's handling. A path with parameters in it takes an entry of its own; the
cache is emptied when full."""


def _route(scope: dict[str, Any]) -> str:
    """The route template (``/items/{id}``) if the app is a Starlette/FastAPI one, else the path."""
    path = scope.get("path") or "/"
    route = scope.get("route")
    if route is not None and isinstance(getattr(route, "path", None), str):
        return route.path
    app = scope.get("app")
    for candidate in getattr(getattr(app, "router", None), "routes", ()) or ():
        try:
            match, _ = candidate.matches(scope)
        except Exception:
            continue
        if getattr(match, "name", "") == "FULL" and isinstance(getattr(candidate, "path", None), str):
            return candidate.path
    return path


class HanditASGIMiddleware:
    """ASGI middleware: a session per HTTP request (lifespan and websocket scopes pass through).

    The session covers the whole application call, so a streaming response and the
    background tasks Starlette runs after it stay in the request's session.

    Args:
        app: the ASGI application.
        attrs: extra string attributes for every request's session.
        on_end: called with each finished session (e.g. to log its summary).
        background_stop: each request's session is finished (its records drained, its end
            written to the sinks, ``on_end`` called) by handit's background drain, ~10 ms
            after the request, not by the request's own thread (docs/http.md#cost); False:
            before the middleware returns.
    """

    def __init__(self, app: Any, *, attrs: dict[str, str] | None = None, on_end: Callable[[Any], None] | None = None,
                 background_stop: bool = True) -> None:
        self.app = app
        self.background_stop = background_stop
        self.attrs = dict(attrs or {})
        self.on_end = on_end
        self._routes: dict[tuple[Any, Any], str] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        traceparent = None
        for name, value in scope.get("headers") or ():
            if name == b"traceparent":
                traceparent = value.decode("latin-1")
                break
        method = str(scope.get("method") or "GET")
        if scope.get("route") is not None:  # an outer router's match (a Mount)
            route = _route(scope)
        else:
            key = (method, scope.get("path"))
            route = self._routes.get(key)  # type: ignore[assignment]
            if route is None:
                route = _route(scope)
                if len(self._routes) >= ROUTE_CACHE:
                    self._routes.clear()
                self._routes[key] = route
        attrs = {**self.attrs, "http.request.method": method, "http.route": route}
        session = _common.start(f"{method} {route}", attrs, traceparent)
        status: list[int] = []

        async def send_noting_status(message: Any) -> None:
            if message.get("type") == "http.response.start":
                status.append(message.get("status") or 0)
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status if session is not None else send)
        finally:
            _common.stop(session, self.on_end, status[0] if status else None, self.background_stop)
