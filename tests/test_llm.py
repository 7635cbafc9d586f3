"""LLM API calls recognised by path and body shape against fake OpenAI-compatible and
Anthropic-compatible servers on loopback: ``gen_ai.*`` fields, plain and streamed."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import httpx
import pytest
import requests

import handit

from http_servers import Server, instrumented, server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.engine_dependent  # its tests run an engine outside the `engine` fixture



def _llm(session: handit.Session) -> list[dict[str, Any]]:
    return [e.get("llm") for e in session.events if e["type"] == "http_response"]


def _openai_stream_requests(base: str) -> str:
    body = {"model": "gpt-x", "stream": True, "stream_options": {"include_usage": True}, "messages": [{"role": "user", "content": "hi"}]}
    text = ""
    with requests.post(base + "/v1/chat/completions", json=body, stream=True, headers={"Authorization": "Bearer sk-test-abcdefghijklmnop0123"}) as r:
        for line in r.iter_lines():
            if line.startswith(b"data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    text += choice["delta"].get("content", "")
    return text


def _openai_stream_httpx(base: str) -> str:
    body = {"model": "gpt-x", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    text = ""
    with httpx.stream("POST", base + "/v1/chat/completions", json=body) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    text += choice["delta"].get("content", "")
    return text


@pytest.mark.parametrize("cap", [4096, 16])
@pytest.mark.parametrize("reader", [_openai_stream_requests, _openai_stream_httpx], ids=["requests", "httpx"])
def test_openai_chat_streamed(server: Server, reader: Any, cap: int) -> None:
    handit.configure(max_body=cap)
    plain = reader(server.base)
    with handit.session("llm") as s:
        text = reader(server.base)
    assert text == plain == "Hello there"
    (llm,) = _llm(s)
    assert llm["gen_ai.system"] == "openai" and llm["gen_ai.operation.name"] == "chat"
    assert llm["gen_ai.request.model"] == "gpt-x" and llm["gen_ai.response.model"] == "gpt-x-0613"
    assert (llm["gen_ai.usage.input_tokens"], llm["gen_ai.usage.output_tokens"]) == (12, 3)  # the final usage chunk, past the cap
    assert llm["gen_ai.response.finish_reasons"] == ["length"]
    assert llm["gen_ai.streamed"] is True and llm["gen_ai.server.time_to_first_token_ns"] > 0


def test_openai_chat_plain_embeddings_and_responses(server: Server) -> None:
    with handit.session("llm") as s:
        chat = httpx.post(server.base + "/v1/chat/completions", json={"model": "gpt-x", "messages": []}).json()
        requests.post(server.base + "/openai/v1/embeddings", json={"model": "emb-1", "input": "x"})
        requests.post(server.base + "/v1/responses", json={"model": "o-1", "input": "x"})
        requests.post(server.base + "/echo", json={"model": "not-an-llm"})
    assert chat["choices"][0]["message"]["content"] == "Hello there"
    chat_llm, emb, resp, echo = _llm(s)
    assert chat_llm["gen_ai.response.model"] == "gpt-x-0613" and chat_llm["gen_ai.streamed"] is False
    assert (chat_llm["gen_ai.usage.input_tokens"], chat_llm["gen_ai.usage.output_tokens"]) == (12, 2)
    assert chat_llm["gen_ai.response.finish_reasons"] == ["stop"]
    assert emb["gen_ai.operation.name"] == "embeddings" and emb["gen_ai.usage.input_tokens"] == 4
    assert resp["gen_ai.operation.name"] == "responses" and resp["gen_ai.response.model"] == "o-1-2025"
    assert (resp["gen_ai.usage.input_tokens"], resp["gen_ai.usage.output_tokens"]) == (9, 3)
    assert resp["gen_ai.response.finish_reasons"] == ["completed"]
    assert echo is None


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_anthropic_messages(server: Server, stream: bool) -> None:
    body = {"model": "claude-x", "max_tokens": 64, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}

    async def call() -> list[bytes]:
        async with aiohttp.ClientSession(headers={"x-api-key": "sk-ant-api03-secretsecretsecret"}) as a:
            async with a.post(server.base + "/v1/messages", json=body) as r:
                return [line async for line in r.content] if stream else [await r.read()]

    with handit.session("anthropic") as s:
        got = asyncio.run(call())
    assert got
    (llm,) = _llm(s)
    assert llm["gen_ai.system"] == "anthropic" and llm["gen_ai.operation.name"] == "chat"
    assert llm["gen_ai.request.model"] == "claude-x" and llm["gen_ai.response.model"] == "claude-x-20250101"
    assert llm["gen_ai.usage.input_tokens"] == 21
    assert llm["gen_ai.usage.output_tokens"] == (7 if stream else 5)
    assert llm["gen_ai.response.finish_reasons"] == (["max_tokens"] if stream else ["end_turn"])
    assert llm["gen_ai.streamed"] is stream
    assert "sk-ant-api03-secretsecretsecret" not in json.dumps(s.events)


def _ask_and_check(base: str) -> None:
    httpx.post(base + "/v1/chat/completions", json={"model": "gpt-x", "messages": []})
    requests.get(base + "/status/503")


def test_views_list_http_and_llm_calls(server: Server, tmp_path: Any) -> None:
    import io

    from handit.renderers.chrome import ChromeTraceWriter

    with handit.session("views") as s:
        _ask_and_check(server.base)
    text = s.summary()
    assert "HTTP calls" in text and "/v1/chat/completions" in text and "503" in text
    assert "LLM calls" in text and "gpt-x-0613" in text
    assert "2 HTTP calls" in text
    out = io.BytesIO()
    writer = ChromeTraceWriter(out)
    for e in s.events:
        writer.add(e)
    writer.close()
    slices = [e for e in json.loads(out.getvalue())["traceEvents"] if e.get("cat") == "http" and e.get("ph") == "b"]
    assert sorted(e["args"]["status"] for e in slices) == [200, 503]
    chat = next(e for e in slices if e["args"]["status"] == 200)
    assert chat["name"].endswith("/v1/chat/completions → 200") and chat["args"]["gen_ai.usage.input_tokens"] == 12
    from handit.renderers.tree import TreeBuilder

    tree = "\n".join("".join(text for text, _ in line) for line in TreeBuilder().feed(s.events).lines(200))
    assert "└─ _ask_and_check(base=" in tree  # the HTTP calls sit under the call that made them
    assert "   ├─ ⇄ POST " + server.base + "/v1/chat/completions → 200  gpt-x-0613 12→" in tree
    assert "   └─ ⇄ GET " + server.base + "/status/503 → 503" in tree
