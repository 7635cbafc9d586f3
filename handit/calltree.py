"""Call-tree stage: a stream of events -> typed calls on tracks, the one model every view shares.

A *track* is where calls run one after the other: a thread, or an asyncio task (which
runs on one thread but is its own stack). A call's track comes from its event: a call
event with ``task_id`` is on that task's track, any other on its thread's track. A
call's parent is ``parent_id`` and may sit on another track (a task's first call has
as parent the call that created the task, OpenTelemetry's context rule).

:class:`CallTree` takes events one at a time (:meth:`CallTree.add`) and hands back
each :class:`Call` when it ends, so only open calls are held: renderers stream
traces of any size through it. A finished call knows its total, suspended and own
time (own excludes time suspended in ``await`` and the active time of its children
on its own track) and whether it *nests*: a call nests when no call started after
it on its track is still open when it ends. Calls that nest form proper slices on
their track (never a partial overlap); the others (interleaved generators) are
drawn as async slices or closed and reopened by the renderers. A ``task_name`` event
(a task renamed, see :mod:`handit.reader`) renames the task's track (:meth:`CallTree.rename`).

Typical use::

    tree = CallTree()
    for event in events:
        for call in tree.add(event):
            draw(call)
    for call in tree.close():
        draw(call)
"""
from __future__ import annotations

from collections import deque
from typing import Any, Iterable, Iterator

__all__ = ["Call", "CallTree", "HttpCall", "HttpPairs", "Track", "calls"]


class Track:
    """A thread or an asyncio task of one session.

    Attributes:
        key: ``(session_id, "thread", thread ident)`` or ``(session_id, "task", task id)``.
        kind: ``"thread"`` or ``"task"``.
        session_id: the session.
        thread: the thread ident the track runs on (a task's: its loop's thread).
        task_id: the task's number in its session (from 1), or None for a thread.
        name: ``"thread <ident>"`` or the thread's name when events carry one; a task's name.
        index: 1, 2, ... in order of first appearance within the session.
    """

    __slots__ = ("key", "kind", "session_id", "thread", "task_id", "name", "index", "_open")

    def __init__(self, key: tuple[Any, str, Any], thread: Any, name: str, index: int) -> None:
        self.key = key
        self.session_id = key[0]
        self.kind = key[1]
        self.task_id = key[2] if key[1] == "task" else None
        self.thread = thread
        self.name = name
        self.index = index
        self._open: list[Call] = []  # open calls on this track, in order of start

    def __repr__(self) -> str:
        return f"Track({self.kind} {self.name!r})"


class Call:
    """One call, finished (or closed as incomplete) when a :class:`CallTree` hands it out.

    Attributes:
        call_id, parent_id: as in the events (``parent_id`` None for a root).
        session_id, func, module, file, line: what was called.
        track: the :class:`Track` it ran on; ``parent_track`` the parent's, when known
            (another track for a task's first call).
        depth: open calls below it on its track when it started (0: the track's root).
        t0_ns, t1_ns: first start and end, epoch nanoseconds.
        suspended_ns: time a generator or coroutine spent suspended (0 for other calls).
        children_ns: active time of its finished children on its own track (for a call on a
            thread's track, also of the task roots that ran on that thread inside it).
        args: argument previews; ``ret``: the return value's preview or None.
        exception: ``(type name, message)`` when it ended with an exception, else None.
        flags: ``raised``, ``incomplete``, ``abandoned`` as set on the return event.
        suspendable: it is a generator or coroutine (its return carried ``suspended_ns``).
        nests: no call started after it on its track was still open when it ended.
    """

    __slots__ = ("call_id", "parent_id", "session_id", "func", "module", "file", "line", "track", "parent_track",
                 "depth", "t0_ns", "t1_ns", "suspended_ns", "children_ns", "args", "ret", "exception", "flags",
                 "suspendable", "nests", "_parent")

    def __init__(self, e: dict[str, Any], track: Track, parent: Call | None) -> None:
        self.call_id = e.get("call_id")
        self.parent_id = e.get("parent_id")
        self.session_id = e.get("session_id")
        self.func = str(e.get("func") or "?")
        self.module = str(e.get("module") or "?")
        self.file = str(e.get("file") or "")
        self.line = e.get("line") if isinstance(e.get("line"), int) else 0
        self.track = track
        self._parent = parent
        self.parent_track = parent.track if parent is not None else None
        self.depth = len(track._open)
        t0 = e.get("t0_ns")
        self.t0_ns = t0 if isinstance(t0, int) else 0
        self.t1_ns = self.t0_ns
        self.suspended_ns = 0
        self.children_ns = 0
        self.args: dict[str, Any] = dict(e.get("args_preview") or {})
        self.ret: Any = None
        self.exception: tuple[str, str] | None = None
        self.flags: tuple[str, ...] = ()
        self.suspendable = False
        self.nests = True

    @property
    def dt_ns(self) -> int:
        """Total time: first start to end (suspended time included)."""
        return self.t1_ns - self.t0_ns

    @property
    def active_ns(self) -> int:
        """Time it was running (total minus suspended), its children's included."""
        return max(self.dt_ns - self.suspended_ns, 0)

    @property
    def own_ns(self) -> int:
        """Time it ran its own code: its active time minus :attr:`children_ns`."""
        return max(self.active_ns - self.children_ns, 0)

    @property
    def concurrent(self) -> bool:
        """It started a track of its own (a task's root, or work handed to another thread) under its parent."""
        return self.parent_track is not None and self.parent_track is not self.track and self.depth == 0

    def __repr__(self) -> str:
        return f"Call({self.func!r} #{self.call_id} on {self.track!r})"


class CallTree:
    """Builds :class:`Call` objects from events, one event at a time; holds only open calls.

    Attributes:
        tracks: track key -> :class:`Track`, in order of appearance.
        last_ns: the latest timestamp seen.
    """

    def __init__(self) -> None:
        self.tracks: dict[tuple[Any, str, Any], Track] = {}
        self._open: dict[tuple[Any, Any], Call] = {}
        self._per_session: dict[Any, int] = {}
        self._task_names: dict[tuple[Any, str, Any], str] = {}  # tasks renamed before their track was made
        self.last_ns = 0

    def track_of(self, e: dict[str, Any]) -> Track:
        """The track of a call event (made on first sight)."""
        sid = e.get("session_id")
        task_id = e.get("task_id")
        thread = e.get("thread")
        key: tuple[Any, str, Any] = (sid, "task", task_id) if task_id is not None else (sid, "thread", thread)
        track = self.tracks.get(key)
        if track is None:
            index = self._per_session[sid] = self._per_session.get(sid, 0) + 1
            if task_id is not None:
                name = self._task_names.pop(key, None) or str(e.get("task") or f"task {task_id}")
            else:
                name = str(e.get("thread_name") or f"thread {thread}")
            track = self.tracks[key] = Track(key, thread, name, index)
        return track

    def rename(self, e: dict[str, Any]) -> Track | None:
        """Take a ``task_name`` event: the task's track gets its new name.

        Args:
            e: the event (``session_id``, ``task_id``, ``task``).
        Returns:
            the track renamed, or None when the task has no track yet (it gets the name when made).
        """
        key: tuple[Any, str, Any] = (e.get("session_id"), "task", e.get("task_id"))
        name = str(e.get("task") or f"task {e.get('task_id')}")
        track = self.tracks.get(key)
        if track is None:
            self._task_names[key] = name
            return None
        track.name = name
        return track

    def has_open(self, session_id: Any) -> bool:
        """True if a call of the session is still open."""
        return any(key[0] == session_id for key in self._open)

    def open_call(self, session_id: Any, call_id: Any) -> Call | None:
        """The call ``call_id`` of a session if it is open, else None."""
        return self._open.get((session_id, call_id))

    def add(self, e: dict[str, Any]) -> list[Call]:
        """Take one event in the JSONL schema.

        Args:
            e: any event; calls, returns and exceptions are used, the rest ignored.
        Returns:
            the calls this event finished (a return's call; empty otherwise).
        """
        kind = e.get("type")
        if kind == "call":
            sid = e.get("session_id")
            parent = self._open.get((sid, e.get("parent_id")))
            track = self.track_of(e)
            call = Call(e, track, parent)
            if call.t0_ns > self.last_ns:
                self.last_ns = call.t0_ns
            track._open.append(call)
            self._open[(sid, call.call_id)] = call
        elif kind == "return":
            call = self._open.pop((e.get("session_id"), e.get("call_id")), None)
            if call is None:
                return []
            t1 = e.get("t1_ns")
            if not isinstance(t1, int):
                t1 = call.t0_ns + int(e.get("dt_ns") or 0)
            call.t1_ns = max(t1, call.t0_ns)
            if call.t1_ns > self.last_ns:
                self.last_ns = call.t1_ns
            if "suspended_ns" in e:
                call.suspendable = True
                call.suspended_ns = min(int(e.get("suspended_ns") or 0), call.dt_ns)
            ret = (e.get("locals_preview") or {}).get("return")
            call.ret = ret
            call.flags = tuple(flag for flag in ("raised", "incomplete", "abandoned") if e.get(flag))
            self._end(call)
            return [call]
        elif kind == "exception":
            call = self._open.get((e.get("session_id"), e.get("call_id")))
            if call is not None:
                call.exception = (str(e.get("type_name") or "?"), str(e.get("message") or ""))
        elif kind == "task_name":
            self.rename(e)
        return []

    def _end(self, call: Call) -> None:
        stack = call.track._open
        if stack and stack[-1] is call:
            stack.pop()
        else:
            call.nests = False
            try:
                stack.remove(call)
            except ValueError:
                pass
        parent = call._parent
        if parent is not None and parent.track is call.track:
            parent.children_ns += call.active_ns
        elif call.depth == 0 and call.track.task_id is not None:
            # a task's root ran on its thread inside the call blocked there running the event loop
            # (asyncio.run's caller): that call's own time excludes it
            host = self.tracks.get((call.session_id, "thread", call.track.thread))
            if host is not None and host._open and host._open[-1].t0_ns <= call.t0_ns:
                host._open[-1].children_ns += call.active_ns
        call._parent = None  # only open calls are held

    def close(self, end_ns: int | None = None) -> list[Call]:
        """End every call still open as ``incomplete`` (innermost first) at ``end_ns`` or the latest time seen.

        Returns:
            the calls closed.
        """
        end = self.last_ns if end_ns is None else end_ns
        out = []
        for call in sorted(self._open.values(), key=lambda c: (c.t0_ns, c.depth), reverse=True):
            call.t1_ns = max(end, call.t0_ns)
            call.flags = call.flags + ("incomplete",)
            self._end(call)
            out.append(call)
        self._open.clear()
        return out


class HttpCall:
    """One HTTP call: a request and its response (or none).

    Attributes:
        session_id, method, url, request_id: from the request.
        t0_ns, t1_ns: request start and response end (``t1_ns == t0_ns`` without a response).
        status, error, bytes_in: from the response; ``error`` is ``"no response"`` when none came.
        llm: the response's LLM fields (a dict) or None.
        answered: a response was seen.
    """

    __slots__ = ("session_id", "method", "url", "request_id", "t0_ns", "t1_ns", "status", "error", "bytes_in",
                 "llm", "answered")

    def __init__(self, request: dict[str, Any], response: dict[str, Any] | None) -> None:
        self.session_id = request.get("session_id")
        self.method = str(request.get("method") or "?")
        self.url = str(request.get("url") or "?")
        self.request_id = request.get("request_id")
        t0 = request.get("t0_ns")
        self.t0_ns = t0 if isinstance(t0, int) else 0
        got = response or {}
        self.t1_ns = self.t0_ns + int(got.get("dt_ns") or 0)
        self.status = got.get("status")
        self.error = got.get("error", "no response" if response is None else None)
        self.bytes_in = got.get("bytes_in")
        self.llm = got.get("llm") if isinstance(got.get("llm"), dict) else None
        self.answered = response is not None

    @property
    def label(self) -> str:
        """``GET https://… → 200`` (the error, or nothing, in place of a status)."""
        head = f"{self.method} {self.url}"
        if not self.answered:
            return head
        return f"{head} → {self.status}" if self.status else f"{head} → {self.error or 'error'}"


class HttpPairs:
    """Pairs ``http_request`` and ``http_response`` events (by ``request_id``, else in order) into :class:`HttpCall`."""

    def __init__(self) -> None:
        self._waiting: dict[Any, deque[dict[str, Any]]] = {}

    def add(self, e: dict[str, Any]) -> list[HttpCall]:
        """Take one event; returns the HTTP calls it completes (a session's end closes its unanswered ones)."""
        kind = e.get("type")
        sid = e.get("session_id")
        if kind == "http_request":
            self._waiting.setdefault(sid, deque()).append(e)
        elif kind == "http_response":
            queue = self._waiting.get(sid)
            if queue:
                rid = e.get("request_id")
                match = next((r for r in queue if rid is not None and r.get("request_id") == rid), queue[0])
                queue.remove(match)
                return [HttpCall(match, e)]
        elif kind == "session_end":
            return [HttpCall(r, None) for r in self._waiting.pop(sid, ())]
        return []

    def close(self) -> list[HttpCall]:
        """The requests never answered, as calls without a response."""
        out = [HttpCall(r, None) for queue in self._waiting.values() for r in queue]
        self._waiting.clear()
        return out


def calls(events: Iterable[dict[str, Any]]) -> Iterator[Call]:
    """Every call of ``events``, in order of their end (calls never ended last, as incomplete).

    Args:
        events: events in the JSONL schema, each session's in order.
    Yields:
        :class:`Call` objects.
    """
    tree = CallTree()
    for e in events:
        yield from tree.add(e)
    yield from tree.close()
