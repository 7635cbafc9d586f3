"""OpenTelemetry stage, the tree: one session's call and return events -> the calls that become spans,
with short calls folded into their parent and the span cap applied (no OpenTelemetry import here).

Events are fed in the order the reader decodes them; only calls that last at least the
minimum duration are kept, so memory follows the spans exported, not the calls made.
"""
from __future__ import annotations

from typing import Any, Iterable

__all__ = ["CallNode", "CallTree"]


class CallNode:
    """One call that may become a span (or the session's root, with ``call_id`` 0)."""

    __slots__ = ("call_id", "parent", "children", "func", "module", "file", "line", "thread", "t0", "t1",
                 "args", "ret", "error", "folded", "flags", "cut")

    def __init__(self, call_id: int, parent: CallNode | None, event: dict[str, Any] | None = None) -> None:
        self.call_id = call_id
        self.parent = parent
        self.children: list[CallNode] = []
        self.folded = 0  # calls shorter than the minimum that ran inside this one (their own folded included)
        self.error: tuple[str, str] | None = None
        self.ret: dict[str, str] = {}
        self.flags: dict[str, Any] = {}  # incomplete, abandoned, suspended_ns
        self.cut = False
        self.t1 = 0
        if event is None:
            self.func = self.module = self.file = ""
            self.line = self.thread = self.t0 = 0
            self.args: dict[str, str] = {}
        else:
            self.func, self.module, self.file = event["func"], event["module"], event["file"]
            self.line, self.thread, self.t0 = event["line"], event.get("thread", 0), event["t0_ns"]
            self.args = event.get("args_preview") or {}

    def __repr__(self) -> str:
        return f"<CallNode {self.call_id} {self.func} children={len(self.children)} folded={self.folded}>"

    @property
    def duration(self) -> int:
        """Nanoseconds from call to return."""
        return self.t1 - self.t0


class CallTree:
    """Builds the kept calls of one session from its events.

    Args:
        min_duration_ns: calls shorter than this are folded into the call they ran in.
        max_calls: most calls kept (the session's span cap less its other spans); past
            it the shortest are cut and counted in :attr:`cut`.

    Attributes:
        root: the session's node; kept top-level calls are its children.
        cut: calls at least ``min_duration_ns`` long that the cap removed.
        folded: calls folded, in all (each is also counted on the node it was folded into).
        calls: calls seen.
    """

    def __init__(self, min_duration_ns: int, max_calls: int) -> None:
        self.min_ns = min_duration_ns
        self.max_calls = max(0, max_calls)
        self.root = CallNode(0, None)
        self.cut = 0
        self.folded = 0
        self.calls = 0
        self._open: dict[int, CallNode] = {}
        self._kept: list[CallNode] = []

    def feed(self, events: Iterable[dict[str, Any]]) -> None:
        """Take decoded events in order (``call``, ``return``, ``exception``; others are ignored)."""
        open_ = self._open
        for event in events:
            kind = event.get("type")
            if kind == "call":
                self.calls += 1
                parent = open_.get(event.get("parent_id") or 0, self.root)
                open_[event["call_id"]] = CallNode(event["call_id"], parent, event)
            elif kind == "return":
                node = open_.pop(event.get("call_id"), None)  # type: ignore[arg-type]
                if node is not None:
                    self._returned(node, event)
            elif kind == "exception":
                node = open_.get(event.get("call_id"))  # type: ignore[arg-type]
                if node is not None:
                    node.error = (str(event.get("type_name") or "Exception"), str(event.get("message") or ""))

    def _returned(self, node: CallNode, event: dict[str, Any]) -> None:
        node.t1 = max(event.get("t1_ns") or node.t0, node.t0)
        node.ret = event.get("locals_preview") or {}
        for flag in ("incomplete", "abandoned", "suspended_ns"):
            if event.get(flag):
                node.flags[flag] = event[flag]
        parent = node.parent or self.root
        if node.duration < self.min_ns:
            self.folded += 1
            parent.folded += 1 + node.folded
            for child in node.children:  # kept calls inside a short one (another thread's): up a level
                child.parent = parent
            parent.children.extend(node.children)
            return
        parent.children.append(node)
        self._kept.append(node)
        if len(self._kept) > 2 * self.max_calls + 64:  # prune now and then: memory stays near the cap
            self._prune()

    def _prune(self) -> None:
        """Cut the shortest kept calls down to the cap; their children move to the nearest kept ancestor."""
        kept = self._kept
        if len(kept) <= self.max_calls:
            return
        kept.sort(key=lambda n: n.duration, reverse=True)
        for node in kept[self.max_calls:]:
            node.cut = True
        self.cut += len(kept) - self.max_calls
        survivors = kept[: self.max_calls]
        for node in kept[self.max_calls:]:
            up = _kept_ancestor(node)
            up.folded += node.folded
        owners = [self.root, *self._open.values(), *survivors]
        for owner in owners:
            owner.children = [c for c in owner.children if not c.cut]
        for node in kept[self.max_calls:]:
            for child in node.children:
                if not child.cut:
                    child.parent = up = _kept_ancestor(node)
                    up.children.append(child)
        for node in self._open.values():
            if node.parent is not None and node.parent.cut:
                node.parent = _kept_ancestor(node.parent)
        self._kept = survivors

    def finish(self) -> CallNode:
        """Apply the cap to what was kept; returns :attr:`root`. Feed the reader's ``finish`` events first."""
        for node in reversed(list(self._open.values())):  # never closed by the reader; innermost first
            node.t1 = max(node.t0, node.t1)
            node.flags["incomplete"] = True
            self._returned(node, {"t1_ns": node.t0})
        self._open.clear()
        self._prune()
        return self.root

    def kept(self) -> list[CallNode]:
        """The kept calls (after :meth:`finish`: every call that becomes a span)."""
        return list(self._kept)


def _kept_ancestor(node: CallNode) -> CallNode:
    up = node.parent
    while up is not None and up.cut:
        up = up.parent
    return up if up is not None else node  # the root is never cut
