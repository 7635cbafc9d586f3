"""OpenTelemetry stage, the spans: a finished session's kept calls and HTTP exchanges -> spans made through
the OpenTelemetry API after the fact, with the times the session recorded.

Span names and attributes follow the current semantic conventions: ``code.function.name``,
``code.file.path``, ``code.line.number`` for calls; ``http.*``, ``url.full``, ``server.*``
for HTTP client spans; ``gen_ai.*`` for LLM calls, with the OpenInference attributes
(``openinference.span.kind``, ``llm.*``, ``input.value``/``output.value``) that Phoenix reads.
"""
from __future__ import annotations

import bisect
import json
import os
import threading
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from .tree import CallNode, CallTree

__all__ = ["PresetIds", "emit_session", "http_exchanges", "tracer_for"]

_SCOPE = "handit"


class PresetIds:
    """An SDK id generator for handit's own tracer: the next ids asked for in this thread are the ones
    set with :meth:`preset` (the session's trace and span ids, the span id a request's ``traceparent``
    announced); every other id comes from the generator the provider gave the tracer."""

    def __init__(self, fallback: Any) -> None:
        self.fallback = fallback
        self._local = threading.local()

    def preset(self, trace_id: int | None, span_id: int | None) -> None:
        """Ids for the next span started in this thread (None: the fallback's)."""
        self._local.trace_id, self._local.span_id = trace_id, span_id

    def generate_trace_id(self) -> int:
        value = getattr(self._local, "trace_id", None)
        self._local.trace_id = None
        return value if value else self.fallback.generate_trace_id()  # type: ignore[no-any-return]

    def generate_span_id(self) -> int:
        value = getattr(self._local, "span_id", None)
        self._local.span_id = None
        return value if value else self.fallback.generate_span_id()  # type: ignore[no-any-return]

    def is_trace_id_random(self) -> bool:
        return bool(getattr(self.fallback, "is_trace_id_random", lambda: True)())


def tracer_for(provider: Any, version: str) -> tuple[Any, PresetIds | None]:
    """handit's tracer from ``provider``, with :class:`PresetIds` when it is the SDK's (it has an
    ``id_generator``); only this tracer's generator is changed, never the provider's."""
    tracer = provider.get_tracer(_SCOPE, version)
    fallback = getattr(tracer, "id_generator", None)
    if fallback is None:
        return tracer, None
    if not isinstance(fallback, PresetIds):
        tracer.id_generator = fallback = PresetIds(fallback)
    return tracer, fallback


def http_exchanges(extra: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """``(http_request, http_response or None)`` pairs of a session's extra events, in request order."""
    responses = {e.get("request_id"): e for e in extra if e.get("type") == "http_response"}
    return [(e, responses.get(e.get("request_id"))) for e in extra if e.get("type") == "http_request"]


def _flags(session: Any) -> TraceFlags:
    text = getattr(session, "traceparent", None) or ""
    try:
        return TraceFlags(int(text.strip()[-2:], 16) & 0x01) if session.parent_span_id else TraceFlags(TraceFlags.SAMPLED)
    except ValueError:
        return TraceFlags(TraceFlags.SAMPLED)


def _root_context(session: Any) -> Any:
    """The context the session's root span starts in: its remote parent, or none."""
    if not session.parent_span_id:
        return context_api.Context()
    parent = SpanContext(int(session.trace_id, 16), int(session.parent_span_id, 16), is_remote=True, trace_flags=_flags(session))
    return trace.set_span_in_context(NonRecordingSpan(parent), context_api.Context())


def _start(tracer: Any, ids: PresetIds | None, name: str, ctx: Any, kind: SpanKind, t0: int,
           attrs: dict[str, Any], trace_id: str | None = None, span_id: str | None = None) -> Any:
    if ids is not None:
        ids.preset(int(trace_id, 16) if trace_id else None, int(span_id, 16) if span_id else None)
    return tracer.start_span(name, context=ctx, kind=kind, attributes=attrs, start_time=t0)


def _call_attrs(node: CallNode) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "code.function.name": f"{node.module}.{node.func}" if node.module else node.func,
        "code.file.path": node.file,
        "code.line.number": node.line,
        "thread.id": node.thread,
        "handit.call_id": node.call_id,
    }
    for name, preview in node.args.items():
        attrs[f"handit.args.{name}"] = preview
    if node.args:
        attrs["input.value"] = json.dumps(node.args, ensure_ascii=False)
    if "return" in node.ret:
        attrs["handit.return"] = attrs["output.value"] = node.ret["return"]
    if node.folded:
        attrs["handit.folded_calls"] = node.folded
    for flag, value in node.flags.items():
        attrs[f"handit.{flag}"] = value
    return attrs


def _end_call(span: Any, node: CallNode) -> None:
    if node.error is not None:
        type_name, message = node.error
        span.add_event("exception", {"exception.type": type_name, "exception.message": message}, timestamp=node.t1)
        span.set_status(Status(StatusCode.ERROR, f"{type_name}: {message}" if message else type_name))
    span.end(end_time=node.t1)


def _http_attrs(request: dict[str, Any], response: dict[str, Any] | None) -> tuple[str, dict[str, Any], str | None]:
    """The span name, attributes and error (None: none) of one exchange."""
    method, url = request.get("method") or "GET", request.get("url") or ""
    attrs: dict[str, Any] = {"http.request.method": method, "url.full": url, "handit.http.request_id": request.get("request_id") or 0}
    try:
        parts = urlsplit(url)
        if parts.hostname:
            attrs["server.address"] = parts.hostname
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
        if port:
            attrs["server.port"] = port
    except ValueError:
        pass
    attrs["http.request.body.size"] = request.get("bytes_out") or 0
    error = None
    if response is None:
        error = "no answer recorded"
    else:
        status = response.get("status") or 0
        attrs["http.response.body.size"] = response.get("bytes_in") or 0
        if status:
            attrs["http.response.status_code"] = status
        if response.get("error"):
            error = str(response["error"])
            attrs["error.type"] = error.split(":", 1)[0]
        elif status >= 400:
            error = f"HTTP {status}"
            attrs["error.type"] = str(status)
    name = method
    llm = (response or {}).get("llm")
    if isinstance(llm, dict):
        name = _llm_attrs(attrs, llm, request, response or {})
    return name, attrs, error


def _mime(text: str) -> str:
    try:
        json.loads(text)
    except ValueError:
        return "text/plain"
    return "application/json"


def _llm_attrs(attrs: dict[str, Any], llm: dict[str, Any], request: dict[str, Any], response: dict[str, Any]) -> str:
    """Add the ``gen_ai.*`` and OpenInference attributes of an LLM call; returns the span name."""
    for key, value in llm.items():
        if key == "gen_ai.server.time_to_first_token_ns":
            attrs["gen_ai.response.time_to_first_chunk"] = value / 1e9  # seconds in the conventions
        elif isinstance(value, (str, bool, int, float)) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            attrs[key] = value
    system = llm.get("gen_ai.system") or ""
    operation = llm.get("gen_ai.operation.name") or "chat"
    model = llm.get("gen_ai.response.model") or llm.get("gen_ai.request.model") or ""
    attrs["gen_ai.provider.name"] = system  # the current name of gen_ai.system (kept too, for older readers)
    if "gen_ai.streamed" in llm:
        attrs["gen_ai.request.stream"] = bool(llm["gen_ai.streamed"])
    attrs["openinference.span.kind"] = "EMBEDDING" if operation == "embeddings" else "LLM"
    attrs["llm.system"] = attrs["llm.provider"] = system
    attrs["embedding.model_name" if operation == "embeddings" else "llm.model_name"] = model
    prompt, completion = llm.get("gen_ai.usage.input_tokens"), llm.get("gen_ai.usage.output_tokens")
    if isinstance(prompt, int):
        attrs["llm.token_count.prompt"] = prompt
    if isinstance(completion, int):
        attrs["llm.token_count.completion"] = completion
    if isinstance(prompt, int) or isinstance(completion, int):
        attrs["llm.token_count.total"] = (prompt or 0) + (completion or 0)
    params = {k.rsplit(".", 1)[1]: v for k, v in llm.items() if k in ("gen_ai.request.max_tokens", "gen_ai.request.temperature")}
    if params:
        attrs["llm.invocation_parameters"] = json.dumps(params)
    for side, body in (("input", request.get("request_body")), ("output", response.get("response_body"))):
        if isinstance(body, str):
            attrs[f"{side}.value"] = body
            attrs[f"{side}.mime_type"] = _mime(body)
    return f"{operation} {llm.get('gen_ai.request.model') or model}".strip()


class _Threads:
    """Kept calls by thread, sorted by start: the innermost kept call open at a moment."""

    def __init__(self, nodes: list[CallNode]) -> None:
        self.by_thread: dict[int, tuple[list[int], list[CallNode]]] = {}
        for node in sorted(nodes, key=lambda n: n.t0):
            starts, items = self.by_thread.setdefault(node.thread, ([], []))
            starts.append(node.t0)
            items.append(node)

    def innermost(self, thread: int, t: int) -> CallNode | None:
        starts, items = self.by_thread.get(thread, ((), ()))  # type: ignore[assignment]
        i = bisect.bisect_right(starts, t) - 1
        node = items[i] if i >= 0 else None
        while node is not None and node.call_id and (node.t1 < t or node.thread != thread):
            node = node.parent
        return node if node is not None and node.call_id else None


def emit_session(tracer: Any, ids: PresetIds | None, session: Any, tree: CallTree,
                 exchanges: list[tuple[dict[str, Any], dict[str, Any] | None]], http_cut: int) -> int:
    """Make the spans of one finished session; returns how many were made.

    Args:
        tracer: handit's tracer (see :func:`tracer_for`).
        ids: its id generator, or None when the provider is not the SDK's.
        session: the finished :class:`handit.Session`.
        tree: its finished :class:`CallTree`.
        exchanges: the HTTP exchanges kept (see :func:`http_exchanges`).
        http_cut: exchanges the span cap removed.
    """
    root = tree.root
    kind = SpanKind.SERVER if getattr(session, "span_kind", None) == "server" else SpanKind.INTERNAL
    attrs: dict[str, Any] = dict(session.attrs)
    attrs.update({
        "handit.session.id": session.id, "handit.calls": tree.calls, "handit.otel.calls_folded": tree.folded,
        "handit.otel.spans_cut": tree.cut + http_cut, "handit.session.end_reason": session.end_reason or "stop",
        "process.pid": os.getpid(),
    })
    if session.tag:
        attrs["handit.session.tag"] = session.tag
    if root.folded:
        attrs["handit.folded_calls"] = root.folded
    if session.stats.get("dropped"):
        attrs["handit.dropped_records"] = session.stats["dropped"]
    status = getattr(session, "http_status", None)
    if status:
        attrs["http.response.status_code"] = status
    root_span = _start(tracer, ids, session.tag or "session", _root_context(session), kind, session.t0_ns, attrs,
                       trace_id=session.trace_id, span_id=session.span_id)
    made = 1
    spans: dict[int, Any] = {0: root_span}
    contexts: dict[int, Any] = {}

    def context_of(node: CallNode) -> Any:
        ctx = contexts.get(node.call_id)
        if ctx is None:
            ctx = contexts[node.call_id] = trace.set_span_in_context(spans[node.call_id], context_api.Context())
        return ctx

    stack = [root]
    order: list[CallNode] = []
    while stack:  # parents before children: a child starts in its parent's context
        node = stack.pop()
        for child in node.children:
            spans[child.call_id] = _start(tracer, ids, child.func, context_of(node), SpanKind.INTERNAL, child.t0, _call_attrs(child))
            made += 1
            order.append(child)
            stack.append(child)
    threads = _Threads(order)
    for request, response in exchanges:
        name, http_attrs, error = _http_attrs(request, response)
        parent = threads.innermost(request.get("thread", 0), request.get("t0_ns") or 0) or root
        span = _start(tracer, ids, name, context_of(parent), SpanKind.CLIENT, request.get("t0_ns") or session.t0_ns,
                      http_attrs, span_id=request.get("span_id"))
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        end = (response or {}).get("t1_ns") or session.t1_ns
        span.end(end_time=max(end, request.get("t0_ns") or 0))
        made += 1
    for node in order:
        _end_call(spans[node.call_id], node)
    if kind is SpanKind.SERVER and isinstance(status, int) and status >= 500:
        root_span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
    root_span.end(end_time=session.t1_ns)
    return made
