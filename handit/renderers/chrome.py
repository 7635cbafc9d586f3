"""Chrome trace view: a stream of events -> the Trace Event format (Perfetto, chrome://tracing), written as it goes.

Format: https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU

- every session is a process (``pid`` 1, 2, … in order of appearance, named
  by its tag) and every thread a track in it (``tid`` = the thread ident);
- a call is a complete event (``"ph": "X"``) with ``ts`` and ``dur`` in
  microseconds, relative to the first timestamp in the trace; its ``args`` are
  the argument previews plus ``return``;
- a generator or coroutine is an async slice (``"b"`` / ``"e"``): its first
  start to final exit overlaps the calls that ran while it was suspended, which
  complete events on one track may not;
- an exception is an instant event (``"i"``) on the thread of the call it left;
- an HTTP call is an async slice on the session's ``http`` track (tid 0).

Only open calls are kept in memory; each event is written when its call ends.
"""
from __future__ import annotations

import json
from collections import deque
from typing import IO, Any

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
        self._open: dict[tuple[Any, Any], tuple[str, str, int, Any, dict[str, Any]]] = {}
        self._http: dict[Any, deque[tuple[int, str, int, Any]]] = {}
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

    def _tid(self, pid: int, thread: Any, name: str | None = None) -> Any:
        tid = thread if isinstance(thread, int) else 0
        named = self._threads.setdefault(pid, set())
        if tid not in named:
            named.add(tid)
            label = name or f"thread {tid}"
            self._emit({"name": "thread_name", "ph": "M", "ts": 0, "pid": pid, "tid": tid, "args": {"name": label}})
        return tid

    # -- input -----------------------------------------------------------------------------
    def add(self, e: dict[str, Any]) -> None:
        """Add one event in the JSONL schema."""
        kind = e.get("type")
        sid = e.get("session_id")
        if kind == "call":
            pid = self._pid(sid)
            tid = self._tid(pid, e.get("thread"))
            ts = e.get("t0_ns")
            self._us(ts)  # the first timestamp seen becomes the base
            self._open[(sid, e.get("call_id"))] = (
                str(e.get("func") or "?"), str(e.get("module") or "?"), ts if isinstance(ts, int) else 0, tid,
                dict(e.get("args_preview") or {}),
            )
        elif kind == "return":
            self._return(e, sid)
        elif kind == "exception":
            call = self._open.get((sid, e.get("call_id")))
            pid = self._pid(sid)
            tid = call[3] if call is not None else self._tid(pid, 0)
            self._emit({"name": str(e.get("type_name") or "exception"), "cat": "exception", "ph": "i", "s": "t",
                        "ts": self._us(e.get("ts_ns")), "pid": pid, "tid": tid,
                        "args": {"function": e.get("func"), "message": e.get("message")}})
        elif kind == "session_start":
            self._tags[sid] = e.get("tag")
            self._us(e.get("ts_ns"))
            self._pid(sid)
        elif kind == "session_end":
            for request in self._http.pop(sid, ()):
                self._http_slice(sid, request, None)
            if not any(key[0] == sid for key in self._open):  # a session's events end with it: forget it
                self._tags.pop(sid, None)
                self._threads.pop(self._pids.pop(sid, 0), None)
        elif kind == "http_request":
            self._async_id += 1
            t0 = e.get("t0_ns")
            self._us(t0)
            label = f"{e.get('method') or '?'} {e.get('url') or '?'}"
            self._http.setdefault(sid, deque()).append((self._async_id, label, t0 if isinstance(t0, int) else 0, e.get("request_id")))
        elif kind == "http_response":
            queue = self._http.get(sid)
            if queue:
                rid = e.get("request_id")
                match = next((r for r in queue if rid is not None and r[3] == rid), queue[0])
                queue.remove(match)
                self._http_slice(sid, match, e)

    def _return(self, e: dict[str, Any], sid: Any) -> None:
        call = self._open.pop((sid, e.get("call_id")), None)
        if call is None:
            return
        func, module, t0, tid, args = call
        pid = self._pid(sid)
        t1 = e.get("t1_ns")
        if not isinstance(t1, int):
            t1 = t0 + int(e.get("dt_ns") or 0)
        t1 = max(t1, t0)
        ret = (e.get("locals_preview") or {}).get("return")
        if ret is not None:
            args["return"] = ret
        for flag in ("raised", "incomplete", "abandoned"):
            if e.get(flag):
                args[flag] = True
        ts = self._us(t0)
        if "suspended_ns" in e:
            args["suspended_ns"] = e["suspended_ns"]
            self._async_id += 1
            ident = f"0x{self._async_id:x}"
            self._emit({"name": func, "cat": module, "ph": "b", "id": ident, "ts": ts, "pid": pid, "tid": tid, "args": args})
            self._emit({"name": func, "cat": module, "ph": "e", "id": ident, "ts": self._us(t1), "pid": pid, "tid": tid})
            return
        # dur from the rounded end, so ts + dur lands on the same value a child's end is rounded to
        self._emit({"name": func, "cat": module, "ph": "X", "ts": ts, "dur": round(self._us(t1) - ts, 3),
                    "pid": pid, "tid": tid, "args": args})

    def _http_slice(self, sid: Any, request: tuple[int, str, int, Any], response: dict[str, Any] | None) -> None:
        ident, label, t0, _ = request
        pid = self._pid(sid)
        tid = self._tid(pid, 0, "http")
        t1 = t0 + int((response or {}).get("dt_ns") or 0)
        args = {"status": (response or {}).get("status"), "error": (response or {}).get("error", "no response" if response is None else None)}
        if response is not None:
            args["bytes_in"] = response.get("bytes_in")
            if isinstance(response.get("llm"), dict):
                args.update(response["llm"])
            status = response.get("status")
            label = f"{label} → {status}" if status else f"{label} → {response.get('error') or 'error'}"
        common = {"name": label, "cat": "http", "id": f"http-{ident}", "pid": pid, "tid": tid}
        self._emit({**common, "ph": "b", "ts": self._us(t0), "args": args})
        self._emit({**common, "ph": "e", "ts": self._us(t1)})

    def close(self) -> None:
        """Write calls still open as complete events up to the last timestamp, then the closing brackets."""
        last = self._last
        for (sid, _), (func, module, t0, tid, args) in list(self._open.items()):
            args["incomplete"] = True
            self._emit({"name": func, "cat": module, "ph": "X", "ts": self._us(t0), "dur": round(self._us(max(last, t0)) - self._us(t0), 3),
                        "pid": self._pid(sid), "tid": tid, "args": args})
        self._open.clear()
        for sid in list(self._http):
            for request in self._http.pop(sid):
                self._http_slice(sid, request, None)
        self._flush()
        other = {"exporter": "handit", "source": self.name, "base_ns": self._base or 0}
        self._out.write(b"\n],\"displayTimeUnit\":\"ns\",\"otherData\":" + _encode(other).encode("utf-8", "backslashreplace") + b"}\n")
