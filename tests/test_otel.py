"""OpenTelemetry export (HANDIT_OTEL) read back from the SDK's in-memory exporter: the span tree, code.*
attributes, previews, error status, the incoming traceparent, min-duration folding, the span cap, HTTP
CLIENT spans with the traceparent the server received, LLM spans, and middleware SERVER spans."""
from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any, Iterator

import aiohttp
import httpx
import pytest
import requests
import urllib3
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import handit
from handit.middleware import HanditASGIMiddleware, HanditWSGIMiddleware
from handit.otel.export import exporter

from http_servers import Handler, Server, instrumented, server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.engine_dependent  # sessions with the run's default engine, in both passes

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"

_memory = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider() -> TracerProvider:
    """The application's TracerProvider: set once per process (OpenTelemetry allows no second one)."""
    current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):
        current = TracerProvider()
        trace.set_tracer_provider(current)
    current.add_span_processor(SimpleSpanProcessor(_memory))
    return current


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """HANDIT_OTEL on; the in-memory exporter, emptied."""
    handit.configure(otel=True)
    _memory.clear()
    yield _memory


def finished(session: handit.Session) -> list[ReadableSpan]:
    """The spans of ``session``'s trace once the exporter thread has made them."""
    assert exporter(handit.get_config()).flush(30)
    return [s for s in _memory.get_finished_spans() if f"{s.context.trace_id:032x}" == session.trace_id]


def by_name(spans: list[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for s in spans:
        out.setdefault(s.name, []).append(s)
    return out


def root_of(spans: list[ReadableSpan], session: handit.Session) -> ReadableSpan:
    (root,) = [s for s in spans if f"{s.context.span_id:016x}" == session.span_id]
    return root


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


# -- the program traced ---------------------------------------------------------------------------


def leaf(x: int) -> int:
    return x * 2


def fails(message: str) -> None:
    raise ValueError(message)


def middle(n: int) -> int:
    total = sum(leaf(i) for i in range(n))
    try:
        fails("no good")
    except ValueError:
        pass
    return total


def outer() -> int:
    return middle(3)


def sleeper(ms: float) -> None:
    time.sleep(ms / 1000)


def slow_with_fast_children(n: int) -> None:
    for i in range(n):
        leaf(i)
    sleeper(30)


# -- structure -------------------------------------------------------------------------------------


def test_session_tree_code_attributes_previews(spans: Any, engine: Any) -> None:
    with handit.session("tree", attrs={"user": "42"}) as s:
        assert outer() == 6
    got = finished(s)
    names = by_name(got)
    assert sorted(names) == ["fails", "leaf", "middle", "outer", "tree"]
    root = root_of(got, s)
    assert root.name == "tree" and root.parent is None and root.kind is SpanKind.INTERNAL
    assert root.attributes["handit.session.id"] == s.id and root.attributes["user"] == "42"
    assert root.attributes["handit.calls"] == 6 and root.attributes["handit.otel.spans_cut"] == 0
    assert root.start_time == s.t0_ns and root.end_time == s.t1_ns
    (out,), (mid,), (bad,) = names["outer"], names["middle"], names["fails"]
    assert parent_of(out) == root.context.span_id
    assert parent_of(mid) == out.context.span_id and parent_of(bad) == mid.context.span_id
    assert [parent_of(x) for x in names["leaf"]] == [mid.context.span_id] * 3
    assert mid.attributes["code.function.name"] == f"{__name__}.middle"
    assert mid.attributes["code.file.path"] == __file__
    assert mid.attributes["code.line.number"] == middle.__code__.co_firstlineno
    assert mid.attributes["handit.args.n"] == "3" and mid.attributes["handit.return"] == "6"
    assert sorted(x.attributes["handit.args.x"] for x in names["leaf"]) == ["0", "1", "2"]
    assert mid.start_time <= bad.start_time <= bad.end_time <= mid.end_time
    assert all(x.context.trace_id == int(s.trace_id, 16) for x in got)


def test_exception_is_error_status_with_the_exception_recorded(spans: Any, engine: Any) -> None:
    with handit.session("errors") as s:
        outer()
        with pytest.raises(ValueError):
            fails("token=abc the api_key is sk-proj-0123456789abcdefghijklmn")
    names = by_name(finished(s))
    recorded = {e["call_id"]: e for e in s.events if e["type"] == "exception"}
    assert len(names["fails"]) == 2 and len(recorded) == 2
    for span in names["fails"]:
        assert span.status.status_code is StatusCode.ERROR
        (event,) = span.events
        exc = recorded[span.attributes["handit.call_id"]]  # what the session recorded (redacted), as recorded
        assert event.name == "exception" and event.timestamp == span.end_time
        assert (event.attributes["exception.type"], event.attributes["exception.message"]) == (exc["type_name"], exc["message"])
        assert "sk-proj-0123456789abcdefghijklmn" not in span.status.description
    assert names["middle"][0].status.status_code is StatusCode.UNSET


def test_incoming_traceparent_is_the_root_span_parent(spans: Any) -> None:
    with handit.session("joined", traceparent=f"00-{TRACE_ID}-{PARENT_ID}-01") as s:
        leaf(1)
    got = finished(s)
    root = root_of(got, s)
    assert f"{root.context.trace_id:032x}" == TRACE_ID and f"{parent_of(root):016x}" == PARENT_ID
    assert root.parent.is_remote
    with handit.session("not sampled upstream", traceparent=f"00-{TRACE_ID[::-1]}-{PARENT_ID}-00") as s:
        leaf(1)
    assert finished(s) == []  # the application's sampler follows the upstream decision


def test_active_opentelemetry_span_and_enclosing_session_are_parents(spans: Any) -> None:
    tracer = trace.get_tracer("app")
    with tracer.start_as_current_span("request") as app_span:
        with handit.session("inside otel") as s:
            with handit.session("nested") as inner:
                leaf(2)
    ctx = app_span.get_span_context()
    assert s.trace_id == f"{ctx.trace_id:032x}" and s.parent_span_id == f"{ctx.span_id:016x}"
    root = root_of(finished(s), s)
    assert parent_of(root) == ctx.span_id
    nested = root_of(finished(inner), inner)
    assert parent_of(nested) == root.context.span_id


# -- no span explosion ------------------------------------------------------------------------------


def test_short_calls_fold_into_their_parent(spans: Any, engine: Any) -> None:
    handit.configure(otel_min_duration=0.01)
    with handit.session("fold") as s:
        slow_with_fast_children(25)
    got = finished(s)
    names = by_name(got)
    assert sorted(names) == ["fold", "sleeper", "slow_with_fast_children"]
    (slow,) = names["slow_with_fast_children"]
    assert slow.attributes["handit.folded_calls"] == 25  # the 25 leaf calls, counted where they ran
    root = root_of(got, s)
    assert root.attributes["handit.otel.calls_folded"] == 25 and root.attributes["handit.calls"] == 27


def test_span_cap_keeps_the_longest_and_counts_the_cut(spans: Any, engine: Any) -> None:
    handit.configure(otel_max_spans=6)
    with handit.session("cap") as s:
        for ms in (1, 12, 2, 10, 3, 11, 4, 13, 5, 14):
            sleeper(ms)
        for i in range(30):
            leaf(i)
    got = finished(s)
    assert len(got) == 6
    root = root_of(got, s)
    assert root.attributes["handit.otel.spans_cut"] == 40 - 5 and root.attributes["handit.calls"] == 40
    kept = sorted(round((x.end_time - x.start_time) / 1e6) for x in got if x is not root)
    assert len(kept) == 5 and min(kept) >= 10  # the five longest sleeps (10-14 ms) are the ones kept
    assert all(parent_of(x) == root.context.span_id for x in got if x is not root)


# -- HTTP, LLM, middleware ----------------------------------------------------------------------------


def _post_requests(url: str) -> None:
    requests.post(url, json={"q": 1})


def _post_httpx(url: str) -> None:
    httpx.post(url, json={"q": 1})


def _post_urllib(url: str) -> None:
    request = urllib.request.Request(url, data=b'{"q": 1}', headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request).read()
    assert not request.has_header("Traceparent")  # the program's own Request object is left alone


def _post_urllib3(url: str) -> None:
    urllib3.PoolManager().request("POST", url, body=b'{"q": 1}', headers={"Content-Type": "application/json"})


def _post_aiohttp(url: str) -> None:
    async def go() -> None:
        async with aiohttp.ClientSession() as c:
            async with c.post(url, json={"q": 1}) as r:
                await r.read()

    asyncio.run(go())


def calls_server(post: Any, url: str) -> None:
    post(url)


@pytest.mark.parametrize("post", [_post_requests, _post_httpx, _post_urllib, _post_urllib3, _post_aiohttp],
                         ids=["requests", "httpx", "urllib", "urllib3", "aiohttp"])
def test_http_call_is_a_client_span_and_sends_its_traceparent(spans: Any, server: Server, post: Any) -> None:
    Handler.seen.clear()
    with handit.session("client") as s:
        calls_server(post, f"{server.base}/echo?n=1")
    got = finished(s)
    (client,) = [x for x in got if x.kind is SpanKind.CLIENT]
    innermost = post.__name__ + (".<locals>.go" if post is _post_aiohttp else "")  # the coroutine that awaited it
    (caller,) = by_name(got)[innermost]
    assert parent_of(client) == caller.context.span_id
    assert client.name == "POST" and client.attributes["http.request.method"] == "POST"
    assert client.attributes["url.full"] == f"{server.base}/echo?n=1"
    assert client.attributes["http.response.status_code"] == 200 and client.attributes["server.port"] == server.port
    (seen,) = Handler.seen
    sent = {k.lower(): v for k, v in seen["headers"].items()}["traceparent"]
    assert sent == f"00-{s.trace_id}-{client.context.span_id:016x}-01"  # downstream joins as the CLIENT span's child


def test_no_traceparent_sent_without_otel(server: Server) -> None:
    Handler.seen.clear()
    with handit.session("plain"):
        _post_requests(f"{server.base}/echo")
    assert "traceparent" not in {k.lower() for k in Handler.seen[0]["headers"]}


def test_program_traceparent_is_kept(spans: Any, server: Server) -> None:
    Handler.seen.clear()
    mine = f"00-{TRACE_ID}-{PARENT_ID}-01"
    with handit.session("own header"):
        requests.post(f"{server.base}/echo", json={}, headers={"traceparent": mine})
    assert {k.lower(): v for k, v in Handler.seen[0]["headers"].items()}["traceparent"] == mine


def test_failed_http_call_is_an_error_span(spans: Any) -> None:
    from http_servers import refused_port

    with handit.session("refused") as s:
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{refused_port()}/x")
    (client,) = [x for x in finished(s) if x.kind is SpanKind.CLIENT]
    assert client.status.status_code is StatusCode.ERROR and client.attributes["error.type"] == "ConnectionError"


def test_llm_call_has_gen_ai_and_openinference_attributes(spans: Any, server: Server) -> None:
    body = {"model": "gpt-x", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    with handit.session("llm") as s:
        answer = requests.post(f"{server.base}/v1/chat/completions", json=body,
                               headers={"Authorization": "Bearer sk-test-abcdefghijklmnop0123"}).json()
    assert answer["choices"][0]["message"]["content"] == "Hello there"
    (llm,) = [x for x in finished(s) if x.kind is SpanKind.CLIENT]
    a = llm.attributes
    assert llm.name == "chat gpt-x"
    assert (a["gen_ai.provider.name"], a["gen_ai.system"], a["gen_ai.operation.name"]) == ("openai", "openai", "chat")
    assert (a["gen_ai.request.model"], a["gen_ai.response.model"]) == ("gpt-x", "gpt-x-0613")
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"], a["gen_ai.request.max_tokens"]) == (12, 2, 20)
    assert tuple(a["gen_ai.response.finish_reasons"]) == ("stop",)
    assert a["openinference.span.kind"] == "LLM" and a["llm.model_name"] == "gpt-x-0613" and a["llm.provider"] == "openai"
    assert (a["llm.token_count.prompt"], a["llm.token_count.completion"], a["llm.token_count.total"]) == (12, 2, 14)
    assert json.loads(a["input.value"])["messages"][0]["content"] == "hi" and a["input.mime_type"] == "application/json"
    assert json.loads(a["output.value"])["choices"][0]["message"]["content"] == "Hello there"
    assert "sk-test-abcdefghijklmnop0123" not in json.dumps(dict(a))


def _wsgi(environ: dict, start_response: Any) -> Any:
    code = environ["PATH_INFO"].strip("/")
    leaf(int(code))
    start_response(f"{code} X", [("Content-Type", "text/plain")])
    return [b"done"]


def _when_ended(ended: list[handit.Session]) -> list[handit.Session]:
    """The request's session, once the drain thread has finished it (the middleware stops it in the background)."""
    deadline = time.monotonic() + 10
    while not ended and time.monotonic() < deadline:
        time.sleep(0.005)
    return ended


@pytest.mark.parametrize("code", [200, 503])
def test_middleware_session_is_a_server_span_joining_the_request(spans: Any, code: int) -> None:
    ended: list[handit.Session] = []
    app = HanditWSGIMiddleware(_wsgi, on_end=ended.append)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": f"/{code}", "HTTP_TRACEPARENT": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    body = app(environ, lambda status, headers: None)
    assert list(body) == [b"done"]
    body.close()
    (s,) = _when_ended(ended)
    got = finished(s)
    root = root_of(got, s)
    assert root.kind is SpanKind.SERVER and root.name == f"GET /{code}"
    assert f"{parent_of(root):016x}" == PARENT_ID and root.attributes["http.response.status_code"] == code
    assert root.attributes["http.request.method"] == "GET"
    assert root.status.status_code is (StatusCode.ERROR if code >= 500 else StatusCode.UNSET)
    assert [x.name for x in got if parent_of(x) == root.context.span_id] == ["_wsgi"]


def test_asgi_session_is_a_server_span_with_the_response_status(spans: Any) -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        leaf(1)
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"made"})

    ended: list[handit.Session] = []
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/items", "headers": [(b"traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01".encode())]}
    asyncio.run(HanditASGIMiddleware(app, on_end=ended.append)(scope, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]  # passed through as sent
    (s,) = _when_ended(ended)
    root = root_of(finished(s), s)
    assert root.kind is SpanKind.SERVER and root.name == "POST /items" and f"{parent_of(root):016x}" == PARENT_ID
    assert root.attributes["http.response.status_code"] == 201 and root.status.status_code is StatusCode.UNSET


def _call(cid: int, parent: int | None, t0: int) -> dict:
    return {"type": "call", "call_id": cid, "parent_id": parent, "func": f"f{cid}", "module": "m", "file": "m.py",
            "line": 1, "t0_ns": t0, "thread": 1}


def _ret(cid: int, t1: int) -> dict:
    return {"type": "return", "call_id": cid, "t1_ns": t1}


def test_cut_call_hands_its_kept_children_and_folded_count_to_its_parent() -> None:
    from handit.otel.tree import CallTree

    # 1 [0, 100] > 2 [10, 40] > 3 [11, 38] > 4 [12, 13] (folded: min 5); 5 [20, 90] on another thread,
    # started by 2 (as a task would be) and outliving it. The cap of 2 keeps 1 and 5; 2 and 3 are cut.
    tree = CallTree(min_duration_ns=5, max_calls=2)
    tree.feed([_call(1, None, 0), _call(2, 1, 10), _call(3, 2, 11), _call(4, 3, 12), _ret(4, 13)])
    tree.feed([{**_call(5, 2, 20), "thread": 2}, _ret(3, 38), _ret(2, 40), _ret(5, 90), _ret(1, 100)])
    root = tree.finish()
    (one,) = root.children
    assert one.call_id == 1 and [n.call_id for n in one.children] == [5] and one.children[0].parent is one
    assert one.folded == 1  # 4, folded into 3, which was cut: counted on 3's nearest kept ancestor
    assert (tree.calls, tree.folded, tree.cut) == (5, 1, 2)
