"""Chrome trace view: a stream of events -> the Trace Event format (Perfetto, chrome://tracing), written as it goes.

Format: https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU

- every session is a process (``pid`` 1, 2, … in order of appearance, named
  by its tag) and every track of :mod:`handit.calltree` a thread in it: a thread
  (``tid`` = the thread ident) or an asyncio task (``tid`` = the task's number,
  named ``<task name> · <thread>`` and sorted right after its thread), so
  concurrent coroutines never share a track;
- a call is a complete event (``"ph": "X"``) with ``ts`` and ``dur`` in
  microseconds, relative to the first timestamp in the trace; its ``args`` are
  the argument previews plus ``return``;
- a call that does not nest on its track (a generator interleaved with others,
  :attr:`handit.calltree.Call.nests`) is an async slice (``"b"`` / ``"e"``), so
  complete events on one track never overlap partly;
- an exception is an instant event (``"i"``) on the thread of the call it left;
- an HTTP call is an async slice on the session's ``http`` track (tid 0).

Only open calls are kept in memory; each event is written when its call ends.
"""
from __future__ import annotations

import json
from typing import IO, Any

from ..calltree import Call, CallTree, HttpCall, HttpPairs, Track

__all__ = ["ChromeTraceWriter"]

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode
_FLUSH_EVERY = 2_000


class ChromeTraceWriter:
    """Writes events as a Trace Event format JSON object, one event a line.

    Args:
        out: a binary file opened for writing.
        name: recorded in ``otherData``.

    Use :meth:`add` for every event, then :meth:`close` (which does not close ``out``).
    """

    def __init__(self, out: IO[bytes], name: str = "handit") -> None:
        self._out = out
        self._buf: list[str] = []
        self._first = True
        self._base: int | None = None
        self._last = 0
        self._pids: dict[Any, int] = {}
        self._next_pid = 0
        self._tags: dict[Any, Any] = {}
        self._threads: dict[int, set[Any]] = {}  # pid -> tids named so far
        self._tree = CallTree()
        self._http = HttpPairs()
        self._async_id = 0
        self.name = name
        self.events_written = 0
        out.write(b'{"traceEvents":[\n')

    # -- output ----------------------------------------------------------------------------
    def _emit(self, event: dict[str, Any]) -> None:
        self._buf.append(_encode(event))
        self.events_written += 1
        if len(self._buf) >= _FLUSH_EVERY:
            self._flush()

    def _flush(self) -> None:
        if not self._buf:
            return
        text = ",\n".join(self._buf)
        if not self._first:
            text = ",\n" + text
        self._first = False
        self._buf.clear()
        # a lone surrogate (an undecodable file name) becomes the JSON escape \udcXX
        self._out.write(text.encode("utf-8", "backslashreplace"))

    def _us(self, ns: Any) -> float:
        if not isinstance(ns, int):
            ns = self._base or 0
        if self._base is None:
            self._base = ns
        if ns > self._last:
            self._last = ns
        return round((ns - self._base) / 1000, 3)

    def _pid(self, sid: Any) -> int:
        pid = self._pids.get(sid)
        if pid is None:
            self._next_pid += 1
            pid = self._pids[sid] = self._next_pid
            tag = self._tags.get(sid)
            label = f"{tag} ({str(sid)[:8]})" if tag is not None else f"session {str(sid)[:8]}"
            self._emit({"name": "process_name", "ph": "M", "ts": 0, "pid": pid, "tid": 0, "args": {"name": label}})
            self._emit({"name": "process_sort_index", "ph": "M", "ts": 0, "pid": pid, "tid": 0, "args": {"sort_index": pid}})
        return pid

    def _tid(self, pid: int, thread: Any, name: str | None = None, sort_index: int | None = None) -> Any:
        tid = thread if isinstance(thread, int) else 0
        named = self._threads.setdefault(pid, set())
        if tid not in named:
            named.add(tid)
            label = name or f"thread {tid}"
            self._emit({"name": "thread_name", "ph": "M", "ts": 0, "pid": pid, "tid": tid, "args": {"name": label}})
            if sort_index is not None:
                self._emit({"name": "thread_sort_index", "ph": "M", "ts": 0, "pid": pid, "tid": tid,
                            "args": {"sort_index": sort_index}})
        return tid

    def _track_tid(self, pid: int, track: Track) -> Any:
        """The tid of a call tree track: its thread's ident, or a task's number (named after its thread)."""
        if track.task_id is None:
            return self._tid(pid, track.thread, track.name, track.index * 2)
        thread = self._tree.tracks.get((track.session_id, "thread", track.thread))
        where = thread.name if thread is not None else f"thread {track.thread}"
        return self._tid(pid, track.task_id, f"{track.name} · {where}", (thread.index if thread else track.index) * 2 + 1)

    # -- input -----------------------------------------------------------------------------
    def add(self, e: dict[str, Any]) -> None:
        """Add one event in the JSONL schema."""
        kind = e.get("type")
        sid = e.get("session_id")
        if kind == "call":
            self._pid(sid)
            self._us(e.get("t0_ns"))  # the first timestamp seen becomes the base
            self._tree.add(e)
        elif kind == "return":
            for call in self._tree.add(e):
                self._call(call)
        elif kind == "task_name":  # a task renamed: its track says the name it ended with
            track = self._tree.rename(e)
            pid = self._pids.get(sid) if track is not None else None
            if track is not None and pid is not None and track.task_id in self._threads.get(pid, ()):
                self._threads[pid].discard(track.task_id)
                self._track_tid(pid, track)
        elif kind == "exception":
            call = self._tree.open_call(sid, e.get("call_id"))
            pid = self._pid(sid)
            tid = self._track_tid(pid, call.track) if call is not None else self._tid(pid, 0)
            self._emit({"name": str(e.get("type_name") or "exception"), "cat": "exception", "ph": "i", "s": "t",
                        "ts": self._us(e.get("ts_ns")), "pid": pid, "tid": tid,
                        "args": {"function": e.get("func"), "message": e.get("message")}})
        elif kind == "session_start":
            self._tags[sid] = e.get("tag")
            self._us(e.get("ts_ns"))
            self._pid(sid)
        elif kind == "session_end":
            for http in self._http.add(e):
                self._http_slice(http)
            named = self._pids.get(sid)
            for ident, name in (e.get("threads") or {}).items():  # the threads' names, known at the end
                if named is not None and str(ident).isdigit() and int(ident) in self._threads.get(named, ()):
                    self._emit({"name": "thread_name", "ph": "M", "ts": 0, "pid": named, "tid": int(ident), "args": {"name": name}})
            if not self._tree.has_open(sid):  # a session's events end with it: forget it
                self._tags.pop(sid, None)
                self._threads.pop(self._pids.pop(sid, 0), None)
        elif kind == "http_request" or kind == "http_response":
            if kind == "http_request":
                self._us(e.get("t0_ns"))
            for http in self._http.add(e):
                self._http_slice(http)

    def _call(self, call: Call) -> None:
        pid = self._pid(call.session_id)
        tid = self._track_tid(pid, call.track)
        args = call.args
        if call.ret is not None:
            args["return"] = call.ret
        for flag in call.flags:
            args[flag] = True
        if call.track.task_id is not None:
            args["task"] = call.track.name
        ts = self._us(call.t0_ns)
        if call.suspendable:
            args["suspended_ns"] = call.suspended_ns
        if not call.nests:
            self._async_id += 1
            ident = f"0x{self._async_id:x}"
            self._emit({"name": call.func, "cat": call.module, "ph": "b", "id": ident, "ts": ts, "pid": pid, "tid": tid, "args": args})
            self._emit({"name": call.func, "cat": call.module, "ph": "e", "id": ident, "ts": self._us(call.t1_ns), "pid": pid, "tid": tid})
            return
        # dur from the rounded end, so ts + dur lands on the same value a child's end is rounded to
        self._emit({"name": call.func, "cat": call.module, "ph": "X", "ts": ts, "dur": round(self._us(call.t1_ns) - ts, 3),
                    "pid": pid, "tid": tid, "args": args})

    def _http_slice(self, http: HttpCall) -> None:
        pid = self._pid(http.session_id)
        tid = self._tid(pid, 0, "http")
        args = {"status": http.status, "error": http.error}
        if http.answered:
            args["bytes_in"] = http.bytes_in
            args.update(http.llm or {})
        self._async_id += 1
        common = {"name": http.label, "cat": "http", "id": f"http-{self._async_id}", "pid": pid, "tid": tid}
        self._emit({**common, "ph": "b", "ts": self._us(http.t0_ns), "args": args})
        self._emit({**common, "ph": "e", "ts": self._us(http.t1_ns)})

    def close(self) -> None:
        """Write calls still open as complete events up to the last timestamp, then the closing brackets."""
        for call in self._tree.close(self._last):
            self._call(call)
        for http in self._http.close():
            self._http_slice(http)
        self._flush()
        other = {"exporter": "handit", "source": self.name, "base_ns": self._base or 0}
        self._out.write(b"\n],\"displayTimeUnit\":\"ns\",\"otherData\":" + _encode(other).encode("utf-8", "backslashreplace") + b"}\n")
