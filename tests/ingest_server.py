"""A real HTTP ingest endpoint on loopback for tests: gzip JSONL batches in, recorded and deduplicated on X-Handit-Batch-Id.

Usage::

    with IngestServer() as server:
        server.script(Answer(500), Answer(429, retry_after="1"), Answer(delay=2.0))
        ...  # point an exporter at server.url
        server.wait_for_events(100)

Answers are used one per request, in order; once the script is used up every
request gets ``default`` (200). ``stop()`` closes the listening socket, so the
endpoint is down (connection refused); ``start()`` brings it back on the same port.
"""
from __future__ import annotations

import gzip
import json
import sys
import threading
import traceback
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Answer", "IngestServer", "Received"]


@dataclass(frozen=True)
class Answer:
    """How the server answers one request.

    Attributes:
        status: the HTTP status. A 2xx accepts the batch.
        retry_after: value of a Retry-After header, if any.
        delay: seconds to sleep after reading (and, for a 2xx, recording) the batch
            and before answering: a slow endpoint, so a client may time out and resend.
    """

    status: int = 200
    retry_after: str | None = None
    delay: float = 0.0


@dataclass
class Received:
    """One request as the server saw it."""

    batch_id: str | None
    headers: dict[str, str]
    body: bytes
    events: list[dict[str, Any]] | None
    status: int
    duplicate: bool = False
    error: str | None = None
    at: float = field(default_factory=time.monotonic)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        ingest = self.server.ingest
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        answer = ingest._next_answer()
        status = answer.status
        events = error = None
        try:
            data = gzip.decompress(body) if self.headers.get("Content-Encoding") == "gzip" else body
            events = [json.loads(line) for line in data.decode("utf-8").split("\n") if line]
        except (OSError, EOFError, ValueError) as exc:  # BadGzipFile is an OSError
            error, status = repr(exc), 400
        ingest._record(Received(self.headers.get("X-Handit-Batch-Id"), dict(self.headers.items()), body,
                                events, status, error=error))
        if answer.delay:
            time.sleep(answer.delay)
        try:
            self.send_response(status)
            if answer.retry_after is not None:
                self.send_header("Retry-After", answer.retry_after)
            self.send_header("Content-Length", "0")
            self.end_headers()
        except OSError:  # the client gave up waiting (a timeout test)
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class signature
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    ingest: IngestServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return  # a client that timed out and closed its socket is expected here
        self.ingest._handler_error("".join(traceback.format_exc()))


class IngestServer:
    """A loopback HTTP server that records ingest batches (see the module docstring).

    Attributes:
        requests: every request, in arrival order.
        events: the events of accepted batches, each batch once (deduplicated on its id).
        duplicates: accepted requests whose batch id had been accepted before.
        handler_errors: tracebacks of exceptions in the request handler (a bug in this
            server or a request it cannot parse); also printed to stderr. The test
            fixtures assert it stays empty.
    """

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.default = Answer()
        self.requests: list[Received] = []
        self.events: list[dict[str, Any]] = []
        self.duplicates = 0
        self.handler_errors: list[str] = []
        self._accepted: set[str] = set()
        self._script: deque[Answer] = deque()
        self._cond = threading.Condition()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ingest"

    def start(self) -> IngestServer:
        """Listen (again) on 127.0.0.1, on the same port after the first start; no-op while running."""
        if self._httpd is not None:
            return self
        httpd = _HTTPServer(("127.0.0.1", self.port), _Handler)
        httpd.ingest = self
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), name="ingest-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listening socket: connections are refused until start()."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            assert self._thread is not None
            self._thread.join(5)
            self._httpd = None

    def __enter__(self) -> IngestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(self, *answers: Answer) -> None:
        """Queue answers for the next requests, one each."""
        with self._cond:
            self._script.extend(answers)

    def clear_script(self) -> None:
        """Drop the answers not used yet: every request gets ``default`` from now on."""
        with self._cond:
            self._script.clear()

    def wait_for_events(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` events were accepted; returns them (a copy)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.events) < count and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            return list(self.events)

    def _next_answer(self) -> Answer:
        with self._cond:
            return self._script.popleft() if self._script else self.default

    def _handler_error(self, text: str) -> None:
        with self._cond:
            self.handler_errors.append(text)
        sys.stderr.write(f"ingest server: handler error\n{text}")

    def _record(self, received: Received) -> None:
        with self._cond:
            if 200 <= received.status < 300 and received.events is not None:
                if received.batch_id is not None and received.batch_id in self._accepted:
                    received.duplicate = True
                    self.duplicates += 1
                else:
                    if received.batch_id is not None:
                        self._accepted.add(received.batch_id)
                    self.events.extend(received.events)
            self.requests.append(received)
            self._cond.notify_all()
