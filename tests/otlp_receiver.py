"""A loopback OTLP/HTTP trace receiver for the OpenTelemetry tests and benchmark: decodes the protobuf
with ``opentelemetry-proto`` and keeps the spans; can answer 503 first, or hang."""
from __future__ import annotations

import gzip
import http.server
import threading
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse


class Receiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1: ``/v1/traces`` protobuf, decoded and kept.

    Args:
        fail_first: answer this many requests 503 before accepting.
        hang: hold every request until the test ends, answering nothing.
    """

    def __init__(self, fail_first: int = 0, hang: bool = False) -> None:
        self.fail_first, self.hang = fail_first, hang
        self.attempts = 0
        self.accepted: list[dict[str, Any]] = []  # one dict per accepted span
        self.resources: list[dict[str, Any]] = []
        self.release = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.received(self, body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def received(self, handler: Any, body: bytes) -> None:
        self.attempts += 1
        if self.hang:
            self.release.wait(120)
            return
        if handler.path != "/v1/traces" or self.attempts <= self.fail_first:
            handler.send_response(503 if handler.path == "/v1/traces" else 404)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            self.resources.append({a.key: a.value.string_value for a in resource_spans.resource.attributes})
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.accepted.append({
                        "name": span.name, "span_id": span.span_id.hex(), "parent": span.parent_span_id.hex(),
                        "trace_id": span.trace_id.hex(), "scope": scope_spans.scope.name,
                        "attrs": {a.key: a.value for a in span.attributes},
                    })
        answer = ExportTraceServiceResponse().SerializeToString()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/x-protobuf")
        handler.send_header("Content-Length", str(len(answer)))
        handler.end_headers()
        handler.wfile.write(answer)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
