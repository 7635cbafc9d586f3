"""A trivial Starlette app for the middleware benchmark; BENCH_HANDIT_MIDDLEWARE=1 wraps it
(``sync``: with ``background_stop=False``, each session finished on the request's thread).
``GET /sessions`` answers how many request sessions have ended, so the benchmark can check
that every request it made was recorded."""
from __future__ import annotations

import itertools
import os
from typing import Any

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

_ended = itertools.count()
_seen = [0]


def _count(session: Any) -> None:
    _seen[0] = next(_ended) + 1


async def hello(request: object) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def sessions(request: object) -> PlainTextResponse:
    return PlainTextResponse(str(_seen[0]))


app = Starlette(routes=[Route("/hello", hello), Route("/sessions", sessions)])
if os.environ.get("BENCH_HANDIT_MIDDLEWARE") in ("1", "sync"):
    from handit.middleware import HanditASGIMiddleware

    if os.environ["BENCH_HANDIT_MIDDLEWARE"] == "sync":
        app.add_middleware(HanditASGIMiddleware, on_end=_count, background_stop=False)
    else:
        app.add_middleware(HanditASGIMiddleware, on_end=_count)
