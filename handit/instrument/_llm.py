"""Instrumentation stage, LLM part: an HTTP exchange with an OpenAI-compatible or Anthropic API ->
``llm`` fields named after the OpenTelemetry GenAI semantic conventions (``gen_ai.*``).

Recognised by path and body shape, on any host (local servers and proxies count):
``POST .../chat/completions``, ``.../completions``, ``.../responses``, ``.../embeddings``
with a JSON body naming a ``model``, and ``POST .../messages`` with ``model`` and
``max_tokens`` (Anthropic). Streamed answers (server-sent events) are parsed as the
program reads them, chunk by chunk, so the final usage chunk counts even past
``HANDIT_MAX_BODY``.
"""
from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

_OPERATIONS = (
    ("/chat/completions", "chat", "openai"),
    ("/completions", "text_completion", "openai"),
    ("/responses", "responses", "openai"),
    ("/embeddings", "embeddings", "openai"),
    ("/messages", "chat", "anthropic"),
)
_MAX_JSON = 4 * 1024 * 1024  # a non-streamed answer is parsed whole up to this size


def recognise(method: str, url: str, body: bytes | None) -> LlmParser | None:
    """An :class:`LlmParser` if this request is an LLM API call, else None.

    Args:
        method: the HTTP method.
        url: the request URL.
        body: the request body, if known.
    """
    if method != "POST" or not body or body[:1] not in (b"{", b" ", b"\n"):
        return None
    path = urlsplit(url).path.rstrip("/")
    for suffix, operation, system in _OPERATIONS:
        if path.endswith(suffix):
            break
    else:
        return None
    try:
        request = json.loads(body)
    except ValueError:
        return None
    if not isinstance(request, dict) or not isinstance(request.get("model"), str):
        return None
    if system == "anthropic" and "max_tokens" not in request:
        return None
    return LlmParser(system, operation, request)


class LlmParser:
    """Collects the ``gen_ai.*`` fields of one call from the answer's bytes as they are read."""

    __slots__ = ("system", "operation", "fields", "streamed", "_line", "_json", "_json_size", "_first_token_seen")

    def __init__(self, system: str, operation: str, request: dict[str, Any]) -> None:
        self.system = system
        self.operation = operation
        self.streamed = bool(request.get("stream"))
        self.fields: dict[str, Any] = {
            "gen_ai.system": system,
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": request["model"],
        }
        for key, name in (("max_tokens", "gen_ai.request.max_tokens"), ("temperature", "gen_ai.request.temperature")):
            if isinstance(request.get(key), (int, float)):
                self.fields[name] = request[key]
        self._line = b""
        self._json: list[bytes] = []
        self._json_size = 0
        self._first_token_seen = False

    def feed(self, chunk: bytes) -> None:
        """One chunk of the answer, in order."""
        if self.streamed:
            data = self._line + chunk
            lines = data.split(b"\n")
            self._line = lines.pop()
            for line in lines:
                self._sse_line(line.strip())
        elif self._json_size < _MAX_JSON:
            self._json.append(chunk)
            self._json_size += len(chunk)

    def _sse_line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return
        payload = line[5:].strip()
        if not payload or payload == b"[DONE]":
            return
        try:
            event = json.loads(payload)
        except ValueError:
            return
        if isinstance(event, dict):
            self._absorb(event, streamed=True)

    def _absorb(self, obj: dict[str, Any], streamed: bool) -> None:
        fields = self.fields
        kind = obj.get("type")
        if kind == "message_start" and isinstance(obj.get("message"), dict):  # Anthropic stream
            self._absorb(obj["message"], streamed)
            return
        if kind in ("response.completed", "response.incomplete", "response.failed") and isinstance(obj.get("response"), dict):
            self._absorb(obj["response"], streamed)  # Responses API stream
            return
        if isinstance(obj.get("delta"), dict) and kind == "message_delta":
            reason = obj["delta"].get("stop_reason")
            if reason:
                fields["gen_ai.response.finish_reasons"] = [reason]
        if isinstance(obj.get("model"), str):
            fields["gen_ai.response.model"] = obj["model"]
        if isinstance(obj.get("id"), str):
            fields["gen_ai.response.id"] = obj["id"]
        usage = obj.get("usage")
        if isinstance(usage, dict):
            for keys, name in ((("prompt_tokens", "input_tokens"), "gen_ai.usage.input_tokens"),
                               (("completion_tokens", "output_tokens"), "gen_ai.usage.output_tokens")):
                for key in keys:
                    if isinstance(usage.get(key), int):
                        fields[name] = usage[key]
        reasons = [c.get("finish_reason") for c in obj.get("choices") or () if isinstance(c, dict) and c.get("finish_reason")]
        if reasons:
            fields["gen_ai.response.finish_reasons"] = reasons
        if isinstance(obj.get("stop_reason"), str):
            fields["gen_ai.response.finish_reasons"] = [obj["stop_reason"]]
        if self.operation == "responses" and isinstance(obj.get("status"), str) and obj.get("object") == "response":
            fields["gen_ai.response.finish_reasons"] = [obj["status"]]

    def result(self, first_byte_ns: int, content_type: str) -> dict[str, Any]:
        """The ``llm`` fields once the answer is complete.

        Args:
            first_byte_ns: nanoseconds from the request to the first body bytes the program read
                (the time to first token of a stream).
            content_type: the answer's Content-Type.
        """
        if "event-stream" in content_type.lower() and not self.streamed:
            self.streamed = True  # the request did not say so: parse what was kept as lines
            for chunk in self._json:
                self.feed(chunk)
            self._json = []
        if self.streamed:
            if self._line:
                self._sse_line(self._line.strip())
                self._line = b""
            if first_byte_ns:
                self.fields["gen_ai.server.time_to_first_token_ns"] = first_byte_ns
        elif self._json:
            try:
                obj = json.loads(b"".join(self._json))
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                self._absorb(obj, streamed=False)
            self._json = []
        self.fields["gen_ai.streamed"] = self.streamed
        return self.fields
