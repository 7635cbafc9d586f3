"""A trivial Starlette app for the middleware benchmark; BENCH_HANDIT_MIDDLEWARE=1 wraps it
(``sync``: with ``background_stop=False``, each session finished on the request's thread)."""
from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def hello(request: object) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(routes=[Route("/hello", hello)])
if os.environ.get("BENCH_HANDIT_MIDDLEWARE") in ("1", "sync"):
    from handit.middleware import HanditASGIMiddleware

    if os.environ["BENCH_HANDIT_MIDDLEWARE"] == "sync":
        app.add_middleware(HanditASGIMiddleware, background_stop=False)
    else:
        app.add_middleware(HanditASGIMiddleware)
