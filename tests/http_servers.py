"""Loopback HTTP servers for the instrumentation tests: plain routes, and fake OpenAI-compatible
and Anthropic-compatible LLM APIs (plain and streamed answers, with usage)."""
from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from typing import Any, Iterator

import pytest

import handit

BINARY = bytes(range(256)) * 800  # 200 KiB, not text
BIG_TEXT = ("lorem ipsum " * 20_000).encode()  # 240 KB


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall
    seen: list[dict[str, Any]] = []  # what the server received (headers and bodies), for leak checks
    gets: list[str] = []  # the paths of every GET received (retries are counted)

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json", extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _chunked(self, chunks: Iterator[bytes], ctype: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def do_GET(self) -> None:
        Handler.gets.append(self.path)
        path = self.path.split("?")[0]
        if path == "/json":
            self._send(200, b'{"ok": true, "token": "tok-in-response-0001", "n": 1}', extra={"Set-Cookie": "sid=cookie-secret-0002"})
        elif path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            self._send(code, b'{"error": "status %d"}' % code)
        elif path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/json")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/slow":
            time.sleep(2)
            self._send(200, b"late")
        elif path == "/chunked":
            self._chunked((b"part-%d;" % i for i in range(5)), "text/plain")
        elif path == "/sse":
            self._chunked((b"data: {\"i\": %d}\n\n" % i for i in range(4)), "text/event-stream")
        elif path == "/binary":
            self._send(200, BINARY, "image/png")
        elif path == "/big":
            self._send(200, BIG_TEXT, "text/plain")
        else:
            self._send(404, b"{}")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Handler.seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
        path = self.path.split("?")[0]
        if path == "/echo":
            self._send(200, body, self.headers.get("Content-Type") or "application/octet-stream")
            return
        request = json.loads(body or b"{}")
        if path.endswith("/chat/completions"):
            self._openai_chat(request)
        elif path.endswith("/embeddings"):
            self._send(200, json.dumps({"object": "list", "model": request["model"], "data": [{"embedding": [0.1, 0.2]}],
                                        "usage": {"prompt_tokens": 4, "total_tokens": 4}}).encode())
        elif path.endswith("/responses"):
            self._send(200, json.dumps({"object": "response", "id": "resp_1", "model": request["model"] + "-2025",
                                        "status": "completed", "output": [],
                                        "usage": {"input_tokens": 9, "output_tokens": 3}}).encode())
        elif path.endswith("/messages"):
            self._anthropic(request)
        else:
            self._send(404, b"{}")

    def _openai_chat(self, request: dict[str, Any]) -> None:
        model = request["model"] + "-0613"
        if not request.get("stream"):
            self._send(200, json.dumps({
                "id": "chatcmpl-1", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}}).encode())
            return

        def chunks() -> Iterator[bytes]:
            for i, word in enumerate(["Hel", "lo", " there"]):
                delta = {"role": "assistant", "content": word} if i == 0 else {"content": word}
                yield b"data: " + json.dumps({"id": "c1", "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}).encode() + b"\n\n"
                time.sleep(0.01)
            yield b"data: " + json.dumps({"id": "c1", "model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}).encode() + b"\n\n"
            yield b"data: " + json.dumps({"id": "c1", "model": model, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}}).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        self._chunked(chunks(), "text/event-stream")

    def _anthropic(self, request: dict[str, Any]) -> None:
        model = request["model"] + "-20250101"
        if not request.get("stream"):
            self._send(200, json.dumps({
                "id": "msg_1", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn",
                "usage": {"input_tokens": 21, "output_tokens": 5}}).encode())
            return

        def chunks() -> Iterator[bytes]:
            events = [
                ("message_start", {"type": "message_start", "message": {"id": "msg_1", "type": "message", "model": model, "usage": {"input_tokens": 21, "output_tokens": 1}}}),
                ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
                ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 7}}),
                ("message_stop", {"type": "message_stop"}),
            ]
            for name, data in events:
                yield b"event: " + name.encode() + b"\ndata: " + json.dumps(data).encode() + b"\n\n"

        self._chunked(chunks(), "text/event-stream")


class _Quiet(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out close early (the timeout tests)


class Server:
    """A threading HTTP server on 127.0.0.1 (context manager)."""

    def __init__(self) -> None:
        self.httpd = _Quiet(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_port
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def refused_port() -> int:
    """A loopback port nothing listens on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """A :class:`Server` for the test module."""
    with Server() as srv:
        yield srv


@pytest.fixture(autouse=True)
def instrumented() -> None:
    """Every client patched (the first session of a process patches only the imported ones)."""
    handit.instrument()
