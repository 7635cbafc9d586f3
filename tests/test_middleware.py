"""Per-request sessions from the ASGI middleware under a real uvicorn and the WSGI middleware under
a real werkzeug server: concurrent requests, each request's calls and HTTP calls in its own session."""
from __future__ import annotations

import asyncio
import contextvars
import json
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import pytest
import requests
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route
from werkzeug.routing import Map, Rule
from werkzeug.serving import make_server

import handit
from handit.middleware import HanditASGIMiddleware, HanditWSGIMiddleware

from conftest import child_env
from http_servers import Server, instrumented, server  # noqa: F401 (fixtures)

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
N = 8



def compute(i: int) -> int:
    return i * 2


def after_response(i: int) -> int:
    return i + 1000


def _asgi_app(server: Server, finished: list) -> Any:
    async def work(request: Any) -> Any:
        i = int(request.path_params["i"])
        await asyncio.sleep(0.02)
        async with httpx.AsyncClient() as c:
            await c.get(f"{server.base}/json?i={i}")
        return JSONResponse({"i": compute(i)}, background=BackgroundTask(after_response, i))

    async def stream(request: Any) -> Any:
        async def body() -> Any:
            for k in range(3):
                yield b"chunk %d\n" % compute(k)
                await asyncio.sleep(0.01)
        return StreamingResponse(body(), media_type="text/plain")

    app = Starlette(routes=[Route("/work/{i}", work), Route("/stream", stream)])
    app.add_middleware(HanditASGIMiddleware, on_end=finished.append)
    return app


class _Uvicorn:
    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _by_tag(sessions: list) -> dict[str, list]:
    out: dict[str, list] = {}
    for s in sessions:
        out.setdefault(s.tag, []).append(s)
    return out


def test_asgi_session_per_request_under_uvicorn(server: Server, engine: Any) -> None:
    finished: list = []
    with _Uvicorn(_asgi_app(server, finished)) as base:
        async def client() -> list:
            async with httpx.AsyncClient(timeout=60) as c:  # the pure engine on a loaded machine: slow, not stuck
                rs = await asyncio.gather(*(c.get(f"{base}/work/{i}", headers={"traceparent": TRACEPARENT}) for i in range(N)))
                streamed = await c.get(f"{base}/stream")
            return [r.json() for r in rs] + [streamed.text]
        answers = asyncio.run(client())
        for _ in range(200):  # the last session ends just after its body is sent
            if len(finished) == N + 1:
                break
            time.sleep(0.01)
    assert answers[:N] == [{"i": 2 * i} for i in range(N)]
    assert answers[N] == "chunk 0\nchunk 2\nchunk 4\n"
    tags = _by_tag(finished)
    assert sorted(tags) == ["GET /stream", "GET /work/{i}"]
    assert len(tags["GET /work/{i}"]) == N
    seen = []
    for s in tags["GET /work/{i}"]:
        events = s.events
        computes = [e for e in events if e["type"] == "call" and e["func"] == "compute"]
        backgrounds = [e for e in events if e["type"] == "call" and e["func"] == "after_response"]
        urls = [e["url"] for e in events if e["type"] == "http_request"]
        assert len(computes) == 1 and len(backgrounds) == 1 and len(urls) == 1
        i = int(computes[0]["args_preview"]["i"])
        assert urls == [f"{server.base}/json?i={i}"]
        assert backgrounds[0]["args_preview"]["i"] == str(i)
        assert s.trace_id == TRACEPARENT.split("-")[1] and s.parent_span_id == TRACEPARENT.split("-")[2]
        assert s.attrs["http.route"] == "/work/{i}"
        seen.append(i)
    assert sorted(seen) == list(range(N))
    (streamed,) = tags["GET /stream"]
    assert len([e for e in streamed.events if e["type"] == "call" and e["func"] == "compute"]) == 3  # body generator ran inside


def _wsgi_app(server: Server) -> Any:
    class App:
        url_map = Map([Rule("/work/<int:i>", endpoint="work")])

        def __call__(self, environ: dict, start_response: Any) -> Any:
            i = int(environ["PATH_INFO"].rsplit("/", 1)[1])
            requests.get(f"{server.base}/json?i={i}")
            start_response("200 OK", [("Content-Type", "text/plain")])
            return (b"%d" % compute(k) for k in (i, i))

    return App()


def test_wsgi_session_per_request_under_werkzeug(server: Server, engine: Any) -> None:
    finished: list = []
    app = HanditWSGIMiddleware(_wsgi_app(server), on_end=finished.append)
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{httpd.server_port}"
        results: dict[int, str] = {}

        def get(i: int) -> None:
            results[i] = requests.get(f"{base}/work/{i}", headers={"traceparent": TRACEPARENT}).text

        clients = [threading.Thread(target=get, args=(i,)) for i in range(N)]
        for t in clients:
            t.start()
        for t in clients:
            t.join()
        for _ in range(200):
            if len(finished) == N:
                break
            time.sleep(0.01)
    finally:
        httpd.shutdown()
        thread.join(10)
    assert results == {i: f"{2 * i}{2 * i}" for i in range(N)}
    assert {s.tag for s in finished} == {"GET /work/<int:i>"} and len(finished) == N
    for s in finished:
        events = s.events
        computes = [e for e in events if e["type"] == "call" and e["func"] == "compute"]
        urls = [e["url"] for e in events if e["type"] == "http_request"]
        i = int(computes[0]["args_preview"]["i"])
        assert len(computes) == 2 and urls == [f"{server.base}/json?i={i}"]
        assert s.trace_id == TRACEPARENT.split("-")[1]
        assert len(s.thread_names) == 1  # the request's thread, named though it may be gone when the session is finished


async def _one_request(app: Any, path: str = "/items/7") -> list:
    sent: list = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app({"type": "http", "method": "GET", "path": path, "headers": []}, receive, send)
    return sent


async def _compute_app(scope: dict, receive: Any, send: Any) -> None:
    compute(7)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _finished_in(ended: list, timeout: float = 10) -> list:
    deadline = time.monotonic() + timeout
    while not ended and time.monotonic() < deadline:
        time.sleep(0.005)
    return ended


def test_request_session_is_finished_by_the_drain_thread(engine: Any) -> None:
    """By default the request's thread does not drain nor write the session's end: handit's
    drain thread does, after the records are drained (the call is in it, counted)."""
    ended: list = []

    def on_end(s: Any) -> None:
        ended.append((s, threading.current_thread() is threading.main_thread(), s.stats["calls"]))

    asyncio.run(_one_request(HanditASGIMiddleware(_compute_app, on_end=on_end)))
    ((s, on_request_thread, calls),) = _finished_in(ended)
    background = handit.sessions.engine_info()[1] == "sysmon"  # the profile-function source stops at the request's end
    assert on_request_thread is not background
    funcs = [e["func"] for e in s.events if e["type"] == "call"]
    assert "compute" in funcs and calls == len(funcs) and s.http_status == 200 and s.end_event()["reason"] == "stop"


def test_request_session_stopped_before_the_middleware_returns(engine: Any) -> None:
    ended: list = []
    app = HanditASGIMiddleware(_compute_app, on_end=ended.append, background_stop=False)
    asyncio.run(_one_request(app))
    (s,) = ended  # called before the request ended, on its thread
    funcs = [e["func"] for e in s.events if e["type"] == "call"]
    assert "compute" in funcs and s.stats["calls"] == len(funcs)


def test_session_ending_in_the_background_is_finished_when_read(engine: Any) -> None:
    """Reading a session the drain thread has not finished yet finishes it there and then."""
    called: list = []
    with handit.sessions._lock:  # the drain thread cannot finish it meanwhile
        s = handit.start("req")
        compute(1)
        handit.sessions.stop(s, wait=False, on_finished=called.append)
        assert s.t1_ns is not None
        events = s.events
    assert [e["func"] for e in events if e["type"] == "call"] == ["compute"]
    assert events[-1]["type"] == "session_end" and events[-1]["stats"]["calls"] == 1
    assert called == [s] and handit.sessions.active_sessions() == []
    handit.sessions.stop(s)  # finished: nothing happens again
    assert called == [s]


def test_session_ending_in_the_background_is_written_at_exit(engine: Any, tmp_path: Any) -> None:
    out = tmp_path / "trace.jsonl"
    program = tmp_path / "prog.py"
    program.write_text(
        "import handit\n"
        "from handit import sessions\n"
        "def compute(i):\n"
        "    return i * 2\n"
        "s = handit.start('req')\n"
        "compute(1)\n"
        "sessions.stop(s, wait=False)\n"
    )
    env = child_env(HANDIT_ENGINE=engine[0], HANDIT_SOURCE=engine[1], HANDIT_OUTPUT_FILE=str(out))
    done = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["func"] for e in events if e["type"] == "call"] == ["compute"]
    (end,) = [e for e in events if e["type"] == "session_end"]
    assert end["reason"] == "stop" and end["stats"]["calls"] == 1


def test_server_tasks_made_outside_any_session_are_not_named(engine: Any, monkeypatch: Any) -> None:
    """A server makes a task per request before the request's session starts: no task marker
    can be written there, so no Task-N name is kept for it (one per request, for ever)."""
    named: list = []

    async def tasks() -> None:
        await asyncio.gather(*(asyncio.get_running_loop().create_task(asyncio.sleep(0)) for _ in range(20)))

    with handit.session("beside"):
        module = handit.sessions._state["choice"].module
        name_ref = module.task_name_ref
        monkeypatch.setattr(module, "task_name_ref", lambda name: named.append(name) or name_ref(name))
        contextvars.Context().run(asyncio.run, tasks())  # a context without a session
        assert named == []
        asyncio.run(tasks())  # in the session: named
        assert len(named) >= 20
