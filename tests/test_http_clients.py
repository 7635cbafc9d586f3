"""HTTP clients inside sessions: one ``http_request`` / ``http_response`` pair per call, against a
real loopback server, with the program's results unchanged and no secret in any output."""
from __future__ import annotations

import asyncio
import importlib
import json
import os
import urllib.error
import urllib.request
from typing import Any, Callable

import aiohttp
import httpx
import pytest
import requests
import urllib3

import handit
from handit.instrument import _record, instrumentors
from handit.tracefile import iter_trace

from http_servers import BIG_TEXT, BINARY, Handler, Server, refused_port, instrumented, server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.engine_dependent  # its tests run an engine outside the `engine` fixture



def _requests(url: str, **kw: Any) -> tuple[int, bytes]:
    if kw.get("stream"):
        r = requests.get(url, stream=True, timeout=kw.get("timeout", 5))
        return r.status_code, b"".join(r.iter_content(100))
    r = requests.get(url, timeout=kw.get("timeout", 5), headers=kw.get("headers"))
    return r.status_code, r.content


def _httpx(url: str, **kw: Any) -> tuple[int, bytes]:
    if kw.get("stream"):
        with httpx.stream("GET", url, timeout=kw.get("timeout", 5)) as r:
            return r.status_code, b"".join(r.iter_bytes())
    r = httpx.get(url, timeout=kw.get("timeout", 5), follow_redirects=True, headers=kw.get("headers"))
    return r.status_code, r.content


def _httpx_async(url: str, **kw: Any) -> tuple[int, bytes]:
    async def go() -> tuple[int, bytes]:
        async with httpx.AsyncClient(timeout=kw.get("timeout", 5), follow_redirects=True) as c:
            if kw.get("stream"):
                async with c.stream("GET", url) as r:
                    return r.status_code, b"".join([chunk async for chunk in r.aiter_bytes()])
            r = await c.get(url, headers=kw.get("headers"))
            return r.status_code, r.content
    return asyncio.run(go())


def _urllib3(url: str, **kw: Any) -> tuple[int, bytes]:
    pool = urllib3.PoolManager(retries=urllib3.Retry(total=3, connect=0, read=0), timeout=kw.get("timeout", 5))
    if kw.get("stream"):
        r = pool.request("GET", url, preload_content=False)
        data = b"".join(r.stream(100))
        r.release_conn()
        return r.status, data
    r = pool.request("GET", url, headers=kw.get("headers"), redirect=True)
    return r.status, r.data


def _aiohttp(url: str, **kw: Any) -> tuple[int, bytes]:
    async def go() -> tuple[int, bytes]:
        timeout = aiohttp.ClientTimeout(total=kw.get("timeout", 5))
        async with aiohttp.ClientSession(timeout=timeout) as s:
            async with s.get(url, headers=kw.get("headers")) as r:
                if kw.get("stream"):
                    return r.status, b"".join([chunk async for chunk in r.content.iter_chunked(100)])
                return r.status, await r.read()
    return asyncio.run(go())


def _urllib(url: str, **kw: Any) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=kw.get("headers") or {}), timeout=kw.get("timeout", 5)) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


CLIENTS: dict[str, Callable[..., tuple[int, bytes]]] = {
    "requests": _requests, "httpx": _httpx, "httpx-async": _httpx_async, "urllib3": _urllib3,
    "aiohttp": _aiohttp, "urllib": _urllib,
}


def _outcome(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except Exception as exc:
        return type(exc)


def _http(session: handit.Session) -> tuple[list[dict], list[dict]]:
    events = session.events
    return [e for e in events if e["type"] == "http_request"], [e for e in events if e["type"] == "http_response"]


@pytest.mark.parametrize("client", sorted(CLIENTS))
@pytest.mark.parametrize("path,status", [("/json", 200), ("/status/404", 404), ("/status/500", 500), ("/redirect", 200)])
def test_one_pair_per_call_same_result(server: Server, client: str, path: str, status: int) -> None:
    fn = CLIENTS[client]
    plain = _outcome(fn, server.base + path)
    with handit.session("http") as s:
        traced = _outcome(fn, server.base + path)
    assert traced == plain
    assert traced[0] == status
    reqs, resps = _http(s)
    assert len(reqs) == 1 and len(resps) == 1, (reqs, resps)
    req, resp = reqs[0], resps[0]
    assert req["method"] == "GET" and req["url"] == server.base + path
    assert resp["request_id"] == req["request_id"]
    assert resp["status"] == status and resp["error"] is None
    assert resp["t1_ns"] >= req["t0_ns"] and resp["dt_ns"] == resp["t1_ns"] - req["t0_ns"]
    assert resp["bytes_in"] == len(traced[1])
    if path != "/redirect" or client in ("requests", "httpx", "httpx-async", "aiohttp", "urllib"):
        assert resp["response_body"] == (traced[1].decode() if "token" not in traced[1].decode() else
                                         json.dumps({**json.loads(traced[1]), "token": "<redacted>"}))


def _retrying(url: str) -> Any:
    retry = urllib3.Retry(total=2, status_forcelist=[503], backoff_factor=0, raise_on_status=False)
    adapter = requests.adapters.HTTPAdapter(max_retries=retry)
    with requests.Session() as r:
        r.mount("http://", adapter)
        first = r.get(url).status_code
    pool = urllib3.PoolManager(retries=retry)
    return first, pool.request("GET", url).status


def test_retries_happen_as_without_handit_one_exchange_each(server: Server) -> None:
    url = server.base + "/status/503"
    before = len(Handler.gets)
    plain = _retrying(url)
    attempts = len(Handler.gets) - before
    with handit.session("retries") as s:
        traced = _retrying(url)
    assert traced == plain == (503, 503) and attempts == 6
    assert len(Handler.gets) - before == 2 * attempts  # the server saw the same retries
    reqs, resps = _http(s)
    assert len(reqs) == 2 and [r["status"] for r in resps] == [503, 503]


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_connection_refused_recorded_with_error(client: str) -> None:
    url = f"http://127.0.0.1:{refused_port()}/json"
    plain = _outcome(CLIENTS[client], url)
    with handit.session("refused") as s:
        traced = _outcome(CLIENTS[client], url)
    assert traced is plain and isinstance(plain, type)
    reqs, resps = _http(s)
    assert len(reqs) == 1 and len(resps) == 1
    assert resps[0]["status"] == 0 and resps[0]["error"] and resps[0]["dt_ns"] > 0


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_timeout_recorded_with_error(server: Server, client: str) -> None:
    with handit.session("timeout") as s:
        traced = _outcome(CLIENTS[client], server.base + "/slow", timeout=0.3)
    assert isinstance(traced, type) and issubclass(traced, Exception)
    _, resps = _http(s)
    assert len(resps) == 1 and resps[0]["error"] and resps[0]["dt_ns"] >= 200_000_000


@pytest.mark.parametrize("client", sorted(CLIENTS))
@pytest.mark.parametrize("path", ["/chunked", "/sse", "/big"])
def test_streams_recorded_as_read_up_to_the_cap(server: Server, client: str, path: str) -> None:
    handit.configure(max_body=64)
    plain = CLIENTS[client](server.base + path, stream=True)
    with handit.session("stream") as s:
        traced = CLIENTS[client](server.base + path, stream=True)
    assert traced == plain
    _, resps = _http(s)
    assert len(resps) == 1
    resp = resps[0]
    assert resp["bytes_in"] == len(traced[1])
    body = resp["response_body"]
    assert body.startswith(traced[1][:64].decode())
    if len(traced[1]) > 64:
        assert body.endswith(f"... <{len(traced[1]) - 64} more bytes>")


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_binary_body_is_size_and_type(server: Server, client: str) -> None:
    with handit.session("bin") as s:
        status, data = CLIENTS[client](server.base + "/binary")
    assert data == BINARY
    _, resps = _http(s)
    assert resps[0]["response_body"] == f"<binary {len(BINARY)} bytes, image/png>"
    assert resps[0]["bytes_in"] == len(BINARY)


def test_streamed_response_never_read_by_handit(server: Server) -> None:
    with handit.session("unread") as s:
        r = requests.get(server.base + "/big", stream=True)
        first = next(r.iter_content(10))
        # still open: nothing read past what the program took (s.events inside a session is
        # cached past its end, so the raw extra events are looked at here)
        assert [e["type"] for e in s._extra] == ["http_request"]
        r.close()
    assert first == BIG_TEXT[:10]
    _, resps = _http(s)
    assert len(resps) == 1 and resps[0]["bytes_in"] == 10


def test_concurrent_async_requests_each_in_its_own_session(server: Server) -> None:
    async def one(i: int) -> handit.Session:
        with handit.session(f"task-{i}") as s:
            async with httpx.AsyncClient() as c:
                await c.get(f"{server.base}/json?i={i}")
            async with aiohttp.ClientSession() as a:
                async with a.get(f"{server.base}/json?j={i}") as r:
                    await r.read()
        return s

    async def main() -> list[handit.Session]:
        return await asyncio.gather(*(one(i) for i in range(8)))

    sessions = asyncio.run(main())
    for i, s in enumerate(sessions):
        reqs, resps = _http(s)
        assert sorted(r["url"].rsplit("/", 1)[1] for r in reqs) == [f"json?i={i}", f"json?j={i}"]
        assert len(resps) == 2


def test_nothing_recorded_outside_a_session(server: Server) -> None:
    before = next(_record._ids)
    requests.get(server.base + "/json")
    httpx.get(server.base + "/json")
    assert next(_record._ids) == before + 1  # no exchange was begun in between


def test_instrument_is_idempotent_and_uninstrument_restores(server: Server) -> None:
    original = requests.Session.send
    assert handit.instrument() == []  # already patched by the fixture
    handit.configure(instrument_http=False)  # the first session of the process would patch again
    assert set(handit.uninstrument()) == set(instrumentors())
    assert handit.uninstrument() == []
    assert requests.Session.send is not original
    with handit.session("off") as s:
        requests.get(server.base + "/json")
    assert _http(s) == ([], [])
    assert "requests" in handit.instrument("requests")
    with handit.session("on") as s:
        requests.get(server.base + "/json")
    assert len(_http(s)[0]) == 1
    with pytest.raises(ValueError, match="supported libraries"):
        handit.instrument("nosuchlib")
    importlib.import_module("handit.instrument.requests_client")  # binds handit.instrument to the package
    assert handit.instrument("requests") == [] and "instrument" in handit.__all__  # still callable


def test_instrument_http_off_patches_nothing(tmp_path: Any) -> None:
    import subprocess
    import sys

    from conftest import child_env

    code = ("import requests, handit\norig = requests.Session.send\n"
            "with handit.session('x'):\n    pass\nprint(requests.Session.send is orig)\n")
    for value, expect in (("0", "True"), ("1", "False")):
        out = subprocess.run([sys.executable, "-c", code], env=child_env(HANDIT_INSTRUMENT_HTTP=value, HANDIT_ENGINE="fallback"),
                             capture_output=True, text=True, cwd=tmp_path, check=True)
        assert out.stdout.strip() == expect, out.stderr


LATE_IMPORT = """
import sys, handit
url = sys.argv[1]
with handit.session("late") as s:
    import requests, httpx, urllib3, urllib.request  # imported after the first session started
    requests.get(url); httpx.get(url); urllib3.PoolManager().request("GET", url); urllib.request.urlopen(url).read()
    loaders = {type(m.__spec__.loader).__name__ for m in (requests, httpx, urllib3, urllib.request)}
hooked = any(type(f).__name__ == "ImportHook" for f in sys.meta_path)
handit.uninstrument()
print(sum(e["type"] == "http_response" for e in s.events), sorted(loaders), hooked,
      any(type(f).__name__ == "ImportHook" for f in sys.meta_path))
"""


def test_clients_imported_after_the_first_session_are_instrumented(server: Server, tmp_path: Any) -> None:
    import subprocess
    import sys

    from conftest import child_env

    for value, expect in (("1", "4 ['SourceFileLoader'] True False"), ("0", "0 ['SourceFileLoader'] False False")):
        out = subprocess.run([sys.executable, "-W", "error", "-c", LATE_IMPORT, server.base + "/json"],
                             env=child_env(HANDIT_INSTRUMENT_HTTP=value), capture_output=True, text=True, cwd=tmp_path)
        assert out.stdout.strip() == expect and out.returncode == 0, out.stderr


COLLECTED_UNREAD = """
import gc, sys, weakref, handit
from handit.instrument import _record
from handit.tracefile import iter_trace
handit.configure(output_file=sys.argv[2])

class Response:  # what an HTTP client leaves unread: its exchange is finished by a finalizer
    pass

with handit.session("collected") as s:
    call = _record.begin("GET", "http://127.0.0.1:9/unread")  # the request, as a client records it
    r = Response()
    weakref.finalize(r, call.finish, 200, {})  # as handit.instrument's clients do
    cycle = [r]
    cycle.append(cycle)  # only the collector frees it
    del r, cycle
    (sink,) = [k for k in s._sinks if getattr(k, "fmt", "") == "handit"]
    with sink.writer._lock:  # a collection that starts while the writer is mid-frame, on its thread
        gc.collect()
handit.sinks.flush_all(final=True)
print(sum(e["type"] == "http_response" for e in iter_trace(sys.argv[2])))
"""


def test_an_answer_collected_while_the_writer_is_busy_is_written_later(tmp_path: Any) -> None:
    """A response collected unread finishes its exchange from a finalizer, which can run inside
    handit's own locked code (seen: the drain thread in the writer's codes(), deadlocked on
    itself, the program blocked behind it). The event waits for a safe point instead."""
    import subprocess
    import sys

    from conftest import child_env

    out = subprocess.run([sys.executable, "-c", COLLECTED_UNREAD, "unused", str(tmp_path / "t.handit")],
                         env=child_env(), capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "1", out.stderr


def test_example_agent_records_its_http_calls(tmp_path: Any) -> None:
    """The README's example imports urllib.request after `handit run` started its session."""
    import subprocess
    import sys

    from conftest import child_env

    # the checkout's example (the handit under test may be installed, without examples/)
    agent = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "agent.py")
    run = subprocess.run([sys.executable, "-m", "handit", "run", "--no-summary", "-o", "agent.jsonl", agent],
                         env=child_env(), capture_output=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    shown = subprocess.run([sys.executable, "-m", "handit", "show", "agent.jsonl", "--no-tree"], env=child_env(),
                           capture_output=True, text=True, cwd=tmp_path)
    assert "· 4 HTTP calls" in shown.stdout, shown.stdout[-800:]
    events = [json.loads(line) for line in (tmp_path / "agent.jsonl").read_text().splitlines()]
    funcs = {e["call_id"]: e["func"] for e in events if e["type"] == "call"}
    assert [funcs.get(e["parent_id"]) for e in events if e["type"] == "http_request"] == ["call_api"] * 4


SECRETS = ["hdr-secret-aaaa1111", "query-secret-bbbb2222", "userinfo-secret-cccc3333", "body-secret-dddd4444",
           "tok-in-response-0001", "cookie-secret-0002"]


@pytest.mark.parametrize("fmt", ["handit", "jsonl"])
def test_no_secret_in_any_output(server: Server, tmp_path: Any, fmt: str, engine: Any) -> None:
    out = tmp_path / f"trace.{fmt}"
    handit.configure(output_file=str(out), redact_headers=["X-Custom-Auth"])
    url = f"http://user:userinfo-secret-cccc3333@127.0.0.1:{server.port}/echo?access_token=query-secret-bbbb2222&q=1"
    with handit.session("secrets") as s:
        requests.post(url, json={"password": "body-secret-dddd4444", "n": 1},
                      headers={"Authorization": "Bearer hdr-secret-aaaa1111", "X-Custom-Auth": "hdr-secret-aaaa1111"})
        httpx.get(server.base + "/json", headers={"Api-Key": "hdr-secret-aaaa1111"})
    text = json.dumps(s.events)
    assert "<redacted>" in text
    data = out.read_bytes()
    if fmt == "handit":
        data = json.dumps(list(iter_trace(str(out)))).encode()
    assert b"http_response" in data
    for secret in SECRETS:
        assert secret not in text and secret.encode() not in data, secret
    assert oct(os.stat(out).st_mode & 0o777) == "0o600"


def test_no_secret_sent_to_the_endpoint(server: Server, tmp_path: Any) -> None:
    from ingest_server import IngestServer

    with IngestServer() as ingest:
        handit.configure(endpoint=ingest.url, api_key="exporter-key-eeee5555", redact_headers=["X-Custom-Auth"],
                         flush_every_ms=50, spool_dir=str(tmp_path / "spool"))
        url = f"http://user:userinfo-secret-cccc3333@127.0.0.1:{server.port}/echo?access_token=query-secret-bbbb2222&q=1"
        with handit.session("secrets"):
            requests.post(url, json={"password": "body-secret-dddd4444", "n": 1},
                          headers={"Authorization": "Bearer hdr-secret-aaaa1111", "X-Custom-Auth": "hdr-secret-aaaa1111"})
            httpx.get(server.base + "/json", headers={"Api-Key": "hdr-secret-aaaa1111"})
        exporter = importlib.import_module("handit.sinks")._exporters.pop(ingest.url)
        exporter.flush(10)
        sent = ingest.wait_for_events(6)
        exporter.close()
    text = json.dumps(sent)
    assert text.count('"http_response"') == 2 and "<redacted>" in text
    for secret in SECRETS:
        assert secret not in text, secret


def test_request_body_recorded_redacted(server: Server) -> None:
    with handit.session("post") as s:
        r = httpx.post(server.base + "/echo", json={"api_key": "sk-body-secret-0123456789abcdef", "prompt": "hi"})
    assert r.json()["prompt"] == "hi"
    reqs, resps = _http(s)
    assert json.loads(reqs[0]["request_body"]) == {"api_key": "<redacted>", "prompt": "hi"}
    assert reqs[0]["bytes_out"] == len(r.content)
    assert json.loads(resps[0]["response_body"]) == {"api_key": "<redacted>", "prompt": "hi"}


def _fetch_twice(base: str) -> int:
    return requests.get(base + "/json").status_code + _inner_fetch(base)


def _inner_fetch(base: str) -> int:
    return httpx.get(base + "/json").status_code


async def _fetch_async(base: str, i: int) -> int:
    async with httpx.AsyncClient() as c:
        await asyncio.sleep(0.01 * (3 - i))  # the tasks' requests interleave on the loop's thread
        return (await c.get(f"{base}/json?task={i}")).status_code


async def _fetch_concurrently(base: str) -> list[int]:
    return await asyncio.gather(*(_fetch_async(base, i) for i in range(3)))


def _outputs(s: handit.Session, out: Any) -> dict[str, list[dict[str, Any]]]:
    """The session's events as each output has them: in memory, the trace file or JSONL read back."""
    if out.suffix == ".jsonl":
        filed = [json.loads(line) for line in out.read_text().splitlines()]
    else:
        filed = list(iter_trace(str(out)))
    return {"memory": s.events, out.suffix: [e for e in filed if e.get("session_id") == s.id]}


@pytest.mark.parametrize("fmt", ["handit", "jsonl"])
def test_http_events_linked_to_the_call_that_made_them(server: Server, engine: Any, tmp_path: Any, fmt: str) -> None:
    out = tmp_path / f"trace.{fmt}"
    handit.configure(output_file=str(out))
    with handit.session("link") as s:
        assert _fetch_twice(server.base) == 400
        assert asyncio.run(_fetch_concurrently(server.base)) == [200] * 3
        requests.get(server.base + "/json")  # the test function began before the session: no traced caller
    for where, events in _outputs(s, out).items():
        calls = [e for e in events if e["type"] == "call"]
        ids = {e["func"]: e["call_id"] for e in calls}
        by_task = {e["call_id"]: e["args_preview"].get("i") for e in calls if e["func"] == "_fetch_async"}
        reqs = [e for e in events if e["type"] == "http_request"]
        parents = {r["request_id"]: r["parent_id"] for r in reqs}
        assert len(reqs) == 6, where
        assert [r["parent_id"] for r in reqs[:2]] == [ids["_fetch_twice"], ids["_inner_fetch"]], where
        for r in reqs[2:5]:  # each task's request belongs to its own coroutine, not one suspended then
            assert by_task[r["parent_id"]] == r["url"].rsplit("=", 1)[1], where
        assert reqs[5]["parent_id"] is None, where
        resps = [e for e in events if e["type"] == "http_response"]
        assert len(resps) == 6 and all(r["parent_id"] == parents[r["request_id"]] for r in resps), where


def _open_stream(url: str) -> Any:
    return requests.get(url, stream=True)


@pytest.mark.parametrize("fmt", ["handit", "jsonl"])
def test_answer_finished_after_its_session_still_written_linked(server: Server, tmp_path: Any, fmt: str) -> None:
    out = tmp_path / f"trace.{fmt}"
    handit.configure(output_file=str(out))
    with handit.session("late") as s:
        r = _open_stream(server.base + "/big")
    assert next(r.iter_content(10)) == BIG_TEXT[:10]
    r.close()  # the exchange ends after its session
    handit.sinks.flush_all(final=False)
    events = _outputs(s, out)[out.suffix]
    opener = next(e["call_id"] for e in events if e["type"] == "call" and e["func"] == "_open_stream")
    resps = [e for e in events if e["type"] == "http_response"]
    assert len(resps) == 1 and resps[0]["bytes_in"] == 10 and resps[0]["parent_id"] == opener


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_tls_failure_recorded_with_error(server: Server, client: str) -> None:
    url = f"https://127.0.0.1:{server.port}/json"  # the server speaks plain HTTP: the handshake fails
    plain = _outcome(CLIENTS[client], url)
    with handit.session("tls") as s:
        traced = _outcome(CLIENTS[client], url)
    assert traced is plain and isinstance(plain, type)
    reqs, resps = _http(s)
    assert len(reqs) == 1 and len(resps) == 1
    assert resps[0]["status"] == 0 and "SSL" in resps[0]["error"] and resps[0]["dt_ns"] > 0


def test_exporter_traffic_never_recorded(server: Server, tmp_path: Any) -> None:
    from ingest_server import IngestServer

    with IngestServer() as ingest:
        handit.configure(endpoint=ingest.url, api_key="exporter-key-eeee5555", flush_every_events=1, flush_every_ms=50,
                         spool_dir=str(tmp_path / "spool"))
        with handit.session("exported") as s:
            requests.get(server.base + "/json")
            ingest.wait_for_events(2)  # batches went out while the session ran
            urllib.request.urlopen(server.base + "/json").read()
        exporter = importlib.import_module("handit.sinks")._exporters.pop(ingest.url)
        exporter.flush(10)
        sent = ingest.wait_for_events(6)
        exporter.close()  # its thread ends (the webhook tests check none is left)
    reqs, _ = _http(s)
    assert [r["url"] for r in reqs] == [server.base + "/json"] * 2  # the program's, not the exporter's
    assert [e["url"] for e in sent if e["type"] == "http_request"] == [server.base + "/json"] * 2
    assert all("parent_id" in e for e in sent if e["type"].startswith("http_"))  # linked (no traced caller here)
    assert "exporter-key-eeee5555" not in json.dumps(sent)
