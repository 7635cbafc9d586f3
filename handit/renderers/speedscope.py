"""Speedscope view: a stream of events -> speedscope's file format, one "evented" profile per session and track.

Tracks are :mod:`handit.calltree`'s: a thread, or an asyncio task (its own stack),
so concurrent coroutines are never drawn as nested in one another.

Format: https://www.speedscope.app/file-format-schema.json. Frames (function,
file, line) are shared by every profile; a profile lists open (``O``) and close
(``C``) events with times in nanoseconds from the first timestamp in the trace.

Speedscope needs each profile's events in time order and properly nested. A
generator or coroutine that finishes while a call it did not make is open (two
interleaved generators) has the calls above it closed and reopened at that
instant. Events are gathered per profile; past ``spill_bytes`` in memory they
go to a temporary file, and :meth:`SpeedscopeWriter.close` writes the profiles
one after the other.
"""
from __future__ import annotations

import json
import tempfile
from typing import IO, Any

from ..calltree import CallTree

__all__ = ["SCHEMA", "SpeedscopeWriter"]

SCHEMA = "https://www.speedscope.app/file-format-schema.json"
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


class _Profile:
    __slots__ = ("name", "stack", "buf", "chunks", "start", "last", "count")

    def __init__(self, name: str) -> None:
        self.name = name
        self.stack: list[tuple[Any, int]] = []  # (call_id, frame index)
        self.buf: list[str] = []
        self.chunks: list[tuple[int, int]] = []  # (offset, length) in the spill file
        self.start: int | None = None
        self.last = 0
        self.count = 0


class SpeedscopeWriter:
    """Writes events as a speedscope JSON file.

    Args:
        out: a binary file opened for writing.
        name: the file's title in speedscope.
        spill_bytes: events held in memory before they move to a temporary file.

    Use :meth:`add` for every event, then :meth:`close` (which does not close ``out``).
    """

    def __init__(self, out: IO[bytes], name: str = "handit", spill_bytes: int = 16 << 20) -> None:
        self._out = out
        self.name = name
        self._spill_limit = spill_bytes
        self._held = 0
        self._spill: IO[bytes] | None = None
        self._frames: dict[tuple[str, str, int], int] = {}
        self._profiles: dict[tuple[Any, Any], _Profile] = {}
        self._open: dict[tuple[Any, Any], _Profile] = {}
        self._tags: dict[Any, Any] = {}
        self._base: int | None = None
        self._tree = CallTree()

    def _frame(self, e: dict[str, Any]) -> int:
        module = str(e.get("module") or "")
        func = str(e.get("func") or "?")
        key = (func if module in ("", "__main__", "?") else f"{module}.{func}", str(e.get("file") or ""), int(e.get("line") or 0))
        index = self._frames.get(key)
        if index is None:
            index = self._frames[key] = len(self._frames)
        return index

    def _at(self, profile: _Profile, ns: Any) -> int:
        if not isinstance(ns, int):
            ns = profile.last + (self._base or 0)
        if self._base is None:
            self._base = ns
        at = max(ns - self._base, profile.last)  # never backwards (an abandoned generator ends in the past)
        if profile.start is None:
            profile.start = at
        profile.last = at
        return at

    def _event(self, profile: _Profile, kind: str, frame: int, at: int) -> None:
        text = f'{{"type":"{kind}","frame":{frame},"at":{at}}}'
        profile.buf.append(text)
        profile.count += 1
        self._held += len(text) + 65  # the str object and its list slot
        if self._held >= self._spill_limit:
            self._spill_all()

    def _spill_all(self) -> None:
        if self._spill is None:
            self._spill = tempfile.TemporaryFile(prefix="handit-speedscope-")
        for profile in self._profiles.values():
            if profile.buf:
                data = ",".join(profile.buf).encode()
                profile.chunks.append((self._spill.tell(), len(data)))
                self._spill.write(data)
                profile.buf.clear()
        self._held = 0

    def add(self, e: dict[str, Any]) -> None:
        """Add one event in the JSONL schema (calls and returns; session starts name the profiles)."""
        kind = e.get("type")
        sid = e.get("session_id")
        if kind == "call":
            self._tree.add(e)
            track = self._tree.track_of(e)
            profile = self._profiles.get(track.key)
            if profile is None:
                profile = self._profiles[track.key] = _Profile(self._label(track))
            frame = self._frame(e)
            self._event(profile, "O", frame, self._at(profile, e.get("t0_ns")))
            profile.stack.append((e.get("call_id"), frame))
            self._open[(sid, e.get("call_id"))] = profile
        elif kind == "return":
            self._tree.add(e)
            profile = self._open.pop((sid, e.get("call_id")), None)
            if profile is not None:
                self._close_call(profile, e.get("call_id"), e.get("t1_ns"))
        elif kind == "task_name":  # a task renamed: its profile says the name it ended with
            track = self._tree.rename(e)
            profile = self._profiles.get(track.key) if track is not None else None
            if profile is not None:
                profile.name = self._label(track)
        elif kind == "session_start":
            self._tags[sid] = e.get("tag")
        elif kind == "session_end":
            self._tags.pop(sid, None)
            for ident, name in (e.get("threads") or {}).items():  # the threads' names, known at the end
                profile = self._profiles.get((sid, "thread", int(ident))) if str(ident).isdigit() else None
                if profile is not None:
                    profile.name = profile.name.rsplit(" · ", 1)[0] + f" · {name}"

    def _label(self, track: Any) -> str:
        sid = track.session_id
        tag = self._tags.get(sid)
        where = track.name
        if track.task_id is not None:
            thread = self._tree.tracks.get((sid, "thread", track.thread))
            where = f"{track.name} · {thread.name if thread is not None else f'thread {track.thread}'}"
        return f"{tag if tag is not None else 'session'} {str(sid)[:8]} · {where}"

    def _close_call(self, profile: _Profile, call_id: Any, t1: Any) -> None:
        stack = profile.stack
        for pos in range(len(stack) - 1, -1, -1):
            if stack[pos][0] == call_id:
                break
        else:
            return
        at = self._at(profile, t1)
        above = stack[pos + 1:]
        for _, frame in reversed(above):  # close what is above, then reopen it: speedscope needs nesting
            self._event(profile, "C", frame, at)
        self._event(profile, "C", stack[pos][1], at)
        del stack[pos:]
        for entry in above:
            self._event(profile, "O", entry[1], at)
            stack.append(entry)

    def close(self) -> None:
        """Close calls still open at their profile's last time, and write the whole file."""
        for profile in self._profiles.values():
            while profile.stack:
                _, frame = profile.stack.pop()
                self._event(profile, "C", frame, profile.last)
        self._open.clear()
        out = self._out
        head = {"$schema": SCHEMA, "name": self.name, "exporter": "handit", "activeProfileIndex": 0}
        out.write(_encode(head)[:-1].encode("utf-8", "backslashreplace") + b',"profiles":[')
        first = True
        for profile in self._profiles.values():
            if not profile.count:
                continue
            meta = {"type": "evented", "name": profile.name, "unit": "nanoseconds",
                    "startValue": profile.start or 0, "endValue": profile.last}
            out.write((b"" if first else b",\n") + _encode(meta)[:-1].encode("utf-8", "backslashreplace") + b',"events":[')
            first = False
            sep = b""
            for offset, length in profile.chunks:
                assert self._spill is not None
                self._spill.seek(offset)
                out.write(sep + self._spill.read(length))
                sep = b","
            if profile.buf:
                out.write(sep + ",".join(profile.buf).encode())
            out.write(b"]}")
        frames = [{"name": name, "file": file, "line": line} if line else {"name": name, "file": file}
                  for (name, file, line) in self._frames]
        out.write(b'],\n"shared":{"frames":' + _encode(frames).encode("utf-8", "backslashreplace") + b"}}\n")
        if self._spill is not None:
            self._spill.close()
            self._spill = None
