"""Perfetto view: a stream of events -> Perfetto's native protobuf trace (what ui.perfetto.dev and its trace processor read), written as it goes.

Format: ``protos/perfetto/trace/trace.proto`` and ``track_event/*.proto`` in the Perfetto
repository (https://perfetto.dev/docs/reference/trace-packet-proto). The file is a
``Trace``: each ``TracePacket`` is written as field 1 (length-delimited), so packets
stream out one after the other and nothing is held but open calls. Encoded here by
hand (a few message types; no protobuf library needed).

- every session is a process track (named by its tag), every thread a thread track
  in it, every asyncio task a track whose parent is its thread's track (Perfetto
  draws it nested under the thread): tracks are :mod:`handit.calltree`'s;
- a call is a ``TYPE_SLICE_BEGIN`` / ``TYPE_SLICE_END`` pair on its track, written
  when it ends, its module as category, its argument previews, return value and
  flags as debug annotations; a call that does not nest on its track (interleaved generators) goes
  to a child track of it ("async 1", "async 2", ...) where it does;
- an exception is a ``TYPE_INSTANT`` event on its call's track;
- an HTTP call is a slice on the session's ``http`` tracks (one per overlap level).

Event, category and annotation names are interned (sent once per trace, then referred
to by number): a call costs about 45 bytes plus its previews, about half its Chrome
JSON (``docs/cli.md`` has the measurement).
Timestamps are epoch nanoseconds on Perfetto's default clock.
"""
from __future__ import annotations

from typing import IO, Any

from ..calltree import Call, CallTree, HttpCall, HttpPairs, Track
from ..records import put_varint

__all__ = ["PerfettoTraceWriter"]

_FLUSH_BYTES = 1 << 16
_SEQUENCE = 1  # trusted_packet_sequence_id: one writer, one sequence
_SEQ_CLEARED, _SEQ_NEEDS_STATE = 1, 2  # TracePacket.SequenceFlags
_BEGIN, _END, _INSTANT = 1, 2, 3  # TrackEvent.Type


def _varint(n: int) -> bytes:
    out = bytearray()
    put_varint(out, n if n >= 0 else n + (1 << 64))  # int64 fields: two's complement, ten bytes
    return bytes(out)


def _int(field: int, n: int) -> bytes:
    """A varint field (wire type 0)."""
    return _varint(field << 3) + _varint(n)


def _bytes(field: int, data: bytes) -> bytes:
    """A length-delimited field (wire type 2): strings and embedded messages."""
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _str(field: int, text: str) -> bytes:
    return _bytes(field, text.encode("utf-8", "backslashreplace"))


# TracePacket fields
_P_TIMESTAMP, _P_SEQ_ID, _P_TRACK_EVENT, _P_INTERNED, _P_FLAGS, _P_DESCRIPTOR = 8, 10, 11, 12, 13, 60
# TrackEvent fields
_E_CATEGORY_IID, _E_ANNOTATION, _E_TYPE, _E_NAME_IID, _E_TRACK = 3, 4, 9, 10, 11
# TrackDescriptor fields
_D_UUID, _D_NAME, _D_PROCESS, _D_THREAD, _D_PARENT = 1, 2, 3, 4, 5
# InternedData fields: event_categories, event_names, debug_annotation_names (each {iid = 1, name = 2})
_I_CATEGORIES, _I_EVENT_NAMES, _I_ANNOTATION_NAMES = 1, 2, 3
# DebugAnnotation fields
_A_NAME_IID, _A_BOOL, _A_INT, _A_STRING = 1, 2, 4, 6

_HEAD = _int(_P_SEQ_ID, _SEQUENCE) + _int(_P_FLAGS, _SEQ_NEEDS_STATE)
_END_HEAD = _int(_P_SEQ_ID, _SEQUENCE)  # an END names nothing interned


class PerfettoTraceWriter:
    """Writes events as a Perfetto protobuf trace.

    Args:
        out: a binary file opened for writing.
        name: the trace's name (the first process track's description).

    Use :meth:`add` for every event, then :meth:`close` (which does not close ``out``).

    Attributes:
        packets_written: trace packets written so far.
        bytes_written: bytes written so far.
    """

    def __init__(self, out: IO[bytes], name: str = "handit") -> None:
        self._out = out
        self._buf: list[bytes] = []
        self._held = 0
        self.name = name
        self.packets_written = 0
        self.bytes_written = 0
        self._tree = CallTree()
        self._uuids = 0
        self._pids: dict[Any, tuple[int, int]] = {}  # session -> (pid, process track uuid)
        self._tags: dict[Any, Any] = {}
        self._tracks: dict[Any, int] = {}  # calltree track key -> uuid
        self._tids = 0
        self._lanes: dict[Any, list[list[int]]] = {}  # parent uuid -> [[uuid, last end ns], ...]
        self._names: dict[str, int] = {}
        self._categories: dict[str, int] = {}
        self._annotations: dict[str, int] = {}
        self._http = HttpPairs()
        self._packet(_int(_P_SEQ_ID, _SEQUENCE) + _int(_P_FLAGS, _SEQ_CLEARED))

    # -- output ----------------------------------------------------------------------------
    def _packet(self, body: bytes) -> None:
        data = _bytes(1, body)
        self._buf.append(data)
        self._held += len(data)
        self.packets_written += 1
        self.bytes_written += len(data)
        if self._held >= _FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._buf:
            self._out.write(b"".join(self._buf))
            self._buf.clear()
            self._held = 0

    def _uuid(self) -> int:
        self._uuids += 1
        return self._uuids

    def _interned(self, table: dict[str, int], field: int, text: str, new: list[bytes]) -> int:
        iid = table.get(text)
        if iid is None:
            iid = table[text] = len(table) + 1
            new.append(_bytes(field, _int(1, iid) + _str(2, text)))
        return iid

    # -- tracks ----------------------------------------------------------------------------
    def _process(self, sid: Any) -> int:
        got = self._pids.get(sid)
        if got is None:
            pid, uuid = len(self._pids) + 1, self._uuid()
            got = self._pids[sid] = (pid, uuid)
            tag = self._tags.get(sid)
            label = f"{tag} ({str(sid)[:8]})" if tag is not None else f"session {str(sid)[:8]}"
            process = _int(1, pid) + _str(6, label)
            self._packet(_HEAD + _bytes(_P_DESCRIPTOR, _int(_D_UUID, uuid) + _bytes(_D_PROCESS, process)))
        return got[1]

    def _track(self, track: Track, again: bool = False) -> int:
        uuid = self._tracks.get(track.key)
        if uuid is not None and not again:
            return uuid
        parent = self._process(track.session_id)
        if track.task_id is None:
            uuid = self._tracks[track.key] = self._uuid()
            self._tids += 1
            thread = _int(1, self._pids[track.session_id][0]) + _int(2, self._tids) + _str(5, track.name)
            body = _int(_D_UUID, uuid) + _int(_D_PARENT, parent) + _bytes(_D_THREAD, thread)
        else:
            host = self._tree.tracks.get((track.session_id, "thread", track.thread))
            if host is not None:
                parent = self._track(host)
            if uuid is None:
                uuid = self._tracks[track.key] = self._uuid()
            body = _int(_D_UUID, uuid) + _int(_D_PARENT, parent) + _str(_D_NAME, track.name)
        self._packet(_HEAD + _bytes(_P_DESCRIPTOR, body))
        return uuid

    def _lane(self, parent: int, label: str, start: int, end: int) -> int:
        """A child track of ``parent`` where the slice ``start``-``end`` overlaps nothing (made as needed)."""
        lanes = self._lanes.setdefault(parent, [])
        for lane in lanes:
            if lane[1] <= start:
                lane[1] = end
                return lane[0]
        uuid = self._uuid()
        lanes.append([uuid, end])
        self._packet(_HEAD + _bytes(_P_DESCRIPTOR, _int(_D_UUID, uuid) + _int(_D_PARENT, parent)
                                    + _str(_D_NAME, f"{label} {len(lanes)}")))
        return uuid

    # -- events ----------------------------------------------------------------------------
    def _slice(self, track: int, name: str, t0: int, t1: int, notes: dict[str, Any], category: str = "") -> None:
        new_names: list[bytes] = []
        new_notes: list[bytes] = []
        name_iid = self._interned(self._names, _I_EVENT_NAMES, name, new_names)
        head = _int(_E_CATEGORY_IID, self._interned(self._categories, _I_CATEGORIES, category, new_names)) if category else b""
        annotations = b"".join(
            _bytes(_E_ANNOTATION, _int(_A_NAME_IID, self._interned(self._annotations, _I_ANNOTATION_NAMES, key, new_notes))
                   + (_int(_A_BOOL, 1) if value is True else _int(_A_INT, value) if isinstance(value, int)
                      else _str(_A_STRING, str(value))))
            for key, value in notes.items() if value is not None)
        interned = _bytes(_P_INTERNED, b"".join(new_names + new_notes)) if new_names or new_notes else b""
        event = head + _int(_E_TYPE, _BEGIN) + _int(_E_TRACK, track) + _int(_E_NAME_IID, name_iid) + annotations
        self._packet(_int(_P_TIMESTAMP, t0) + _HEAD + interned + _bytes(_P_TRACK_EVENT, event))
        self._packet(_int(_P_TIMESTAMP, max(t1, t0)) + _END_HEAD
                     + _bytes(_P_TRACK_EVENT, _int(_E_TYPE, _END) + _int(_E_TRACK, track)))

    def _call(self, call: Call) -> None:
        track = self._track(call.track)
        if not call.nests:
            track = self._lane(track, "async", call.t0_ns, call.t1_ns)
        notes: dict[str, Any] = dict(call.args)
        notes["return"] = call.ret
        if call.suspendable:
            notes["suspended_ns"] = call.suspended_ns
        for flag in call.flags:
            notes[flag] = True
        self._slice(track, call.func, call.t0_ns, call.t1_ns, notes, call.module)

    def add(self, e: dict[str, Any]) -> None:
        """Add one event in the JSONL schema."""
        kind = e.get("type")
        sid = e.get("session_id")
        if kind == "call" or kind == "return":
            for call in self._tree.add(e):  # a return ends a call
                self._call(call)
        elif kind == "exception":
            call = self._tree.open_call(sid, e.get("call_id"))
            self._tree.add(e)
            ts = e.get("ts_ns")
            if call is None or not isinstance(ts, int):
                return
            new: list[bytes] = []
            iid = self._interned(self._names, _I_EVENT_NAMES, str(e.get("type_name") or "exception"), new)
            note = self._interned(self._annotations, _I_ANNOTATION_NAMES, "message", new)
            event = (_int(_E_TYPE, _INSTANT) + _int(_E_TRACK, self._track(call.track)) + _int(_E_NAME_IID, iid)
                     + _bytes(_E_ANNOTATION, _int(_A_NAME_IID, note) + _str(_A_STRING, str(e.get("message") or ""))))
            interned = _bytes(_P_INTERNED, b"".join(new)) if new else b""
            self._packet(_int(_P_TIMESTAMP, ts) + _HEAD + interned + _bytes(_P_TRACK_EVENT, event))
        elif kind == "task_name":  # a task renamed: its track's descriptor again, with the name it ended with
            track = self._tree.rename(e)
            if track is not None and track.key in self._tracks:
                self._track(track, again=True)
        elif kind == "session_start":
            self._tags[sid] = e.get("tag")
            self._process(sid)
        elif kind in ("session_end", "http_request", "http_response"):
            for http in self._http.add(e):
                self._http_slice(http)

    def _http_slice(self, http: HttpCall) -> None:
        notes: dict[str, Any] = {"status": http.status, "error": http.error, "bytes_in": http.bytes_in}
        notes.update({k: v for k, v in (http.llm or {}).items() if isinstance(v, (str, int, bool))})
        track = self._lane(self._process(http.session_id), "http", http.t0_ns, http.t1_ns)
        self._slice(track, http.label, http.t0_ns, http.t1_ns, notes, "http")

    def close(self) -> None:
        """End calls still open at the latest time seen (as incomplete) and write what is buffered."""
        for call in self._tree.close():
            self._call(call)
        for http in self._http.close():
            self._http_slice(http)
        self._flush()
