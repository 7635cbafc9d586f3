"""Inbound stage, WSGI (Flask, Django, any WSGI app): each request -> a session tagged
``METHOD route``, joining the request's W3C ``traceparent``, open until the server closes the body."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from . import _common


def _route(app: Any, environ: dict[str, Any]) -> str:
    """The URL rule (``/items/<id>``) if the app has a werkzeug ``url_map`` (Flask), else the path."""
    path = environ.get("PATH_INFO") or "/"
    owner = getattr(app, "__self__", app)  # Flask: app.wsgi_app is a bound method
    url_map = getattr(owner, "url_map", None)
    if url_map is not None:
        try:
            rule, _ = url_map.bind_to_environ(environ).match(return_rule=True)
            return str(rule.rule)
        except Exception:
            pass
    return path


class _Body:
    """The app's response iterable: passed through, and the session stopped when the server closes it."""

    def __init__(self, result: Iterable[bytes], stop: Callable[[], None]) -> None:
        self._result = result
        self._stop = stop

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._result)

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._stop()


class HanditWSGIMiddleware:
    """WSGI middleware: a session per request, ended when the server closes the response body.

    Args:
        app: the WSGI application (for Flask: ``app.wsgi_app = HanditWSGIMiddleware(app.wsgi_app)``).
        attrs: extra string attributes for every request's session.
        on_end: called with each finished session.
        background_stop: each request's session is finished (its records drained, its end
            written to the sinks, ``on_end`` called) by handit's background drain, ~10 ms
            after the request, not by the request's own thread (docs/http.md#cost); False:
            before the server closes the body.
    """

    def __init__(self, app: Any, *, attrs: dict[str, str] | None = None, on_end: Callable[[Any], None] | None = None,
                 background_stop: bool = True) -> None:
        self.app = app
        self.background_stop = background_stop
        self.attrs = dict(attrs or {})
        self.on_end = on_end

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        method = str(environ.get("REQUEST_METHOD") or "GET")
        route = _route(self.app, environ)
        attrs = {**self.attrs, "http.request.method": method, "http.route": route}
        session = _common.start(f"{method} {route}", attrs, environ.get("HTTP_TRACEPARENT"))
        if session is None:
            return self.app(environ, start_response)
        status: list[int] = []

        def start_response_noting_status(code: str, *args: Any) -> Any:
            status[:] = [int(code.split(" ", 1)[0])] if code[:3].isdigit() else []
            return start_response(code, *args)

        try:
            result = self.app(environ, start_response_noting_status)
        except BaseException:
            _common.stop(session, self.on_end, 500, self.background_stop)
            raise
        return _Body(result, lambda: _common.stop(session, self.on_end, status[0] if status else None, self.background_stop))
