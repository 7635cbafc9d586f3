"""Summary view: a stream of events -> per-function, per-session, error and HTTP statistics, and their tables.

:class:`Stats` consumes events one at a time and keeps only aggregates and the
calls currently open, so any trace can be summarised in bounded memory.

Times follow cProfile's conventions: a function's *total* time counts only its
outermost active call (recursion is not counted twice); its *own* time is its
running time minus the running time of the calls it made. A generator or
coroutine runs for ``dt_ns - suspended_ns``; its total is the wall time from
first start to final exit.
"""
from __future__ import annotations

import re
from collections import deque
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from . import Lines, Table, fmt_ns, plain_text, shorten

__all__ = ["ErrorStats", "FuncStats", "HttpStats", "LlmStats", "SessionInfo", "Stats", "func_matcher", "render_summary", "summary_blocks"]

FuncFilter = Callable[[str, str], bool]

# Exceptions that end an iteration or close a generator: control flow, counted apart from errors.
CONTROL_FLOW = frozenset({"StopIteration", "StopAsyncIteration", "GeneratorExit"})


def _plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 call"``, ``"2,000 calls"``: the count with thousands separators and the word agreeing."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


class FuncStats:
    """Aggregates of one function (``module``, ``func``): calls, total, own time, calls that raised."""

    __slots__ = ("module", "func", "file", "line", "calls", "total_ns", "own_ns", "raised")

    def __init__(self, module: str, func: str, file: str, line: int) -> None:
        self.module, self.func, self.file, self.line = module, func, file, line
        self.calls = 0
        self.total_ns = 0
        self.own_ns = 0
        self.raised = 0

    @property
    def name(self) -> str:
        """``module.func``, or just ``func`` for the ``__main__`` module."""
        return _display(self.module, self.func)


class SessionInfo:
    """One session as seen in the events: tag, times, counts and end flags."""

    __slots__ = ("id", "tag", "t0_ns", "duration_ns", "calls", "exceptions", "dropped", "ended", "incomplete")

    def __init__(self, session_id: str, tag: str | None, t0_ns: int | None) -> None:
        self.id, self.tag, self.t0_ns = session_id, tag, t0_ns
        self.duration_ns: int | None = None
        self.calls = 0
        self.exceptions = 0
        self.dropped = 0
        self.ended = False
        self.incomplete = False


class ErrorStats:
    """One kind of exception: type, message, the function it was raised in, how often, where it passed."""

    __slots__ = ("type_name", "message", "module", "func", "count", "through")

    def __init__(self, type_name: str, message: str, module: str, func: str) -> None:
        self.type_name, self.message, self.module, self.func = type_name, message, module, func
        self.count = 0
        self.through: list[str] = []

    @property
    def name(self) -> str:
        """Where it was raised: ``module.func``, or just ``func`` for ``__main__``."""
        return _display(self.module, self.func)


class LlmStats:
    """LLM API calls answered by one provider and model: count, tokens in and out, times."""

    __slots__ = ("system", "model", "count", "input_tokens", "output_tokens", "total_ns", "max_ns", "ttft_ns", "streams")

    def __init__(self, system: str, model: str) -> None:
        self.system, self.model = system, model
        self.count = self.input_tokens = self.output_tokens = self.total_ns = self.max_ns = self.ttft_ns = self.streams = 0


class HttpStats:
    """HTTP calls to one method and URL (query dropped): count, errors, statuses, times."""

    __slots__ = ("method", "url", "count", "errors", "statuses", "total_ns", "max_ns")

    def __init__(self, method: str, url: str) -> None:
        self.method, self.url = method, url
        self.count = 0
        self.errors = 0
        self.statuses: dict[str, int] = {}
        self.total_ns = 0
        self.max_ns = 0


def _display(module: str, func: str) -> str:
    return func if module in ("__main__", "?", "") else f"{module}.{func}"


def _url_key(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme else url


def func_matcher(pattern: str | None) -> FuncFilter | None:
    """A ``(module, func) -> bool`` test: the regex searched in ``func`` or in ``module.func``.

    Raises:
        re.error: ``pattern`` is not a valid regex.
    """
    if not pattern:
        return None
    rx = re.compile(pattern)
    return lambda module, func: bool(rx.search(func) or rx.search(f"{module}.{func}"))


class Stats:
    """Aggregates a stream of events in bounded memory.

    Feed events with :meth:`add` (or :meth:`feed`); read the attributes and
    :meth:`top` afterwards. Only open calls, per-function aggregates and capped
    lists of sessions, errors and HTTP targets are kept.

    Args:
        max_sessions: sessions described individually; later ones are only counted.
        max_errors: distinct exceptions kept; later ones are counted in ``errors_omitted``.
        max_http: distinct HTTP targets kept.

    Attributes:
        functions: ``(module, func)`` -> :class:`FuncStats`.
        sessions: session id -> :class:`SessionInfo`, in order of appearance.
        errors: ``(type, message, function)`` -> :class:`ErrorStats` (exceptions by where they were raised).
        http: ``(method, url)`` -> :class:`HttpStats`.
        events, calls, exceptions, raised, http_calls, incomplete, abandoned, dropped,
        corrupt_blocks, session_count: counts.
        control_flow: exceptions of :data:`CONTROL_FLOW` types raised (an iteration's end, a
            generator's close): not in ``raised`` nor in ``errors``.
        last_ns: the latest return time seen.
    """

    def __init__(self, *, max_sessions: int = 10_000, max_errors: int = 1_000, max_http: int = 1_000) -> None:
        self.max_sessions, self.max_errors, self.max_http = max_sessions, max_errors, max_http
        self.functions: dict[tuple[str, str], FuncStats] = {}
        self.sessions: dict[str, SessionInfo] = {}
        self.errors: dict[tuple[str, str, str], ErrorStats] = {}
        self.http: dict[tuple[str, str], HttpStats] = {}
        self.llm: dict[tuple[str, str], LlmStats] = {}
        self.events = self.calls = self.exceptions = self.raised = self.http_calls = 0
        self.incomplete = self.abandoned = self.dropped = self.corrupt_blocks = 0
        self.session_count = self.errors_omitted = self.http_omitted = 0
        self.control_flow = 0
        # (session, call_id) -> [FuncStats, child ns, the parent's entry or None, outermost, its thread's active counts]
        self._open: dict[tuple[Any, Any], list[Any]] = {}
        # session -> thread -> FuncStats -> calls of it now running there (recursion: total counted once)
        self._active: dict[Any, dict[Any, dict[FuncStats, int]]] = {}
        self._last_sid: Any = None
        self._last_thread: Any = None
        self._last_info: SessionInfo | None = None
        self._last_active: dict[FuncStats, int] = {}
        self.last_ns = 0  # latest return time seen: the end of sessions whose end is missing
        # session -> (the caller's entry, type, message, its ErrorStats, first of its kind): to follow it up the stack
        self._last_exc: dict[Any, tuple[Any, str, str, ErrorStats | None, bool]] = {}
        self._pending_http: dict[Any, deque[dict[str, Any]]] = {}
        self._dispatch: dict[str, Callable[[dict[str, Any]], None]] = {
            "call": self._call, "return": self._return, "exception": self._exception,
            "session_start": self._session_start, "session_end": self._session_end,
            "http_request": self._http_request, "http_response": self._http_response,
        }

    def feed(self, events: Iterable[dict[str, Any]]) -> Stats:
        """Add every event of ``events``; returns ``self``."""
        add = self.add
        for event in events:
            add(event)
        return self

    def add(self, event: dict[str, Any]) -> None:
        """Add one event in the JSONL schema (unknown types are counted and ignored)."""
        self.events += 1
        handler = self._dispatch.get(event.get("type"))  # type: ignore[arg-type]
        if handler is not None:
            handler(event)

    def _call(self, e: dict[str, Any]) -> None:
        self.calls += 1
        sid = e.get("session_id")
        key = (e.get("module") or "?", e.get("func") or "?")
        fs = self.functions.get(key)
        if fs is None:
            fs = self.functions[key] = FuncStats(str(key[0]), str(key[1]), str(e.get("file") or "?"), int(e.get("line") or 0))
        fs.calls += 1
        task = e.get("task_id")
        # a track: a thread, or an asyncio task (calls of one function overlapping in tasks are not recursion)
        thread = e.get("thread") if task is None else ("task", task)
        if sid != self._last_sid or thread != self._last_thread:  # events come in runs of one session and track
            self._last_sid, self._last_thread = sid, thread
            self._last_info = self.sessions.get(sid)
            self._last_active = self._active.setdefault(sid, {}).setdefault(thread, {})
        if self._last_info is not None:
            self._last_info.calls += 1
        active = self._last_active
        depth = active.get(fs, 0)
        active[fs] = depth + 1
        pid = e.get("parent_id")
        parent = self._open.get((sid, pid)) if pid is not None else None
        credit = parent
        if parent is not None and (task != parent[5] or (task is None and parent[4] is not active)):
            # a task's first call, or work handed to another thread: its parent was suspended or
            # elsewhere; it ran inside the call on its thread outside any task (the event loop's caller)
            while credit is not None and credit[5] is not None:
                credit = credit[2]
            if credit is not None and credit[7] != e.get("thread"):
                credit = None
        self._open[(sid, e.get("call_id"))] = [fs, 0, parent, depth == 0, active, task, credit, e.get("thread")]

    def _return(self, e: dict[str, Any]) -> None:
        entry = self._open.pop((e.get("session_id"), e.get("call_id")), None)
        if len(e) > 7:  # flags are rare: a plain return has exactly 7 fields
            if e.get("incomplete"):
                self.incomplete += 1
            if e.get("abandoned"):
                self.abandoned += 1
        if entry is None:
            return
        fs, child_ns, _, outermost, active, _, credit, _ = entry
        dt = e.get("dt_ns") or 0
        running = dt - (e.get("suspended_ns") or 0)
        if running < 0:
            running = 0
        if running > child_ns:
            fs.own_ns += running - child_ns
        if outermost:
            fs.total_ns += dt
        left = active.get(fs, 1) - 1
        if left > 0:
            active[fs] = left
        else:
            active.pop(fs, None)
        if credit is not None:
            credit[1] += running
        t1 = e.get("t1_ns")
        if isinstance(t1, int) and t1 > self.last_ns:
            self.last_ns = t1

    def _exception(self, e: dict[str, Any]) -> None:
        self.exceptions += 1
        sid = e.get("session_id")
        cid = e.get("call_id")
        entry = self._open.get((sid, cid))
        module = entry[0].module if entry is not None else "?"
        if entry is not None:
            entry[0].raised += 1
        parent = entry[2] if entry is not None else None
        type_name, message = str(e.get("type_name") or "?"), str(e.get("message") or "")
        func = str(e.get("func") or "?")
        name = _display(module, func)
        prev = self._last_exc.get(sid)
        if prev is not None and entry is not None and prev[0] is entry and prev[1] == type_name and prev[2] == message:
            err, first = prev[3], prev[4]  # the same exception leaving the caller
            if err is not None and first and len(err.through) < 6:
                err.through.append(name)
            self._last_exc[sid] = (parent, type_name, message, err, first)
            return
        if type_name in CONTROL_FLOW:
            self.control_flow += 1
            self._last_exc[sid] = (parent, type_name, message, None, False)
            return
        self.raised += 1
        info = self.sessions.get(sid)
        if info is not None:
            info.exceptions += 1
        key = (type_name, message, name)
        err = self.errors.get(key)
        if err is None and len(self.errors) < self.max_errors:
            err = self.errors[key] = ErrorStats(type_name, message, module, func)
        if err is None:
            self.errors_omitted += 1
        else:
            err.count += 1
        self._last_exc[sid] = (parent, type_name, message, err, err is not None and err.count == 1)

    def _session_start(self, e: dict[str, Any]) -> None:
        self._last_sid = self._last_thread = None  # the cached session info may change
        self.session_count += 1
        sid = e.get("session_id")
        if sid not in self.sessions and len(self.sessions) < self.max_sessions:
            self.sessions[sid] = SessionInfo(str(sid), e.get("tag"), e.get("ts_ns"))

    def _session_end(self, e: dict[str, Any]) -> None:
        self._last_sid = self._last_thread = None
        sid = e.get("session_id")
        self._active.pop(sid, None)
        stats = e.get("stats") or {}
        dropped = int(stats.get("dropped") or 0)
        self.dropped += dropped
        self.corrupt_blocks += int(stats.get("corrupt_blocks") or 0)
        info = self.sessions.get(sid)
        if info is None and sid not in self.sessions and len(self.sessions) < self.max_sessions:
            info = self.sessions[sid] = SessionInfo(str(sid), None, None)  # an end without its start
            self.session_count += 1
        if info is not None:
            info.ended = True
            info.incomplete = bool(e.get("incomplete"))
            info.dropped = dropped
            info.duration_ns = e.get("duration_ns")
        self._last_exc.pop(sid, None)
        for request in self._pending_http.pop(sid, ()):
            self._record_http(request, None)

    def _http_request(self, e: dict[str, Any]) -> None:
        self._pending_http.setdefault(e.get("session_id"), deque()).append(
            {"method": e.get("method"), "url": e.get("url"), "request_id": e.get("request_id")})

    def _http_response(self, e: dict[str, Any]) -> None:
        queue = self._pending_http.get(e.get("session_id"))
        request: dict[str, Any] = {}
        if queue:
            rid = e.get("request_id")
            match = next((r for r in queue if rid is not None and r.get("request_id") == rid), None)
            request = match if match is not None else queue[0]
            queue.remove(request)
        self._record_http(request, e)

    def _record_http(self, request: dict[str, Any], response: dict[str, Any] | None) -> None:
        self.http_calls += 1
        key = (str(request.get("method") or "?"), _url_key(str(request.get("url") or "?")))
        hs = self.http.get(key)
        if hs is None:
            if len(self.http) >= self.max_http:
                self.http_omitted += 1
                return
            hs = self.http[key] = HttpStats(*key)
        hs.count += 1
        status = response.get("status") if response is not None else None
        error = response.get("error") if response is not None else "no response"
        label = str(status) if status is not None else "error"
        hs.statuses[label] = hs.statuses.get(label, 0) + 1
        if error or not isinstance(status, int) or status >= 400:
            hs.errors += 1
        dt = int((response or {}).get("dt_ns") or 0)
        hs.total_ns += dt
        hs.max_ns = max(hs.max_ns, dt)
        llm = (response or {}).get("llm")
        if isinstance(llm, dict):
            self._record_llm(llm, dt)

    def _record_llm(self, llm: dict[str, Any], dt: int) -> None:
        model = str(llm.get("gen_ai.response.model") or llm.get("gen_ai.request.model") or "?")
        key = (str(llm.get("gen_ai.system") or "?"), model)
        ls = self.llm.get(key)
        if ls is None:
            if len(self.llm) >= self.max_http:
                return
            ls = self.llm[key] = LlmStats(*key)
        ls.count += 1
        ls.input_tokens += int(llm.get("gen_ai.usage.input_tokens") or 0)
        ls.output_tokens += int(llm.get("gen_ai.usage.output_tokens") or 0)
        ls.total_ns += dt
        ls.max_ns = max(ls.max_ns, dt)
        if llm.get("gen_ai.streamed"):
            ls.streams += 1
            ls.ttft_ns += int(llm.get("gen_ai.server.time_to_first_token_ns") or 0)

    def add_fold(self, fold: dict[str, Any], code_info: Callable[[int], Any], session_id: Any = None) -> None:
        """Add a session's folded figures (:meth:`handit.blocks.Fold.to_json`, or a trace file's ``F`` frame).

        Used in place of that session's ``call``, ``return`` and ``exception`` events
        (feed its ``session_start``, ``session_end`` and extra events as usual).

        Args:
            fold: the figures.
            code_info: code index -> an object with ``module``, ``qualname``, ``file``
                and ``line`` (may raise for an unknown index).
            session_id: the session they belong to.
        """
        names: dict[int, FuncStats] = {}
        for code, calls, total, own, raised in fold.get("funcs", ()):
            try:
                info = code_info(code)
                key = (str(info.module), str(info.qualname))
                where = (str(info.file), int(info.line))
            except Exception:
                key, where = ("?", f"<unknown code {code}>"), ("?", 0)
            fs = self.functions.get(key)
            if fs is None:
                fs = self.functions[key] = FuncStats(key[0], key[1], *where)
            names[code] = fs
            fs.calls += calls
            fs.total_ns += total
            fs.own_ns += own
            fs.raised += raised
        counts = fold.get("counts", {})
        self.calls += counts.get("calls", 0)
        self.exceptions += counts.get("exceptions", 0)
        self.raised += counts.get("raised", 0)
        self.incomplete += counts.get("incomplete", 0)
        self.abandoned += counts.get("abandoned", 0)
        self.corrupt_blocks += counts.get("corrupt_blocks", 0)
        self.errors_omitted += counts.get("errors_omitted", 0)
        self.last_ns = max(self.last_ns, counts.get("last_ts", 0))
        info = self.sessions.get(session_id)
        if info is not None:
            info.calls += counts.get("calls", 0)
            info.exceptions += counts.get("raised", 0)
        for type_name, message, code, count, through in fold.get("errors", ()):
            if type_name in CONTROL_FLOW:
                self.raised -= count
                self.control_flow += count
                if info is not None:
                    info.exceptions -= count
                continue
            fs = names.get(code)
            module, func = (fs.module, fs.func) if fs is not None else ("?", f"<unknown code {code}>")
            key3 = (str(type_name), str(message), _display(module, func))
            err = self.errors.get(key3)
            if err is None:
                if len(self.errors) >= self.max_errors:
                    self.errors_omitted += count
                    continue
                err = self.errors[key3] = ErrorStats(key3[0], key3[1], module, func)
            err.count += count
            if not err.through:
                err.through = [names[c].name if c in names else f"<unknown code {c}>" for c in through]

    def top(self, n: int, by: str = "total", func_filter: FuncFilter | None = None) -> list[FuncStats]:
        """The ``n`` functions with the most ``total``, ``own`` time or ``calls``.

        Args:
            n: how many.
            by: ``"total"``, ``"own"`` or ``"calls"``.
            func_filter: keep only functions it accepts (``(module, func) -> bool``).
        """
        funcs = [f for f in self.functions.values() if func_filter is None or func_filter(f.module, f.func)]
        if by == "own":
            funcs.sort(key=lambda f: (min(f.own_ns, f.total_ns), f.calls), reverse=True)
        else:
            attr = {"total": "total_ns", "calls": "calls"}[by]
            funcs.sort(key=lambda f: (getattr(f, attr), f.calls), reverse=True)
        return funcs[:n]

    def wall_ns(self) -> int:
        """The sessions' durations added up (the wall-clock time the tables' totals compare with)."""
        return sum(info.duration_ns if info.duration_ns is not None else max(self.last_ns - (info.t0_ns or self.last_ns), 0)
                   for info in self.sessions.values())


def _left_cut(name: str, width: int) -> str:
    """Keep a long qualified name's end, where the function's own name is."""
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _func_rows(funcs: list[FuncStats]) -> list[list[Any]]:
    # own time is the total less the calls made and the time suspended: never above the total
    # (a coroutine running in several tasks at once could count more)
    return [[[(_left_cut(f.name, 60), "bold")], f"{f.calls:,}", fmt_ns(f.total_ns), fmt_ns(min(f.own_ns, f.total_ns)),
             [(f"{f.raised:,}", "red")] if f.raised else "0"] for f in funcs]


def summary_blocks(stats: Stats, *, top: int = 10, func_filter: FuncFilter | None = None, sessions: bool = True,
                   max_sessions: int = 20, insert: Iterable[Table | Lines] = ()) -> list[Table | Lines]:
    """The summary as blocks for :func:`handit.renderers.emit`: sessions, busiest functions, errors, HTTP, totals.

    Args:
        stats: the aggregates.
        top: rows in the function tables.
        func_filter: only functions it accepts are listed.
        sessions: include the sessions table.
        max_sessions: rows in the sessions table.
        insert: blocks placed after the sessions table (the call tree).
    """
    blocks: list[Table | Lines] = []
    if sessions and stats.sessions:
        rows = []
        for info in list(stats.sessions.values())[:max_sessions]:
            duration = info.duration_ns if info.duration_ns is not None else max(stats.last_ns - (info.t0_ns or stats.last_ns), 0)
            notes = []
            if info.incomplete or not info.ended:
                notes.append(("incomplete ", "yellow"))
            if info.dropped:
                notes.append((f"{info.dropped:,} dropped", "red"))
            rows.append([[(str(info.tag) if info.tag is not None else "-", "bold cyan")], info.id[:8], fmt_ns(duration),
                         f"{info.calls:,}", f"{max(info.exceptions, 0):,}", notes or ""])
        more = stats.session_count - len(rows)
        blocks.append(Table("Sessions", ["tag", "session", ">duration", ">calls", ">exceptions", "notes"], rows,
                            note=f"… and {more:,} more sessions (filter with --session or --tag)" if more > 0 else ""))
    blocks.extend(insert)
    by_total = stats.top(top, "total", func_filter)
    if by_total:
        cols = ["function", ">calls", ">total", ">own", ">raised"]
        wall = stats.wall_ns()
        over = sum(1 for f in stats.functions.values() if wall and f.total_ns > wall and (func_filter is None or func_filter(f.module, f.func)))
        note = (f"total: time inside a function, summed over its calls on every thread; {_plural(over, 'function')} "
                f"ran longer than the sessions' {fmt_ns(wall)} of wall-clock time (calls on several threads at once)"
                if over else "")
        blocks.append(Table("Busiest functions (total time)", cols, _func_rows(by_total), note=note))
        blocks.append(Table("Most own time (total minus the calls they made)", cols, _func_rows(stats.top(top, "own", func_filter))))
    errors = [e for e in stats.errors.values() if func_filter is None or func_filter(e.module, e.func)]
    if errors:
        errors.sort(key=lambda e: e.count, reverse=True)
        rows = [[[(e.type_name, "bold red")], shorten(e.message, 50), _left_cut(e.name, 40), shorten(" → ".join(e.through), 50) or "-", f"{e.count:,}"]
                for e in errors[:top]]
        more = len(errors) - len(rows) + stats.errors_omitted
        blocks.append(Table("Errors (by where they were raised)", ["exception", "message", "raised in", "passed through", ">count"],
                            rows, note=f"… and {more:,} more" if more > 0 else ""))
    if stats.http:
        https = sorted(stats.http.values(), key=lambda h: h.total_ns, reverse=True)
        rows = [[h.method, shorten(h.url, 60), f"{h.count:,}", ", ".join(f"{k}×{v:,}" if v > 1 else k for k, v in sorted(h.statuses.items())),
                 [(f"{h.errors:,}", "red")] if h.errors else "0", fmt_ns(h.total_ns), fmt_ns(h.max_ns)] for h in https[:top]]
        more = len(https) - len(rows) + stats.http_omitted
        blocks.append(Table("HTTP calls", ["method", "url", ">calls", "status", ">errors", ">total", ">slowest"], rows,
                            note=f"… and {more:,} more" if more > 0 else ""))
    if stats.llm:
        llms = sorted(stats.llm.values(), key=lambda m: m.total_ns, reverse=True)
        rows = [[m.system, shorten(m.model, 40), f"{m.count:,}", f"{m.input_tokens:,}", f"{m.output_tokens:,}", fmt_ns(m.total_ns),
                 fmt_ns(m.max_ns), fmt_ns(m.ttft_ns // m.streams) if m.streams else "-"] for m in llms[:top]]
        blocks.append(Table("LLM calls", ["provider", "model", ">calls", ">tokens in", ">tokens out", ">total", ">slowest",
                                          ">first token"], rows))
    totals: list[tuple[str, str]] = [
        (f"{_plural(stats.session_count, 'session')} · {_plural(stats.calls, 'call')} · "
         f"{_plural(max(stats.raised, 0), 'exception')} · {_plural(stats.http_calls, 'HTTP call')}", ""),
    ]
    if stats.control_flow:
        totals.append((f" · {_plural(stats.control_flow, 'StopIteration/GeneratorExit', 'StopIteration/GeneratorExit')} (iteration's control flow, not errors)", "dim"))
    losses = [_plural(n, one, many) for n, one, many in (
        (stats.dropped, "record dropped", "records dropped"), (stats.incomplete, "call unfinished", "calls unfinished"),
        (stats.abandoned, "generator abandoned", "generators abandoned"), (stats.corrupt_blocks, "corrupt block", "corrupt blocks")) if n]
    if losses:
        totals.append((" · " + " · ".join(losses), "yellow"))
    blocks.append(Lines("", [totals]))
    return blocks


def render_summary(events: Iterable[dict[str, Any]], top: int = 10, *, stats: Stats | None = None) -> str:
    """A short plain-text summary of events: sessions, the busiest functions, errors, HTTP calls.

    Args:
        events: events in the JSONL schema (a list or any iterable; consumed once).
        top: rows in the function tables.
        stats: aggregates to add the events to (e.g. holding a session's fold).
    Returns:
        the summary text.
    """
    return plain_text(summary_blocks((stats if stats is not None else Stats()).feed(events), top=top))
