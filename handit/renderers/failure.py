"""Failure view: one test's session events -> its call tree cut to the branch that raised, as text.

A failed test's tree is the test's calls with the branch that led to the failure
kept whole (each call on it that raised, down to where the exception started)
and, around it, a little context: the last few calls each call on the branch
made before it, one line each, with earlier ones and repeats folded
(``… 12 earlier calls: load ×10, parse ×2``). A passing test's tree (shown with
``--handit-show=all``) is the whole tree, depth- and line-limited. Every line
is ``function(arguments) → return value`` or ``… raised Type: message``, with
its duration.
"""
from __future__ import annotations

from typing import Any, Iterable

from . import fmt_args, fmt_ns, shorten

__all__ = ["Call", "build_calls", "render_failure", "render_tree"]

CONTEXT = 3
"""Calls shown before each call on the failing branch (earlier ones are folded into one line)."""
MAX_LINES = 40
"""Most lines of a rendered tree (the header not counted); the rest is folded."""
MAX_DEPTH = 6
"""Levels of a whole (non-failure) tree shown; deeper calls are counted on their parent's line."""


KEEP = 50
"""Finished calls kept under one parent while the events are read; earlier ones are only counted
(so a test that made a million calls is rendered in bounded memory)."""


class Call:
    """One call of the session: what it was given, what it gave back or raised, what it called."""

    __slots__ = ("func", "module", "args", "ret", "exc", "raised", "dt_ns", "end", "children", "folded", "folded_calls",
                 "task")

    def __init__(self, func: str, module: str, args: dict[str, Any] | None) -> None:
        self.func, self.module, self.args = func, module, args or {}
        self.ret: str | None = None
        self.exc: tuple[str, str] | None = None
        self.raised = False
        self.dt_ns: int | None = None  # None: no return seen (still running when the events were read)
        self.end = 1 << 62  # the position of its return among the events (unfinished: after all)
        self.children: list[Call] = []
        self.folded: dict[str, int] = {}  # function -> children dropped from ``children`` (only counted)
        self.folded_calls = 0  # calls in those children's subtrees
        self.task: str | None = None  # the asyncio task it started when its caller ran in another

    def size(self) -> int:
        """Calls in this subtree, this one included."""
        return 1 + self.folded_calls + sum(c.size() for c in self.children)


def build_calls(events: Iterable[dict[str, Any]], keep: int = KEEP) -> list[Call]:
    """The root calls of a stream of events (``call_id``/``parent_id`` linked), in call order.

    A call whose parent is not among the events (a thread's first call, or a call under
    an excluded function's caller) is a root. Under each parent (and among the roots) the
    last ``keep`` finished calls are kept, and the last that raised; earlier ones are
    counted in the parent's ``folded``.
    """
    by_id: dict[Any, Call] = {}
    tasks: dict[int, Any] = {}  # id(call) -> the task it ran in
    top = Call("", "", None)  # holds the roots
    for position, e in enumerate(events):
        kind = e.get("type")
        if kind == "call":
            call = Call(str(e.get("func") or "?"), str(e.get("module") or "?"), e.get("args_preview"))
            parent = by_id.get(e.get("parent_id"), top) if e.get("parent_id") is not None else top
            task_id = e.get("task_id")
            if task_id is not None and parent is not top and task_id != tasks.get(id(parent)):
                call.task = str(e.get("task") or task_id)  # a task's first call, beside its caller
            tasks[id(call)] = task_id
            parent.children.append(call)
            if len(parent.children) > 2 * keep:
                _fold_early(parent, keep)
            by_id[e.get("call_id")] = call
        elif kind == "return":
            call = by_id.pop(e.get("call_id"), None)
            if call is not None:
                call.dt_ns = e.get("dt_ns")
                call.end = position
                call.raised = bool(e.get("raised"))
                ret = (e.get("locals_preview") or {}).get("return")
                if ret is not None and not call.raised:
                    call.ret = str(ret)
        elif kind == "exception":
            call = by_id.get(e.get("call_id"))
            if call is not None:
                call.exc = (str(e.get("type_name") or "?"), str(e.get("message") or ""))
    return top.children


def _fold_early(parent: Call, keep: int) -> None:
    """Drop ``parent``'s earliest finished children past the last ``keep`` (never one still
    running, nor the last that raised) into its counts."""
    children = parent.children
    last_raised = max((c for c in children if c.raised), key=lambda c: c.end, default=None)
    kept: list[Call] = []
    for i, child in enumerate(children):
        if i >= len(children) - keep or child.dt_ns is None or child is last_raised:
            kept.append(child)
        else:
            parent.folded[child.func] = parent.folded.get(child.func, 0) + 1
            parent.folded_calls += child.size()
    parent.children = kept


def _raised(call: Call) -> bool:
    return call.raised or (call.exc is not None and call.dt_ns is None)


def failure_branch(calls: list[Call]) -> list[Call]:
    """From the call among ``calls`` that raised last down to where its exception started
    (empty if none raised)."""
    branch: list[Call] = []
    level = calls
    while True:
        raising = [c for c in level if _raised(c)]
        if not raising:
            return branch
        branch.append(max(raising, key=lambda c: c.end))
        level = branch[-1].children


def _line(call: Call, width: int, count: int = 1, inside: bool = True, run_ns: int = 0) -> str:
    """``func(args) → value`` or ``func(args) raised Type: message``, then time and counts; the
    arguments are cut first, so the outcome stays whole."""
    if _raised(call):
        kind, message = call.exc or ("?", "")
        message = message.strip().splitlines()[0] if message.strip() else ""
        outcome = f" raised {kind}" + (f": {shorten(message, 80)}" if message else "")
    elif call.ret is not None:
        outcome = f" → {shorten(call.ret, 40)}"
    else:
        outcome = " (unfinished)" if call.dt_ns is None else ""
    if count > 1:
        outcome += f"  (the last of {count:,} calls, {fmt_ns(run_ns)} in all)"
    elif call.dt_ns is not None:
        outcome += f"  [{fmt_ns(call.dt_ns)}]"
    n = call.size() - 1 if inside and count == 1 else 0
    outcome += f"  (+{n} calls inside)" if n else ""
    if call.task is not None:
        outcome += f"  [concurrent: task {call.task}]"
    room = max(width - len(call.func) - 2 - len(outcome), 24)
    return f"{call.func}({fmt_args(call.args, width=room)}){outcome}"


def _folded(calls: list[Call], what: str, parent: Call | None = None) -> str:
    """One line for calls not shown: how many (their subtrees included) and of which functions;
    ``parent``'s calls counted while reading are added."""
    by_func: dict[str, int] = dict(parent.folded) if parent is not None else {}
    for c in calls:
        by_func[c.func] = by_func.get(c.func, 0) + 1
    top = sorted(by_func.items(), key=lambda kv: -kv[1])
    names = ", ".join(f"{f} ×{n:,}" if n > 1 else f for f, n in top[:4]) + (", …" if len(top) > 4 else "")
    n = sum(c.size() for c in calls) + (parent.folded_calls if parent is not None else 0)
    return f"… {n:,} {what} call{'s' if n != 1 else ''}: {names}"


def _runs(calls: list[Call]) -> list[tuple[Call, int, int]]:
    """Consecutive calls of one function that all returned (none raised) folded into one entry:
    ``(the last call of the run, how many, their time in all)``."""
    out: list[tuple[Call, int, int]] = []
    for c in calls:
        last = out[-1][0] if out else None
        if (last is not None and last.func == c.func and last.module == c.module and not c.raised and not last.raised
                and c.task is None and last.task is None):  # tasks ran beside each other: one line each
            out[-1] = (c, out[-1][1] + 1, out[-1][2] + (c.dt_ns or 0))
        else:
            out.append((c, 1, c.dt_ns or 0))
    return out


def render_failure(events: Iterable[dict[str, Any]], *, width: int = 120, context: int = CONTEXT,
                   max_lines: int = MAX_LINES, test_raised: tuple[str, str, str] | None = None) -> str:
    """The call tree of a failed test, cut to the branch that raised plus ``context`` calls around it.

    Args:
        events: the test session's events.
        width: the widest line.
        context: calls shown before each call on the branch.
        max_lines: most lines; a deeper branch keeps its top and its bottom.
        test_raised: ``(function name, exception type, message)`` pytest saw the test raise:
            the first root call of that function is shown raising it if its records do not say
            so (before 3.12 an exception leaving a coroutine at an ``await`` reaches the profile
            function as a suspension does, so the test's coroutine is recorded as suspended).
    Returns:
        the tree as lines of text ("" if nothing was recorded).
    """
    roots = build_calls(events)
    if not roots:
        return ""
    if test_raised is not None:
        _mark_raised(roots, *test_raised)
    branch = failure_branch(roots)
    if not branch:
        return render_tree(roots, width=width, max_lines=max_lines)
    lines = _branch_lines(branch, roots, width, context)
    # the same exception raised under another root: a thread the test started outside
    # handit's reach (asyncio tasks and executor work have the call that made them as parent)
    for other in roots:
        if other is not branch[0] and _raised(other) and other.exc == branch[0].exc:
            lines.append(f"in another task or thread, {other.func}() raised it first:")
            lines.extend("   " + line for line in _branch_lines(failure_branch([other]), [other], width - 3, context))
    if len(lines) > max_lines:
        keep = max_lines // 2
        lines = lines[:keep] + [f"… {len(lines) - 2 * keep + 1} lines", *lines[-keep + 1:]]
    return "\n".join(lines)


def _mark_raised(roots: list[Call], func: str, kind: str, message: str) -> None:
    test = next((c for c in roots if c.func.rsplit(".", 1)[-1] == func), None)
    if test is not None and not _raised(test):
        test.raised, test.exc = True, (kind, message)


def _branch_lines(branch: list[Call], roots: list[Call], width: int, context: int) -> list[str]:
    lines: list[str] = []
    siblings = roots
    for depth, call in enumerate(branch):
        pad = "   " * (depth - 1) if depth else ""
        if depth:
            _context_lines(siblings[: siblings.index(call)], branch[depth - 1], pad, width, context, lines)
        lines.append(f"{pad}{'└─ ' if depth else ''}{_line(call, width - len(pad), inside=False)}")
        siblings = call.children
    # where the exception started: the calls it made first (the values an assertion compared)
    _context_lines(branch[-1].children, branch[-1], "   " * (len(branch) - 1), width, context, lines)
    return lines


def _context_lines(calls: list[Call], parent: Call, pad: str, width: int, context: int, out: list[str]) -> None:
    runs = _runs(calls)
    shown = runs[-context:] if context else []
    hidden = calls[: len(calls) - sum(n for _, n, _ in shown)]
    if hidden or parent.folded:
        out.append(f"{pad}├─ {_folded(hidden, 'earlier', parent)}")
    for call, count, run_ns in shown:
        out.append(f"{pad}├─ {_line(call, width - len(pad) - 3, count, run_ns=run_ns)}")


def render_tree(roots: list[Call], *, width: int = 120, max_lines: int = MAX_LINES, max_depth: int = MAX_DEPTH) -> str:
    """A whole call tree, repeats folded, cut at ``max_depth`` levels and ``max_lines`` lines.

    Args:
        roots: from :func:`build_calls`.
        width: the widest line.
        max_lines: most lines; the calls past it are counted on the last line.
        max_depth: levels shown.
    Returns:
        the tree as lines of text.
    """
    lines: list[str] = []
    left: list[Call] = []

    def walk(calls: list[Call], depth: int) -> None:
        runs = _runs(calls)
        for i, (call, count, run_ns) in enumerate(runs):
            if len(lines) >= max_lines:
                left.extend(c for run in runs[i:] for c in [run[0]] * run[1])
                return
            pad = "   " * (depth - 1) + "├─ " if depth else ""
            expand = depth + 1 < max_depth and count == 1
            lines.append(f"{pad}{_line(call, width - len(pad), count, inside=not expand, run_ns=run_ns)}")
            if expand:
                if call.folded:
                    lines.append(f"{'   ' * depth}├─ {_folded([], 'earlier', call)}")
                walk(call.children, depth + 1)

    walk(roots, 0)
    if left:
        lines.append(_folded(left, "more"))
    return "\n".join(lines)
