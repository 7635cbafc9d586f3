"""Spool stage of the HTTP exporter: undelivered batches <-> gzip files in HANDIT_SPOOL_DIR, claimed once each.

A file holds exactly one POST body and is named ``<time ns>-<pid>-<batch id>[.unsent].jsonl.gz``.
``.unsent`` marks a batch that was never on the wire, so no receiver can have seen its id:
only such files are merged into one larger batch. To send a file a process renames it to
``<name>.sending-<pid>`` (the claim); the file is deleted after the receiver acknowledged
it, or renamed back without ``.unsent`` (it may have been received) when the send failed.
"""
from __future__ import annotations

import os
import re
import struct
import threading
import time
import uuid
import zlib
from dataclasses import dataclass

__all__ = ["Claim", "Spool", "event_count_bytes", "forget_claims", "gzip_body"]

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_SPOOL_NAME = re.compile(rf"^(\d+)-\d+-({_UUID})(\.unsent)?\.jsonl\.gz$")
_CLAIMED_NAME = re.compile(r"^(.+\.jsonl\.gz)\.sending-(\d+)$")
_TEMP_NAME = re.compile(r"^\.tmp-(\d+)-")
_GZIP_COMMENT = b"handit events="
_STALE_S = 600.0  # a claim or temp file this old is abandoned even if its pid is alive (pid reuse)
_MERGE_MAX_FILES = 256  # files merged into one request at most (one rename and unlink each)
_O_BINARY = os.O_BINARY if os.name == "nt" else 0

_claimed: set[str] = set()  # claimed paths this process is sending, shared by its exporters


@dataclass
class Claim:
    """A spool file this process renamed to ``*.sending-<pid>`` to send it.

    Attributes:
        path: the claimed file.
        retry_path: where it goes back when the send fails (without ``.unsent``).
        batch_id: the X-Handit-Batch-Id to send it under (the file's own).
        body: the gzip body.
        events: its event count.
        files: spool files it stands for (several after a merge), for the statistics.
    """

    path: str
    retry_path: str
    batch_id: str
    body: bytes
    events: int
    files: int = 1


class Spool:
    """One spool directory: write, bound, claim (merging unsent files), release, finish.

    Methods raise OSError only from :meth:`write`; the others treat a file another
    process took meanwhile as not there.
    """

    def __init__(self, directory: str, max_bytes: int, merge_bytes: int) -> None:
        """Remember the directory (absolute); nothing is touched until a batch is written.

        Args:
            directory: the spool directory, created 0700 on first write.
            max_bytes: bound of the directory in bytes; the oldest files go first.
            merge_bytes: most gzip bytes merged into one claim.
        """
        self.directory = os.path.abspath(directory)
        self.max_bytes = max_bytes
        self.merge_bytes = merge_bytes
        self._lock = threading.Lock()
        self._commit_lock = threading.Lock()  # a merge's rename + unlinks vs cancel_merges()
        self._cancelled = False
        self._total: int | None = None

    def write(self, body: bytes, batch_id: str, unsent: bool, name_time: int | None = None) -> tuple[str, int]:
        """Write one batch as a 0600 file (temp name, fsync, rename), then apply the bound.

        Args:
            body: the gzip body (see :func:`gzip_body`).
            batch_id: its X-Handit-Batch-Id.
            unsent: the batch was never POSTed (it may be merged with others).
            name_time: the time (ns) its name starts with; now if None.
        Returns:
            (the file's path, events deleted by the bound).
        Raises:
            OSError: the directory or file cannot be written.
        """
        stamp = time.time_ns() if name_time is None else name_time
        name = f"{stamp:020d}-{os.getpid()}-{batch_id}{'.unsent' if unsent else ''}.jsonl.gz"
        final = os.path.join(self.directory, name)
        self._write_file(final, body)
        return final, self._trim(len(body))

    def _write_file(self, final: str, body: bytes) -> None:
        temp = self._write_temp(final, body)
        try:
            os.replace(temp, final)  # a crash never leaves half a file under a final name
        except BaseException:
            _unlink_quietly(temp)
            raise

    def _write_temp(self, final: str, body: bytes) -> str:
        """Write and sync ``body`` under a temp name for ``final``; returns the temp path."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        temp = os.path.join(self.directory, f".tmp-{os.getpid()}-{os.path.basename(final)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o600)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(body)
                file.flush()
                os.fsync(file.fileno())
        except BaseException:
            _unlink_quietly(temp)
            raise
        return temp

    def cancel_merges(self) -> None:
        """Commit no merge from now on (the process is ending); waits for one being committed.

        A merge that is cut before its commit leaves its files claimed, which the next
        process sends one by one; cut between renaming the merged file into place and
        deleting the merged ones, it would leave both. The commit is a rename and a few
        unlinks (no fsync), so the wait is short.
        """
        with self._commit_lock:
            self._cancelled = True

    def _trim(self, added: int) -> int:
        """Delete the oldest unclaimed files while the directory holds more than max_bytes."""
        dropped = 0
        with self._lock:
            if self._total is not None:
                self._total += added
                if self._total <= self.max_bytes:
                    return 0
            sizes = {}
            for name in _listdir(self.directory):
                if _SPOOL_NAME.match(name) or _CLAIMED_NAME.match(name):
                    try:
                        sizes[name] = os.stat(os.path.join(self.directory, name)).st_size
                    except OSError:
                        pass
            total = sum(sizes.values())
            for name in sorted(n for n in sizes if _SPOOL_NAME.match(n)):  # oldest first
                if total <= self.max_bytes:
                    break
                path = os.path.join(self.directory, name)
                events = _event_count(path)
                try:
                    os.unlink(path)
                except OSError:  # claimed by a sender meanwhile
                    continue
                total -= sizes[name]
                dropped += events
            self._total = total
        return dropped

    def _shrunk(self, size: int) -> None:
        with self._lock:
            if self._total is not None:
                self._total = max(0, self._total - size)

    def claim(self) -> Claim | None:
        """Claim the oldest file; if it is unsent, merge the next unsent files into it.

        A merge writes one new unsent file under a new batch id (claimed at once) and
        deletes the files it holds, before anything is sent: a receiver only ever sees
        the merged id. Also reclaims claims of dead processes (never merged: they may
        have been received) and deletes their half-written temp files.

        Returns:
            the claim, or None when the spool holds nothing to send.
        """
        directory, now = self.directory, time.time()
        candidates = []
        for name in _listdir(directory):
            path = os.path.join(directory, name)
            if _SPOOL_NAME.match(name):
                candidates.append((name, name))
            elif claimed := _CLAIMED_NAME.match(name):
                if _abandoned(path, int(claimed.group(2)), now, sending=path in _claimed):
                    candidates.append((claimed.group(1), name))
            elif (temp := _TEMP_NAME.match(name)) and _abandoned(path, int(temp.group(1)), now):
                _unlink_quietly(path)  # half-written by a process that died
        candidates.sort()  # names start with the time: oldest first
        for index, (original, name) in enumerate(candidates):
            first = self._take(original, name)
            if first is not None:
                break
        else:
            return None
        if not _mergeable(original, name):
            return first
        members = [first]
        ids = {first.batch_id}
        size = len(first.body)
        for original, name in candidates[index + 1:]:
            if len(members) >= _MERGE_MAX_FILES or size >= self.merge_bytes:
                break
            spooled = _SPOOL_NAME.match(original)
            if spooled is not None and spooled.group(2) in ids and _mergeable(original, name):
                # a second copy of a batch already in this merge (an exit wrote a batch the
                # sender was still spooling): merged under a new id it would be delivered twice
                copy = self._take(original, name)
                if copy is not None:
                    self.finish(copy)
                continue
            try:
                if not _mergeable(original, name) or size + os.stat(os.path.join(directory, name)).st_size > self.merge_bytes:
                    continue
            except OSError:
                continue
            member = self._take(original, name)
            if member is not None:
                members.append(member)
                ids.add(member.batch_id)
                size += len(member.body)
        return self._merge(members) if len(members) > 1 else first

    def _take(self, original: str, name: str) -> Claim | None:
        source = os.path.join(self.directory, name)
        target = os.path.join(self.directory, f"{original}.sending-{os.getpid()}")
        _claimed.add(target)  # before the rename, so no other exporter here takes it as stale
        try:
            # mtime first: whoever sees the claimed name also sees a fresh claim age
            os.utime(source)
            os.rename(source, target)
            with open(target, "rb") as file:
                body = file.read()
        except OSError:  # another process took it first
            _claimed.discard(target)
            return None
        match = _SPOOL_NAME.match(original)
        assert match is not None  # candidates only hold spool names
        retry = os.path.join(self.directory, original.replace(".unsent.jsonl.gz", ".jsonl.gz"))
        return Claim(target, retry, match.group(2), body, event_count_bytes(body))

    def _merge(self, members: list[Claim]) -> Claim | None:
        """One unsent batch from several claimed unsent files.

        Returns:
            the merged claim; the first file alone on a write error; None when merges were
            cancelled meanwhile (every file is put back).
        """
        parts = []
        for member in members:
            try:
                parts.append(zlib.decompress(member.body, 31))
            except zlib.error:
                parts.append(b"")  # not a gzip body: sent alone below, never merged
        good = [m for m, p in zip(members, parts) if p]
        data = b"".join(p for p in parts if p)
        if len(good) < 2:
            for member in members[1:]:
                self.release(member, unsent=True)
            return members[0]
        events = sum(m.events for m in good)
        body = gzip_body(data, events)
        batch_id = str(uuid.uuid4())
        stamp = _SPOOL_NAME.match(os.path.basename(good[0].retry_path))
        assert stamp is not None
        original = f"{stamp.group(1)}-{os.getpid()}-{batch_id}.unsent.jsonl.gz"
        target = os.path.join(self.directory, f"{original}.sending-{os.getpid()}")
        _claimed.add(target)
        try:
            temp = self._write_temp(target, body)
        except OSError:
            temp = None
        with self._commit_lock:
            try:
                if temp is not None and not self._cancelled:
                    os.replace(temp, target)
                    committed = True
                else:
                    committed = False
            except OSError:
                committed = False
            if not committed:
                if temp is not None:
                    _unlink_quietly(temp)
                _claimed.discard(target)
                for member in members[0 if self._cancelled else 1:]:
                    self.release(member, unsent=True)
                return None if self._cancelled else members[0]
            for member in members:
                if member in good:
                    self.finish(member)
                else:
                    self.release(member, unsent=False)
        retry = os.path.join(self.directory, original.replace(".unsent.jsonl.gz", ".jsonl.gz"))
        self._grew(len(body))
        return Claim(target, retry, batch_id, body, events, files=len(good))

    def _grew(self, size: int) -> None:
        with self._lock:
            if self._total is not None:
                self._total += size

    def release(self, claim: Claim, unsent: bool = False) -> None:
        """Put a claimed file back for a later attempt, by this or another process.

        Args:
            claim: the claim.
            unsent: it was not POSTed (keeps ``.unsent``); else it may have been received.
        """
        target = claim.path.rsplit(".sending-", 1)[0] if unsent else claim.retry_path
        try:
            os.rename(claim.path, target)
        except OSError:  # vanished: a stale claim taken by another process
            pass
        _claimed.discard(claim.path)

    def finish(self, claim: Claim) -> None:
        """Delete a claimed file: delivered, or refused for good."""
        try:
            os.unlink(claim.path)
        except OSError:
            pass
        else:
            self._shrunk(len(claim.body))
        _claimed.discard(claim.path)

    def unlink(self, path: str, size: int) -> bool:
        """Delete a spooled file (its batch was delivered after all); False if it is gone."""
        try:
            os.unlink(path)
        except OSError:
            return False
        self._shrunk(size)
        return True


def _mergeable(original: str, name: str) -> bool:
    """An unsent file not claimed before: no receiver can have seen its batch id."""
    return original == name and original.endswith(".unsent.jsonl.gz")


def gzip_body(data: bytes, events: int) -> bytes:
    """One gzip member (RFC 1952) carrying the event count in its FCOMMENT field.

    The count lets the spool bound report dropped events without decompressing;
    any gzip reader ignores the comment.

    Args:
        data: the JSONL bytes.
        events: the number of lines.
    Returns:
        the gzip body.
    """
    header = b"\x1f\x8b\x08\x10\x00\x00\x00\x00\x00\xff" + _GZIP_COMMENT + str(events).encode() + b"\x00"
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    trailer = struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)
    return b"".join((header, compressor.compress(data), compressor.flush(), trailer))


def event_count_bytes(body: bytes) -> int:
    """The event count of a gzip body: from its comment, else by counting lines (0 if unreadable)."""
    if body[:4] == b"\x1f\x8b\x08\x10" and body[10:10 + len(_GZIP_COMMENT)] == _GZIP_COMMENT:
        digits = body[10 + len(_GZIP_COMMENT):body.find(b"\x00", 10)]
        if digits.isdigit():
            return int(digits)
    try:  # a file not written here: count its lines
        return zlib.decompress(body, 31).count(b"\n")
    except zlib.error:
        return 0


def _event_count(path: str) -> int:
    try:
        with open(path, "rb") as file:
            head = file.read(64)
            if head[:4] == b"\x1f\x8b\x08\x10" and b"\x00" in head[10:]:
                return event_count_bytes(head)
            return event_count_bytes(head + file.read())
    except OSError:
        return 0


def _abandoned(path: str, owner: int, now: float, sending: bool | None = None) -> bool:
    """True if a claim (``sending`` given) or temp file was left by a process that is gone.

    Gone: a dead pid; this pid not sending it (a previous process with the same pid,
    common in containers); or older than _STALE_S (the pid was reused).
    """
    mine = owner == os.getpid()
    if mine and sending is not None:
        return not sending
    try:
        old = now - os.stat(path).st_mtime > _STALE_S
    except OSError:
        return False
    return old or (not mine and not _pid_alive(owner))


def _pid_alive(pid: int) -> bool:
    if pid <= 0 or os.name == "nt":  # os.kill(pid, 0) would terminate it on Windows; age decides there
        return pid > 0
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's
        return True
    return True


def _listdir(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except OSError:
        return []


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def forget_claims() -> None:
    """A forked child sends none of its parent's claims."""
    _claimed.clear()
