"""Trace-file framing: payloads -> checksummed frames, and a file's bytes -> its intact frames.

A ``.handit`` file is a magic followed by frames (``docs/trace-format.md``)::

    magic := b"HANDIT" version b"\\n"               (version 2; version 1 files stay readable)
    frame := mark (2) | type (1) | length (4) | stream id (8) | payload check (4) | header check (4) | payload

``mark`` is ``b"\\xfe\\xfd"`` (bytes that never occur in UTF-8), ``length`` and
the checks are little-endian; a check is the low 32 bits of the XXH3-64 hash:
the payload check of the payload, the header check of the 19 header bytes
before it. The reader trusts a header only when its check holds, so every
length is checked before anything is allocated, and after damage it finds the
next frame by searching for the mark and checking each candidate header
(resynchronisation). Frame types are capital letters; the framing does not
depend on them.
"""
from __future__ import annotations

import os
import struct
import warnings
from typing import Callable, Iterator, NamedTuple

from xxhash import xxh3_64, xxh3_64_intdigest

from .errors import HanditError

__all__ = [
    "FrameReport", "HEADER_SIZE", "MAGIC", "MAGIC_V1", "MAX_PAYLOAD", "TraceFileWarning", "TraceFormatError",
    "encode_frame", "frame_header", "iter_frames", "read_version",
]

MAGIC = b"HANDIT\x02\n"
MAGIC_V1 = b"HANDIT\x01\n"  # 13-byte headers, no checks: read, never written
_VERSIONS = {MAGIC: 2, MAGIC_V1: 1}
MARK = b"\xfe\xfd"
_HEAD = struct.Struct("<2scI8sI")  # mark, type, payload length, stream id, payload check: 19 bytes
_CHECK = struct.Struct("<I")
HEADER_SIZE = _HEAD.size + _CHECK.size  # 23
_HEADER_V1 = struct.Struct("<cI8s")  # type, payload length, stream id: 13 bytes
MAX_PAYLOAD = 0xFFFFFFFF
READ_BUFFER = 1 << 20
PROGRESS_STEP = 4 << 20  # call progress() about every 4 MB read
SCAN_CHUNK = 1 << 16  # bytes searched for the mark at a time while resynchronising


class TraceFormatError(HanditError, ValueError):
    """A file is not a handit trace file (or one of a format version this handit does not read)."""


class TraceFileWarning(UserWarning):
    """A trace file is damaged or cut short; everything intact in it was read."""


def _check(data: bytes) -> int:
    # XXH3 rather than XXH32: 0.5 us instead of 2.2 us for a 3.8 KB block (3.12, this machine)
    return xxh3_64_intdigest(data) & 0xFFFFFFFF


def frame_header(ftype: bytes, stream: bytes, payload: bytes) -> bytes:
    """The 23-byte header of a format version 2 frame holding ``payload`` (which follows it).

    Args:
        ftype: one capital letter.
        stream: the writer's 8-byte stream id.
        payload: the frame's contents, at most :data:`MAX_PAYLOAD` bytes.
    Returns:
        the header's bytes.
    """
    head = _HEAD.pack(MARK, ftype, len(payload), stream, _check(payload))
    return head + _CHECK.pack(_check(head))


def frame_header_of(ftype: bytes, stream: bytes, parts: tuple[bytes, ...]) -> bytes:
    """:func:`frame_header` for a payload in ``parts`` (written after it in order), not joined
    first: no copy of a block on its way to the file."""
    check = xxh3_64()
    for part in parts:
        check.update(part)
    head = _HEAD.pack(MARK, ftype, sum(map(len, parts)), stream, check.intdigest() & 0xFFFFFFFF)
    return head + _CHECK.pack(_check(head))


def encode_frame(ftype: bytes, stream: bytes, payload: bytes) -> bytes:
    """One whole frame of format version 2 (:func:`frame_header` + ``payload``)."""
    return frame_header(ftype, stream, payload) + payload


class _Region(NamedTuple):
    offset: int
    size: int


class FrameReport:
    """What reading a trace file found wrong, and how much work it took.

    Attributes:
        damaged: regions of bytes skipped because no intact frame was there
            (a failed check, a frame in the way of the next, bytes that are no frame).
        truncated: ``(offset, bytes present, bytes the frame needs)`` of a last
            frame cut short, or None.
        undecodable: intact frames whose contents could not be read (counted by the caller).
        corrupt_blocks: blocks that could not be decoded to their end (counted by the caller).
        headers_checked: candidate frame headers examined.
        bytes_hashed: payload bytes checksummed.
    """

    def __init__(self) -> None:
        self.damaged: list[_Region] = []
        self.truncated: tuple[int, int, int] | None = None
        self.undecodable = 0
        self.corrupt_blocks = 0
        self.headers_checked = 0
        self.bytes_hashed = 0

    def skip(self, offset: int, size: int) -> None:
        """Count ``size`` damaged bytes at ``offset`` (joined to a region that ends there)."""
        if self.damaged and sum(self.damaged[-1]) == offset:
            last = self.damaged[-1]
            self.damaged[-1] = _Region(last.offset, last.size + size)
        elif len(self.damaged) < 1000:  # the count goes on in the last region; memory stays bounded
            self.damaged.append(_Region(offset, size))
        else:
            last = self.damaged[-1]
            self.damaged[-1] = _Region(last.offset, offset + size - last.offset)

    def __bool__(self) -> bool:
        return bool(self.damaged or self.truncated or self.undecodable or self.corrupt_blocks)

    def message(self, path: str) -> str:
        """One line saying what was wrong with ``path`` (empty when nothing was)."""
        parts = []
        if self.damaged:
            skipped = sum(r.size for r in self.damaged)
            where = ", ".join(f"{r.offset}" for r in self.damaged[:5]) + (", ..." if len(self.damaged) > 5 else "")
            parts.append(f"damaged: skipped {len(self.damaged)} region(s) that held no intact frame "
                         f"({skipped:,} bytes, at offset {where})")
        if self.undecodable:
            parts.append(f"damaged: {self.undecodable} frame(s) could not be decoded")
        if self.corrupt_blocks:
            parts.append(f"damaged: {self.corrupt_blocks} block(s) could not be decoded to their end")
        if self.truncated:
            offset, have, need = self.truncated
            parts.append(f"truncated: the last frame (at offset {offset}) is cut short, {have:,} of {need:,} bytes")
        return f"{path}: " + "; ".join(parts) + "; everything intact was read" if parts else ""


def read_version(head: bytes, path: str) -> int:
    """The format version of a file that starts with ``head`` (its first 8 bytes).

    Raises:
        TraceFormatError: no handit magic, or a version this handit does not read.
    """
    version = _VERSIONS.get(head[:8])
    if version is None:
        if head[:6] == b"HANDIT" and head[7:8] == b"\n":
            raise TraceFormatError(f"{path} is a handit trace of format version {head[6]}, "
                                   f"which this handit (formats 1-2) cannot read; a newer handit can")
        raise TraceFormatError(f"{path} is not a handit trace file (no {MAGIC!r} at the start)")
    return version


def _header_ok(head: bytes) -> bool:
    return head[:2] == MARK and _check(head[:19]) == _CHECK.unpack_from(head, 19)[0]


def _resync(f: object, start: int, report: FrameReport) -> int | None:
    """The offset of the next frame header at or after ``start`` whose check holds, or None."""
    seek, read = f.seek, f.read  # type: ignore[attr-defined]
    pos = start
    while True:
        seek(pos)
        chunk = read(SCAN_CHUNK + HEADER_SIZE - 1)
        i = chunk.find(MARK)
        while i != -1 and i + HEADER_SIZE <= len(chunk):
            report.headers_checked += 1
            if _header_ok(chunk[i : i + HEADER_SIZE]):
                return pos + i
            i = chunk.find(MARK, i + 1)
        if len(chunk) < SCAN_CHUNK + HEADER_SIZE - 1:
            return None
        pos += SCAN_CHUNK


def iter_frames(
    path: str, *, progress: Callable[[int, int], None] | None = None, report: FrameReport | None = None,
    only: bytes | None = None, start: int = 0,
) -> Iterator[tuple[bytes, bytes, bytes]]:
    """Stream the intact frames of a .handit file, reading it in chunks.

    A frame whose header or payload check fails is skipped, and reading goes
    on at the next intact frame; a magic where a frame should start (appenders
    racing to create the file, or a newer writer appending to a version 1 file)
    is skipped and sets the version of the frames after it. No length is
    trusted before its header's check holds, and none past the end of the file.

    Args:
        path: the trace file.
        progress: called with ``(bytes_read, total_bytes)`` every few MB and at the end.
        report: filled with what was damaged; without one, damage is warned
            about here as one :class:`TraceFileWarning`.
        only: frame types wanted (e.g. ``b"SEF"``); frames of other types whose header
            checks are stepped over unread (their payload is neither read nor checked).
        start: the offset of a frame of the current format version to begin at (e.g. a
            size the file had: writers append whole frames); the bytes before it are not read.
    Yields:
        ``(type, stream_id, payload)`` of every intact frame, unknown types too.
    Raises:
        TraceFormatError: the file does not start with a handit magic.
    """
    own = report is None
    rep = FrameReport() if report is None else report
    with open(path, "rb", buffering=READ_BUFFER) as f:
        total = os.fstat(f.fileno()).st_size
        version = read_version(f.read(len(MAGIC)), path)
        pos = len(MAGIC)
        if start > pos:
            version, pos = _VERSIONS[MAGIC], start
        next_report = PROGRESS_STEP
        seek, read = f.seek, f.read
        while True:
            seek(pos)  # cheap inside the read buffer; needed after a resynchronisation
            head = read(HEADER_SIZE if version == 2 else _HEADER_V1.size)
            if head[:8] in _VERSIONS:
                version = _VERSIONS[head[:8]]
                pos += 8
                continue
            if version == 1:
                frame = _frame_v1(f, head, pos, total, rep, only)
            else:
                frame = _frame_v2(f, head, pos, total, rep, only)
            if frame is None:
                break
            if isinstance(frame, int):
                pos = frame
                continue
            ftype, stream, payload = frame
            pos += (HEADER_SIZE if version == 2 else _HEADER_V1.size) + len(payload)
            yield ftype, stream, payload
            if progress is not None and pos >= next_report:
                progress(pos, max(total, pos))
                next_report = pos + PROGRESS_STEP
        if progress is not None:
            progress(max(pos, total), max(total, pos))
    if own and rep:
        warnings.warn(rep.message(path), TraceFileWarning, stacklevel=2)


def _frame_v2(
    f: object, head: bytes, pos: int, total: int, rep: FrameReport, only: bytes | None = None
) -> tuple[bytes, bytes, bytes] | int | None:
    """The frame at ``pos``; else the offset to go on from (damage or an unwanted type skipped), or None at the end."""
    if len(head) < HEADER_SIZE:
        if head:
            rep.truncated = (pos, len(head), HEADER_SIZE)
        return None
    rep.headers_checked += 1
    if _header_ok(head):
        _, ftype, length, stream, check = _HEAD.unpack_from(head)
        if pos + HEADER_SIZE + length > total:
            total = os.fstat(f.fileno()).st_size  # type: ignore[attr-defined]  # another process may still be appending
        if only is not None and ftype not in only and pos + HEADER_SIZE + length <= total:
            return pos + HEADER_SIZE + length
        if pos + HEADER_SIZE + length <= total:
            payload = f.read(length)  # type: ignore[attr-defined]
            rep.bytes_hashed += len(payload)
            if len(payload) == length and _check(payload) == check:
                return ftype, stream, payload
        else:
            nxt = _resync(f, pos + 1, rep)
            if nxt is None:  # nothing intact after it: a last frame cut short
                rep.truncated = (pos, total - pos, HEADER_SIZE + length)
                return None
            rep.skip(pos, nxt - pos)
            return nxt
    nxt = _resync(f, pos + 1, rep)
    end = total if nxt is None else nxt
    rep.skip(pos, end - pos)
    return nxt


def _frame_v1(
    f: object, head: bytes, pos: int, total: int, rep: FrameReport, only: bytes | None = None
) -> tuple[bytes, bytes, bytes] | int | None:
    """A version 1 frame (no checks: reading stops at the first thing that is not a frame)."""
    if len(head) < _HEADER_V1.size:
        if head:
            rep.truncated = (pos, len(head), _HEADER_V1.size)
        return None
    ftype, length, stream = _HEADER_V1.unpack(head)
    if not (0x41 <= ftype[0] <= 0x5A):  # frame types are capital letters
        rep.skip(pos, total - pos)
        return None
    if pos + _HEADER_V1.size + length > total:
        total = os.fstat(f.fileno()).st_size  # type: ignore[attr-defined]
        if pos + _HEADER_V1.size + length > total:  # never allocate more than the file holds
            rep.truncated = (pos, total - pos, _HEADER_V1.size + length)
            return None
    if only is not None and ftype not in only:
        return pos + _HEADER_V1.size + length
    return ftype, stream, f.read(length)  # type: ignore[attr-defined]
