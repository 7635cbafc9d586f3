"""The trivial ASGI app of ``_asgi_app.py`` called in process, N requests: for instruction counts.

    BENCH_HANDIT_MIDDLEWARE=1 valgrind --tool=callgrind python bench/asgi_inprocess.py 1000

Runs 300 warm-up requests and then N; the instructions of one request are the difference
between a run with N=1000 and one with N=0, divided by 1,000 (``HANDIT_CAPTURE=timing``
leaves out the preview of the handler's arguments). Checks that every request answered.

The fake server here (``receive``, ``send``) is excluded from tracing, as uvicorn's are (a
library): traced, its ``send`` recorded two calls a request and previewed the response
messages, ~200,000 instructions that a real server does not spend.
"""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _asgi_app  # noqa: E402

SCOPE = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
         "path": "/hello", "raw_path": b"/hello", "query_string": b"", "root_path": "", "headers": [(b"host", b"x")],
         "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}


def _exclude_server() -> None:
    import handit
    from handit.config import DEFAULT_EXCLUDE

    handit.configure(exclude=DEFAULT_EXCLUDE + r"|^(?:__main__|asgi_inprocess)::")


async def _requests(n: int) -> list[object]:
    sent: list[object] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message.get("status") or message.get("body"))

    for _ in range(n):
        await _asgi_app.app(dict(SCOPE), receive, send)
    return sent


def main() -> None:
    n = 300 + int(sys.argv[1])
    _exclude_server()
    sent = asyncio.run(_requests(n))
    if sent.count(200) != n or sent.count(b"ok") != n:
        raise SystemExit(f"broken: {sent.count(200)} answers of {n}")


if __name__ == "__main__":
    main()
