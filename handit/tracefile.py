"""Trace file stage: sessions' encoded blocks -> the compact .handit file, and back.

A file is a magic and frames (the framing, with its checks and resynchronisation,
is :mod:`handit.frames`). Frame types: ``S`` session start (JSON object), ``E``
session end (JSON object), ``C`` code table entries (JSON list of ``[index,
module, qualname, file, line, argnames]``), ``B`` a block (16-byte session UUID
+ the encoded block, see :mod:`handit.reader`), ``J`` extra events (JSON list
of event dicts), ``F`` a session's folded figures (16-byte session UUID + JSON,
:mod:`handit.blocks`) written before its end, so a summary needs no block
decoded. The stream id is random per writer (process and file), so several
processes can append to one file without their code tables colliding. Every
frame reaches the file in one ``write`` on an ``O_APPEND`` descriptor, so
appenders never interleave inside a frame, and a crash leaves at worst a cut
last frame, which readers report and skip.
"""
from __future__ import annotations

import json
import os
import threading
import uuid
import warnings
from typing import Any, Callable, Collection, Iterable, Iterator, NamedTuple

from .appendfile import MAX_PIECES, flusher, open_append, write_all, write_pieces
from .frames import (
    HEADER_SIZE, MAGIC, MAGIC_V1, MAX_PAYLOAD, PROGRESS_STEP, READ_BUFFER, FrameReport, TraceFileWarning,
    TraceFormatError, frame_header_of, iter_frames,
)
from .reader import TraceBuilder

__all__ = [
    "HEADER_SIZE", "MAGIC", "Folds", "StoredCode", "TraceFileWarning", "TraceFileWriter", "TraceFormatError",
    "detect_format", "iter_events", "iter_frames", "iter_session_blocks", "iter_trace", "open_append",
    "read_folds", "read_trace", "write_all",
]

FRAME_TYPES = frozenset((b"S", b"E", b"C", b"B", b"J"))
BUFFER_BYTES = 64 * 1024  # small frames gathered into one write (what waits here counts as the program's memory under tracemalloc)
FLUSH_INTERVAL = 1.0  # seconds a frame may wait in memory (HANDIT_FLUSH_EVERY_MS)

MakeBuilder = Callable[[str, Callable[[int], Any]], Any]  # see iter_trace's make_builder
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode


def _json_bytes(obj: Any) -> bytes:
    # backslashreplace turns a lone surrogate into the JSON escape \udcXX, which reads back as itself
    return _dumps(obj).encode("utf-8", "backslashreplace")


class StoredCode(NamedTuple):
    """One code table entry read from a trace file (what a TraceBuilder looks up by index)."""

    module: str
    qualname: str
    file: str
    line: int
    argnames: tuple[str, ...]


class TraceFileWriter:
    """Appends sessions' records to a .handit trace file.

    Small frames are gathered in memory (up to ``buffer_bytes``, for at most
    ``flush_interval`` seconds) and written together; every ``os.write`` holds
    whole frames only. The timed flush runs on handit's flush thread
    (:data:`handit.appendfile.flusher`), so a process killed with SIGKILL loses
    at most about the last interval. Thread-safe. After ``fork()`` the child
    writes under a new stream id and drops what the parent had buffered (the
    parent writes that). Appending to a version 1 file first writes the
    current magic, which switches readers to the current frame format.

    Args:
        path: the trace file; created with mode 0600, appended to if it exists.
        buffer_bytes: how much to gather before writing.
        flush_interval: seconds a frame may wait in memory; None: only
            ``buffer_bytes`` and :meth:`flush` write.
    Raises:
        OSError: the file cannot be opened or created.

    Attributes:
        bytes_written: bytes that reached the file.
        frames_written: frames that reached the file.
        lost_bytes: bytes dropped because a write failed.
    """

    def __init__(self, path: str, *, buffer_bytes: int = BUFFER_BYTES, flush_interval: float | None = FLUSH_INTERVAL) -> None:
        self.path = path
        self._fd: int | None = open_append(path)
        self._limit = buffer_bytes
        self._interval = flush_interval
        self._lock = threading.Lock()
        self._buf: list[bytes] = []
        self._size = 0
        self._frames = 0
        self.bytes_written = 0
        self.frames_written = 0
        self.lost_bytes = 0
        self._pid = os.getpid()
        self.stream_id = os.urandom(8)
        self._written_codes: set[int] = set()
        try:
            # Two processes may both see an empty file and both write the magic;
            # readers skip a magic found where a frame should start.
            if os.fstat(self._fd).st_size == 0 or _starts_with(path, MAGIC_V1):
                write_all(self._fd, MAGIC)
                self.bytes_written += len(MAGIC)
        except OSError:
            os.close(self._fd)
            raise

    def __repr__(self) -> str:
        return f"<TraceFileWriter {self.path!r} stream={self.stream_id.hex()} written={self.bytes_written}>"

    def __enter__(self) -> TraceFileWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _after_fork(self) -> None:
        self._pid = os.getpid()
        self._buf.clear()
        self._size = 0
        self._frames = 0
        self.stream_id = os.urandom(8)
        self._written_codes = set()

    def _frame(self, ftype: bytes, *parts: bytes) -> None:
        with self._lock:
            self._append_locked(ftype, parts)

    def _append_locked(self, ftype: bytes, parts: tuple[bytes, ...]) -> None:
        size = sum(map(len, parts))
        if size > MAX_PAYLOAD:
            raise ValueError(f"a {ftype.decode()} frame of {size} bytes exceeds the 4 GiB frame limit")
        if self._fd is None:
            raise ValueError(f"trace file writer for {self.path!r} is closed")
        if os.getpid() != self._pid:
            self._after_fork()
        total = HEADER_SIZE + size
        if self._buf and (self._size + total > self._limit or len(self._buf) + len(parts) >= MAX_PIECES):
            self._flush_locked()
        # the parts stay as they are, written by one writev: a block is never copied here
        # (under tracemalloc a block, its joined copy and the buffer's were the program's memory)
        self._buf.append(frame_header_of(ftype, self.stream_id, parts))
        self._buf.extend(parts)
        self._size += total
        self._frames += 1
        if self._size >= self._limit:
            self._flush_locked()
        elif self._frames == 1 and self._interval is not None:
            flusher.due(self, self._interval)

    def _flush_locked(self) -> None:
        if not self._buf or self._fd is None:
            return
        pieces = self._buf
        size = self._size
        frames = self._frames
        self._buf = []
        self._size = 0
        self._frames = 0
        try:
            write_pieces(self._fd, pieces)
        except OSError:
            self.lost_bytes += size
            self._written_codes = set()  # a lost C frame: send the whole table again
            raise
        self.bytes_written += size
        self.frames_written += frames

    def session_start(self, event: dict[str, Any]) -> None:
        """Write a ``session_start`` event (an S frame)."""
        self._frame(b"S", _json_bytes(event))

    def session_end(self, event: dict[str, Any]) -> None:
        """Write a ``session_end`` event (an E frame)."""
        self._frame(b"E", _json_bytes(event))

    def codes(self, infos: Iterable[Any]) -> None:
        """Write the code table entries this writer has not written yet (a C frame).

        Args:
            infos: objects with ``index``, ``module``, ``qualname``, ``file``,
                ``line`` and ``argnames`` (e.g. the engine's CodeInfo list).
        """
        with self._lock:  # marking and queueing together: no block can overtake its codes
            if os.getpid() != self._pid:
                self._after_fork()
            written = self._written_codes
            new = [i for i in infos if i.index not in written]
            if not new:
                return
            rows = [[i.index, i.module, i.qualname, i.file, i.line, list(i.argnames)] for i in new]
            self._append_locked(b"C", (_json_bytes(rows),))
            written.update(i.index for i in new)

    def block(self, session_id: str, block: bytes) -> None:
        """Write one encoded block of session ``session_id`` (a B frame).

        Raises:
            ValueError: ``session_id`` is not a UUID.
        """
        self._frame(b"B", uuid.UUID(session_id).bytes, block)

    def fold(self, session_id: str, figures: dict[str, Any]) -> None:
        """Write a session's folded figures (:meth:`handit.blocks.Fold.to_json`) as an F frame.

        Raises:
            ValueError: ``session_id`` is not a UUID.
        """
        self._frame(b"F", uuid.UUID(session_id).bytes, _json_bytes(figures))

    def events(self, events: list[dict[str, Any]]) -> None:
        """Write events made outside the engine (HTTP calls, the low-level API) as J frames."""
        if not events:
            return
        data = _json_bytes(events)
        if len(data) > MAX_PAYLOAD and len(events) > 1:
            half = len(events) // 2
            self.events(events[:half])
            self.events(events[half:])
            return
        self._frame(b"J", data)

    def end_offset(self) -> int:
        """The file's size now: every frame this writer writes later starts at or after it
        (writes hold whole frames; taken under the writer's lock, so never inside one of its writes)."""
        with self._lock:
            return os.fstat(self._fd).st_size if self._fd is not None else 0

    def flush(self, timeout: float | None = None) -> None:
        """Write what is buffered.

        Raises:
            OSError: the write failed; the buffered frames are dropped and
                counted in :attr:`lost_bytes`.
        """
        with self._lock:
            if os.getpid() != self._pid:
                self._after_fork()
            self._flush_locked()

    def close(self) -> None:
        """Flush and close the file; later writes raise ValueError."""
        with self._lock:
            if self._fd is None:
                return
            try:
                if os.getpid() == self._pid:
                    self._flush_locked()
            finally:
                os.close(self._fd)
                self._fd = None


def _starts_with(path: str, magic: bytes) -> bool:
    with open(path, "rb") as f:
        return f.read(len(magic)) == magic


# ---- reading ---------------------------------------------------------------------------------


class _Open:
    """A session seen in the file whose end has not been read yet."""

    __slots__ = ("builder", "t0", "raw")

    def __init__(self, builder: Any, t0: int | None, raw: bytes | None) -> None:
        self.builder = builder
        self.t0 = t0
        self.raw = raw


def _session_raw(session_id: str) -> bytes | None:
    try:
        return uuid.UUID(session_id).bytes
    except (ValueError, AttributeError, TypeError):
        return None  # not a UUID: it has no blocks


def iter_trace(
    path: str, *, progress: Callable[[int, int], None] | None = None, report: FrameReport | None = None,
    skip_blocks: Collection[str] = (), no_blocks: bool = False, make_builder: MakeBuilder | None = None,
) -> Iterator[dict[str, Any]]:
    """Stream the events of a .handit file in the JSONL schema, in file order.

    Per session: its ``session_start``; ``call`` / ``return`` / ``exception``
    events decoded through one :class:`~handit.reader.TraceBuilder`; extra
    events as stored (HTTP ones once linked to their calls, see :meth:`~handit.reader.TraceBuilder.extra`); its ``session_end``, preceded by the returns of calls
    still open. A session without an end frame (the process crashed) is
    finished at its last seen timestamp and gets a synthetic ``session_end``
    with ``"incomplete": true``. Memory stays bounded: the file is read in
    chunks, and only open sessions' stacks and code tables are kept.

    Damage (frames that fail their check, frames or blocks that cannot be
    decoded, a cut last frame) is skipped; what is intact is read, and one
    :class:`TraceFileWarning` at the end says what was wrong.

    Args:
        path: the trace file.
        progress: called with ``(bytes_read, total_bytes)`` now and then.
        report: filled with what was damaged (and warned about all the same).
        skip_blocks: sessions whose blocks are not decoded (their summary comes from F frames).
        no_blocks: decode no block at all (block frames are skipped unread).
        make_builder: ``(session id, code lookup) -> builder or None``: a session's blocks go to
            the builder it returns (an object like :class:`~handit.reader.TraceBuilder`, e.g.
            :class:`handit.walk.WalkedSession`, which yields no call events) instead of a TraceBuilder.
    Yields:
        event dicts.
    Raises:
        TraceFormatError: the file is not a handit trace file.
    """
    tables: dict[bytes, dict[int, StoredCode]] = {}
    sessions: dict[str, _Open] = {}
    by_raw: dict[bytes, str] = {}
    late: dict[str, dict[Any, Any]] = {}  # ended sessions' requests still without an answer -> their parents
    loads = json.loads

    def open_session(sid: str, stream: bytes, t0: int | None, raw: bytes | None) -> _Open:
        table = tables.setdefault(stream, {})
        builder = make_builder(sid, table.__getitem__) if make_builder is not None else None
        state = sessions[sid] = _Open(builder if builder is not None else TraceBuilder(sid, table.__getitem__), t0, raw)
        if raw is not None:
            by_raw[raw] = sid
        return state

    rep = FrameReport() if report is None else report
    for ftype, stream, payload in iter_frames(path, progress=progress, report=rep, only=b"SECJ" if no_blocks else None):
        if ftype == b"B":
            raw = payload[:16]
            sid = by_raw.get(raw)
            if sid in skip_blocks:
                continue
            state = sessions.get(sid) if sid is not None else None
            if state is None:  # blocks without a start frame: decode them anyway
                if len(raw) < 16:
                    rep.undecodable += 1
                    continue
                sid = str(uuid.UUID(bytes=raw))
                state = open_session(sid, stream, None, raw)
            yield from state.builder.iter_feed(payload[16:])
            continue
        if ftype not in FRAME_TYPES:
            continue  # a later format's frame type
        try:
            obj = loads(payload)
            if ftype == b"C":
                _add_codes(tables.setdefault(stream, {}), obj)
                continue
            if not isinstance(obj, list if ftype == b"J" else dict):
                raise ValueError(f"unexpected {type(obj).__name__}")
        except (ValueError, TypeError, RecursionError):  # RecursionError: JSON nested too deep
            rep.undecodable += 1
            continue
        if ftype == b"J":
            events = [e for e in obj if isinstance(e, dict)]
            if len(events) < len(obj):
                rep.undecodable += 1
            for e in events:  # HTTP events come out of their session's builder, linked to their calls
                state = sessions.get(str(e.get("session_id")))
                if state is None or no_blocks or e.get("session_id") in skip_blocks:
                    parents = late.get(str(e.get("session_id")))
                    if parents and e.get("type") == "http_response" and e.get("request_id") in parents:
                        e["parent_id"] = parents.pop(e["request_id"])  # an answer finished after its session
                    yield e
                else:
                    yield from state.builder.extra([e])
        elif ftype == b"S":
            sid = str(obj.get("session_id"))
            if sid not in sessions:
                open_session(sid, stream, _ns(obj.get("ts_ns")), _session_raw(sid))
            yield obj
        else:  # E
            state = sessions.pop(str(obj.get("session_id")), None)
            if state is not None:
                if state.raw is not None:
                    by_raw.pop(state.raw, None)
                yield from state.builder.finish(_ns(obj.get("ts_ns")) or state.builder.last_ts)
                unanswered = state.builder.unanswered()
                if unanswered:
                    late[str(obj.get("session_id"))] = unanswered
                rep.corrupt_blocks += state.builder.stats["corrupt_blocks"]
            yield obj
    for sid, state in sessions.items():
        builder = state.builder
        t0 = state.t0 if state.t0 is not None else builder.first_ts
        end = max(builder.last_ts, t0 or 0)
        yield from builder.finish(end)
        rep.corrupt_blocks += builder.stats["corrupt_blocks"]
        yield {
            "type": "session_end", "session_id": sid, "ts_ns": end, "duration_ns": end - (t0 or end),
            "stats": dict(builder.stats), "incomplete": True,
        }
    if rep:
        warnings.warn(rep.message(path), TraceFileWarning, stacklevel=2)


def _ns(value: Any) -> int | None:
    """A timestamp read from JSON, or None when it is not an integer."""
    return value if type(value) is int else None


def iter_session_blocks(path: str, session_id: str, start: int = 0) -> Iterator[bytes]:
    """The encoded blocks of one session in a .handit file, in order (no decoding).

    Args:
        path: the trace file.
        session_id: the session's UUID.
        start: a file offset before the session's first block
            (:meth:`TraceFileWriter.end_offset` when it began): earlier frames are not read.
    Yields:
        blocks.
    """
    raw = uuid.UUID(session_id).bytes
    for ftype, _, payload in iter_frames(path, only=b"B", start=start):
        if ftype == b"B" and payload[:16] == raw:
            yield payload[16:]


class Folds(NamedTuple):
    """The F frames of a trace file (see :func:`read_folds`)."""

    figures: dict[str, dict[str, Any]]  # session id -> folded figures
    codes: dict[str, Callable[[int], StoredCode]]  # session id -> its stream's code lookup
    unfolded: set[str]  # sessions that have a start but no F frame (their blocks need decoding)
    starts: dict[str, dict[str, Any]]  # session id -> its session_start event, in file order
    ends: dict[str, dict[str, Any]]  # session id -> its session_end event


def read_folds(path: str) -> Folds:
    """The folded figures of every session that has an F frame, and their code tables.

    Only S, E, C and F frames are read; block payloads are skipped unread, so this costs
    little even for a large file.

    Args:
        path: the trace file.
    Returns:
        the figures, code lookups and the sessions without figures.
    """
    figures: dict[str, dict[str, Any]] = {}
    codes: dict[str, Callable[[int], StoredCode]] = {}
    starts: dict[str, dict[str, Any]] = {}
    ends: dict[str, dict[str, Any]] = {}
    tables: dict[bytes, dict[int, StoredCode]] = {}
    for ftype, stream, payload in iter_frames(path, only=b"SECF"):
        try:
            if ftype in b"SE":
                event = json.loads(payload)
                (starts if ftype == b"S" else ends)[str(event.get("session_id"))] = event
            elif ftype == b"C":
                _add_codes(tables.setdefault(stream, {}), json.loads(payload))
            else:
                sid = str(uuid.UUID(bytes=payload[:16]))
                figures[sid] = json.loads(payload[16:])
                codes[sid] = tables.setdefault(stream, {}).__getitem__
        except (ValueError, TypeError, AttributeError):
            continue
    return Folds(figures, codes, set(starts) - set(figures), starts, ends)


def _add_codes(table: dict[int, StoredCode], rows: list[Any]) -> None:
    for index, module, qualname, file, line, argnames in rows:
        table[index] = StoredCode(module, qualname, file, line, tuple(argnames))


def detect_format(path: str) -> str:
    """``"handit"`` if the file starts with a handit magic (any format version), else ``"jsonl"``.

    Raises:
        OSError: the file cannot be read.
    """
    with open(path, "rb") as f:
        head = f.read(len(MAGIC))
    return "handit" if head[:6] == b"HANDIT" and head[7:8] == b"\n" else "jsonl"


def _iter_jsonl(path: str, progress: Callable[[int, int], None] | None) -> Iterator[dict[str, Any]]:
    loads = json.loads
    bad = 0
    cut = -1
    with open(path, "rb", buffering=READ_BUFFER) as f:
        total = os.fstat(f.fileno()).st_size
        pos = 0
        next_report = PROGRESS_STEP
        for line in f:
            pos += len(line)
            if line.strip():
                try:
                    event = loads(line)
                except ValueError:
                    if line.endswith(b"\n"):
                        bad += 1
                    else:  # a cut last line: the writer writes whole lines, so the file was cut
                        cut = pos - len(line)
                else:
                    yield event
            if progress is not None and pos >= next_report:
                progress(pos, max(total, pos))
                next_report = pos + PROGRESS_STEP
        if progress is not None:
            progress(pos, max(total, pos))
    said = [f"damaged: skipped {bad} line(s) that are not JSON"] if bad else []
    if cut >= 0:
        said.append(f"truncated: the last line (at offset {cut}) is cut short")
    if said:
        warnings.warn(f"{path}: " + "; ".join(said) + "; everything intact was read", TraceFileWarning, stacklevel=2)


def iter_events(
    path: str, *, progress: Callable[[int, int], None] | None = None, skip_blocks: Collection[str] = (),
    no_blocks: bool = False, make_builder: MakeBuilder | None = None,
) -> Iterator[dict[str, Any]]:
    """Stream the events of a trace file in either format (.handit or JSONL).

    Args:
        path: the trace file.
        progress: called with ``(bytes_read, total_bytes)`` now and then.
        skip_blocks, no_blocks, make_builder: as for :func:`iter_trace` (.handit only).
    Yields:
        event dicts in the JSONL schema.
    Raises:
        OSError: the file cannot be read.
    """
    if detect_format(path) == "handit":
        return iter_trace(path, progress=progress, skip_blocks=skip_blocks, no_blocks=no_blocks, make_builder=make_builder)
    return _iter_jsonl(path, progress)


def read_trace(path: str) -> list[dict[str, Any]]:
    """Every event of a trace file (either format) in a list; for small files and tests."""
    return list(iter_events(path))
