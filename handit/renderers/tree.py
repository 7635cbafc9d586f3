"""Tree view: a stream of call / return / exception events -> a bounded call tree with repeats folded, as lines.

:class:`TreeBuilder` keeps at most ``max_nodes`` nodes, whatever the size of
the trace: per session the first root calls and their subtrees, to
``max_depth`` levels and ``max_children`` distinct children a node. A call that
finishes exactly like an earlier sibling (same function, arguments, result and
subtree shape) is folded into it (``fib(n=3) → 2  ×12``) and its nodes are given
back to the budget. Calls past the limits are counted: by function under their
parent ("… 988 more: step ×988"), or as deeper calls.
"""
from __future__ import annotations

from typing import Any, Callable

from ..walk import CodeNames, OnCall, OnReturn, read_args, read_preview
from . import Lines, Segment, fmt_args, fmt_ns, shorten

__all__ = ["Node", "SessionRoot", "TreeBuilder"]

_KEPT, _DEEPER, _OTHER, _INSIDE = 0, 1, 2, 3  # how an open call is accounted for
_FLAGS = ("", "incomplete", "abandoned")  # a walk's return flag -> the node's
_MAX_OTHER_FUNCS = 64  # functions named in a "… N more" line's counts; later ones are counted as "others"


class _Parent:
    """What a node and a session root share: children, folded-away counts, and a fold index while open."""

    __slots__ = ("children", "others", "hidden", "index")

    def __init__(self) -> None:
        self.children: list[Node] = []
        self.others: dict[str, list[int]] = {}  # func -> [calls, total ns] of children past the limits
        self.hidden = 0  # calls below the depth limit
        self.index: dict[int, Node] | None = None  # shape key -> the finished child with that shape

    def _count_other(self, func: str) -> str:
        others = self.others
        if func not in others and len(others) >= _MAX_OTHER_FUNCS:
            # full: the least counted name gives way (its counts go to "…"), so a function
            # called often but first seen late still gets its name (space-saving counting)
            least = min((name for name in others if name != "…"), key=lambda name: others[name][0])
            gone = others.pop(least)
            rest = others.setdefault("…", [0, 0])
            rest[0] += gone[0]
            rest[1] += gone[1]
        slot = others.setdefault(func, [0, 0])
        slot[0] += 1
        return func


class Node(_Parent):
    """One call (or ``count`` identical calls folded together) in the tree."""

    __slots__ = ("func", "module", "args", "ret", "exc", "flag", "dt_ns", "count", "size", "key", "calls", "same", "thread",
                 "t0", "http", "ident", "task_id", "concurrent")

    def __init__(self, func: str, module: str, args: dict[str, Any] | None) -> None:
        super().__init__()
        self.func, self.module, self.args = func, module, args or {}
        self.ret: str | None = None
        self.exc: tuple[str, str] | None = None
        self.flag = ""  # "", "incomplete", "abandoned", "open" (no return seen)
        self.dt_ns: int | None = None
        self.count = 1
        self.size = 1  # nodes in this subtree (the budget unit)
        self.key = 0
        self.calls = 1  # calls in this subtree, including those only counted
        self.same = False  # children dropped: an identical subtree is shown above
        self.thread: Any = None  # for a root call: its thread's ident
        self.t0 = 0  # when it started (ns): root calls are shown in this order, whatever thread they ran on
        self.http = False  # an HTTP call made by its parent (``func`` is ``METHOD url``), not a Python call
        self.ident: Any = None  # the thread it ran on
        self.task_id: Any = None  # the asyncio task it ran in
        self.concurrent = ""  # it ran beside its caller: "task <name>" or "another thread"

    def _close(self) -> None:
        """Fix the node's size, call count and shape key once it and its children have finished."""
        self.index = None
        self.size = 1 + sum(c.size for c in self.children)
        self.calls = 1 + sum(c.calls * c.count for c in self.children) + self.hidden + sum(s[0] for s in self.others.values())
        self.key = hash((
            self.func, self.module, tuple(self.args.items()), self.ret, self.exc, self.flag, self.thread, bool(self.concurrent),
            tuple((c.key, c.count) for c in self.children), self.hidden,
            tuple((name, slot[0]) for name, slot in self.others.items()),
        ))

    def _drop_children(self) -> int:
        """Forget the subtree below (shown elsewhere); returns the nodes given back."""
        freed = self.size - 1
        self.children, self.others, self.hidden, self.size, self.same = [], {}, 0, 1, True
        return freed


class SessionRoot(_Parent):
    """A session at the top of the tree; its children are the session's root calls."""

    __slots__ = ("session_id", "tag", "threads", "thread", "names")

    def __init__(self, session_id: str, tag: str | None, thread: Any = None) -> None:
        super().__init__()
        self.session_id, self.tag = session_id, tag
        self.index = {}
        self.thread = thread  # the thread that started the session (None in traces that do not say)
        self.threads: dict[Any, int] = {}  # thread ident -> 1, 2, ... in order of first root call
        self.names: dict[str, str] = {}  # thread ident (as text) -> its name, from the session_end

    def thread_label(self, ident: Any) -> str:
        """How a root call's thread is shown: "" for the session's own thread, else its name."""
        main = self.thread if self.thread is not None else next(iter(self.threads), None)
        if ident == main:
            return ""
        return self.names.get(str(ident)) or f"thread {self.threads.get(ident, '?')}"


# an open call's entry: (node or None, depth, container, how it is accounted for, func counted in container.others)
_Entry = tuple  # type: ignore[type-arg]
_OUTSIDE: _Entry = (None, -1, None, _INSIDE, "")  # outside every --func match: its calls may match
_NOWHERE: _Entry = (None, 0, None, _INSIDE, "")  # a root past the budget


class TreeBuilder:
    """Builds a bounded call tree from events, one at a time.

    Args:
        max_nodes: the most nodes kept (session roots included).
        max_depth: calls deeper than this (roots are depth 0) are only counted.
        max_children: distinct children kept per node and root calls per session.
        root_filter: if given, ``(module, func) -> bool``; only calls it accepts,
            and what they call, are shown, each outermost match as a root.

    Attributes:
        roots: session id -> :class:`SessionRoot`, in order of appearance.
        sessions_omitted: sessions left out because the budget was spent.
    """

    def __init__(self, *, max_nodes: int = 200, max_depth: int = 8, max_children: int = 12,
                 root_filter: Callable[[str, str], bool] | None = None) -> None:
        self.max_nodes, self.max_depth, self.max_children = max_nodes, max_depth, max_children
        self.root_filter = root_filter
        self.roots: dict[str, SessionRoot] = {}
        self.sessions_omitted = 0
        self.used = 0
        self._tags: dict[Any, Any] = {}
        self._threads: dict[Any, Any] = {}  # session id -> the thread that started it
        self._seen: dict[int, Node] = {}  # shape key -> the first finished subtree with that shape
        # (session, call_id) -> (node or None, depth, container, mode, func counted in container.others)
        self._open: dict[tuple[Any, Any], _Entry] = {}
        self._http: dict[tuple[Any, Any], Node] = {}  # (session, request id) -> its node, until its response
        self._tasks: dict[tuple[Any, Any], list[Node]] = {}  # (session, task id) -> nodes marked with its name

    def feed(self, events: Any) -> TreeBuilder:
        """Add every event of an iterable; returns ``self``."""
        for event in events:
            self.add(event)
        return self

    def add(self, event: dict[str, Any]) -> None:
        """Add one event (only ``call``, ``return``, ``exception`` and session events matter)."""
        kind = event.get("type")
        if kind == "call":
            self._call(event)
        elif kind == "return":
            self._return(event)
        elif kind == "exception":
            entry = self._open.get((event.get("session_id"), event.get("call_id")))
            if entry is not None and entry[0] is not None:
                entry[0].exc = (str(event.get("type_name") or "?"), str(event.get("message") or ""))
        elif kind == "task_name":  # a task renamed: its marks say the name it ended with
            for node in self._tasks.get((event.get("session_id"), event.get("task_id")), ()):
                node.concurrent = f"task {event.get('task') or event.get('task_id')}"
        elif kind == "http_request":
            self._http_request(event)
        elif kind == "http_response":
            self._http_response(event)
        elif kind == "session_start":
            self._tags[event.get("session_id")] = event.get("tag")
            self._threads[event.get("session_id")] = event.get("thread")
            if self.used >= self.max_nodes:
                self.sessions_omitted += 1
        elif kind == "session_end":
            self._tags.pop(event.get("session_id"), None)
            self._threads.pop(event.get("session_id"), None)
            root = self.roots.get(str(event.get("session_id")))
            names = event.get("threads")
            if root is not None and isinstance(names, dict):
                root.names.update({str(k): str(v) for k, v in names.items()})

    def _root(self, sid: Any) -> SessionRoot | None:
        root = self.roots.get(sid)
        if root is None and self.used < self.max_nodes:
            root = self.roots[sid] = SessionRoot(str(sid), self._tags.get(sid), self._threads.get(sid))
            self.used += 1
        return root

    def _call(self, e: dict[str, Any]) -> None:
        sid = e.get("session_id")
        pid = e.get("parent_id")
        parent = self._open.get((sid, pid)) if pid is not None else None
        entry = self._enter(sid, parent, str(e.get("func") or "?"), str(e.get("module") or "?"),
                            int(e.get("t0_ns") or 0), e.get("thread"), e.get("task_id"), e.get("task"))
        if entry[0] is not None:
            entry[0].args = e.get("args_preview") or {}
        self._open[(sid, e.get("call_id"))] = entry

    def _enter(self, sid: Any, parent: _Entry | None, func: str, module: str, t0: int, thread: Any,
               task_id: Any = None, task: Any = None) -> _Entry:
        """Where a call goes (a node, a count, or nowhere) under its parent's entry (None for a root)."""
        if self.root_filter is not None and (parent is None or parent[1] < 0):
            if not self.root_filter(module, func):
                return _OUTSIDE  # outside every match
            parent = None
        if parent is None:
            depth, container = 0, self._root(sid)
            if container is None:
                return _NOWHERE
        else:
            node, pdepth, pcontainer, pmode, _ = parent
            depth = pdepth + 1
            if node is None:  # below a call that is only counted
                if pmode == _DEEPER and pcontainer is not None:
                    pcontainer.hidden += 1
                    return (None, depth, pcontainer, _DEEPER, "")
                return (None, depth, None, _INSIDE, "")
            container = node
        if depth > self.max_depth:
            container.hidden += 1
            return (None, depth, container, _DEEPER, "")
        if self.used >= self.max_nodes or len(container.children) >= self.max_children:
            return (None, depth, container, _OTHER, container._count_other(func))
        node = Node(func, module, None)
        node.flag = "open"
        node.t0 = t0
        node.ident, node.task_id = thread, task_id
        if isinstance(container, Node):  # a task's first call or handed-over work runs beside its caller
            if task_id is not None and task_id != container.task_id:
                node.concurrent = f"task {task or task_id}"
                self._tasks.setdefault((sid, task_id), []).append(node)
            elif thread != container.ident:
                node.concurrent = "another thread"
        if isinstance(container, SessionRoot):
            threads = container.threads
            node.thread = thread
            threads.setdefault(thread, len(threads) + 1)
        container.children.append(node)
        self.used += 1
        return (node, depth, container, _KEPT, "")

    def walker(self, session_id: str, codes: CodeNames) -> tuple[OnCall, OnReturn]:
        """The ``on_call`` / ``on_return`` pair that builds this tree from a :class:`handit.walk.Walk`
        of one session's blocks (the same tree as from its events; calls below what is kept,
        and the ends of calls only counted, are not reported).

        Args:
            session_id: the session (its ``session_start`` and ``session_end`` still go to :meth:`add`).
            codes: the session's code names.
        Returns:
            ``(on_call, on_return)`` for :class:`handit.walk.Walk`.
        """
        enter, leave, roots = self._enter, self._leave, self.roots
        max_nodes, max_children = self.max_nodes, self.max_children
        fast_roots = self.root_filter is None and self.max_depth >= 0

        def on_call(parent: Any, call_id: int, code: int, t0: int, thread: int, data: bytes, apos: int) -> Any:
            if parent is None:
                root = roots.get(session_id) if fast_roots else None
                if root is not None and (self.used >= max_nodes or len(root.children) >= max_children):
                    # a root call past the limits, as _enter counts it (a test suite makes millions)
                    func = codes[code][0]
                    slot = root.others.get(func)
                    if slot is None:
                        root._count_other(func)
                    else:
                        slot[0] += 1
                    return (None, 0, root, _OTHER, func)
            elif parent[0] is None and parent[3] != _DEEPER and parent[1] >= 0:
                return None  # below a call only counted by name: nothing to show or count
            func, module, _, _, names = codes[code]
            entry = enter(session_id, parent, func, module, t0, thread)
            node = entry[0]
            if node is not None:
                if apos >= 0:
                    node.args = read_args(data, apos, names)
            elif entry[3] == _INSIDE and entry[1] >= 0:
                return None  # nothing below it is shown or counted
            return entry

        def on_return(entry: Any, t0: int, t1: int, susp: int, data: bytes, rpos: int, exc: Any, flag: int) -> None:
            node = entry[0]
            if node is None:
                leave(entry, t1 - t0, None, "")  # only counted: its time, if counted by name
                return
            if exc is not None:
                node.exc = (str(exc[0] or "?"), str(exc[1] or ""))
            leave(entry, t1 - t0, read_preview(data, rpos), _FLAGS[flag])

        return on_call, on_return

    def _http_request(self, e: dict[str, Any]) -> None:
        """An HTTP call becomes a leaf under the call that made it (when that call is shown)."""
        parent = self._open.get((e.get("session_id"), e.get("parent_id")))
        if parent is None or parent[0] is None or self.used >= self.max_nodes:
            return
        node = Node(f"{e.get('method') or '?'} {e.get('url') or '?'}", "http", None)
        node.http = True
        node._close()
        parent[0].children.append(node)
        self.used += 1
        self._http[(e.get("session_id"), e.get("request_id"))] = node

    def _http_response(self, e: dict[str, Any]) -> None:
        node = self._http.pop((e.get("session_id"), e.get("request_id")), None)
        if node is None:
            return
        node.dt_ns = int(e.get("dt_ns") or 0)
        if e.get("error"):
            node.exc = ("error", str(e["error"]))
        else:
            node.ret = str(e.get("status"))
            llm = e.get("llm") or {}
            model = llm.get("gen_ai.response.model") or llm.get("gen_ai.request.model")
            if model:
                node.ret += f"  {model} {llm.get('gen_ai.usage.input_tokens', '?')}→{llm.get('gen_ai.usage.output_tokens', '?')} tokens"

    def _return(self, e: dict[str, Any]) -> None:
        entry = self._open.pop((e.get("session_id"), e.get("call_id")), None)
        if entry is None:
            return
        ret = (e.get("locals_preview") or {}).get("return")
        flag = "incomplete" if e.get("incomplete") else "abandoned" if e.get("abandoned") else ""
        self._leave(entry, int(e.get("dt_ns") or 0), None if ret is None else str(ret), flag)

    def _leave(self, entry: _Entry, dt: int, ret: str | None, flag: str) -> None:
        """A call ends: its node is closed and folded into an identical sibling, or its time counted."""
        node, _, container, mode, other = entry
        if mode == _OTHER and container is not None:
            slot = container.others.get(other)
            if slot is None:  # its name gave way to another's meanwhile
                slot = container.others.setdefault("…", [0, 0])
            slot[1] += dt
        if node is None or container is None:
            return
        node.dt_ns = dt
        node.ret = ret
        node.flag = flag
        node._close()
        index = container.index
        if index is None:
            index = container.index = {}
        same = index.get(node.key)
        if same is None:
            index[node.key] = node
            if node.children or node.hidden or node.others:
                twin = self._seen.get(node.key)
                if twin is None:
                    if len(self._seen) < 4 * self.max_nodes:
                        self._seen[node.key] = node
                else:  # the same calls already appear above: show them once
                    self.used -= node._drop_children()
            return
        same.count += node.count
        same.dt_ns = (same.dt_ns or 0) + dt
        children = container.children
        if children and children[-1] is node:
            children.pop()
        else:
            children.remove(node)
        self.used -= node.size

    # -- rendering -------------------------------------------------------------------------
    def lines(self, width: int = 120) -> list[list[Segment]]:
        """The tree as lines of styled segments, sessions first, then their calls with guides.

        Args:
            width: labels are cut to about this many characters.
        """
        out: list[list[Segment]] = []
        for root in self.roots.values():
            if not root.children and not root.others:
                continue
            tag = root.tag if root.tag is not None else "session"
            out.append([("● ", "cyan"), (str(tag), "bold cyan"), (f"  {root.session_id[:8]}", "dim")])
            root.children.sort(key=lambda node: node.t0)  # threads' calls interleaved as they ran
            self._render_children(root, "", out, width, root)
        if self.sessions_omitted:
            out.append([(f"… {self.sessions_omitted:,} more sessions not shown (filter with --session or --tag)", "dim")])
        return out

    def block(self, title: str = "Call tree", width: int = 120) -> Lines:
        """The tree as a titled block for :func:`handit.renderers.emit`."""
        return Lines(title, self.lines(width))

    def _render_children(self, parent: _Parent, prefix: str, out: list[list[Segment]], width: int,
                         root: SessionRoot | None = None) -> None:
        extra: list[list[Segment]] = []
        if parent.others:
            calls = sum(slot[0] for slot in parent.others.values())
            total = sum(slot[1] for slot in parent.others.values())
            named = sorted(((k, v) for k, v in parent.others.items() if k != "…"), key=lambda kv: kv[1][0], reverse=True)
            names = ", ".join(f"{name} ×{slot[0]:,}" for name, slot in named[:4])
            rest = calls - sum(slot[0] for _, slot in named[:4])
            if rest:  # the named ones lead; what is left is one count, never a nameless first group
                names += f"{', ' if names else ''}{'others' if names else 'calls'} ×{rest:,}"
            extra.append([(f"… {calls:,} more: {names}", "dim"), (f"  {fmt_ns(total)}", "dim")])
        if parent.hidden:
            extra.append([(f"… {parent.hidden:,} deeper calls (raise --depth to see them)", "dim")])
        items: list[Node | list[Segment]] = [*parent.children, *extra]
        for n, item in enumerate(items):
            last = n == len(items) - 1
            guide = ("└─ " if last else "├─ ", "dim")
            if isinstance(item, Node):
                thread = root.thread_label(item.thread) if root is not None else ""
                out.append([(prefix, "dim"), guide, *self._label(item, width - len(prefix), thread)])
                self._render_children(item, prefix + ("   " if last else "│  "), out, width)
            else:
                out.append([(prefix, "dim"), guide, *item])

    @staticmethod
    def _label(node: Node, width: int, thread: str = "") -> list[Segment]:
        """``func(args) → result  ×count  time  (notes)``, arguments and result cut so the line fits ``width``."""
        tail: list[Segment] = []
        if node.count > 1:
            tail.append((f"  ×{node.count:,}", "bold magenta"))
        if node.dt_ns is not None:
            tail.append((f"  {fmt_ns(node.dt_ns)}" + (" total" if node.count > 1 else ""), "dim"))
        if node.same:
            tail.append((f"  ({node.calls - 1:,} calls below, as above)", "cyan"))
        if thread:
            tail.append((f"  [{thread}]", "blue"))
        if node.concurrent:
            tail.append((f"  [concurrent: {node.concurrent}]", "blue"))
        if node.flag:
            label = {"open": "no return recorded", "incomplete": "unfinished at session end",
                     "abandoned": "never resumed"}[node.flag]
            tail.append((f"  ({label})", "yellow"))
        if node.exc is not None:
            result, style = f" ✗ {node.exc[0]}: {node.exc[1]}", "bold red"
        elif node.ret is not None:
            result, style = f" → {node.ret}", "green"
        else:
            result, style = "", ""
        if node.http:
            return [("⇄ ", "cyan"), (shorten(node.func, max(width - 40, 30)), "cyan"), (result, style), *tail]
        room = max(width - 3 - len(node.func) - 2 - sum(len(t) for t, _ in tail), 30)
        args = fmt_args(node.args, width=room, value_width=32)
        if len(args) + len(result) > room:  # share the room: the result keeps at least a third
            result = shorten(result, max(room // 3, room - len(args), 16))
            args = fmt_args(node.args, width=max(room - len(result), 12), value_width=32)
        return [(node.func, "bold"), ("(", ""), (args, "yellow"), (")", ""), (result, style), *tail]
