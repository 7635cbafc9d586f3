"""Appending to shared files: owner-only O_APPEND descriptors, whole-record writes, and a timed flush.

The trace-file writer and the JSONL exporter gather records in memory and write
them in few ``os.write`` calls. :data:`flusher` writes what they gathered at
least every flush interval from one handit thread, so a process killed with
SIGKILL loses at most about the last interval.
"""
from __future__ import annotations

import os
import threading
import time
import warnings
import weakref
from typing import Any

from ._internal import start_internal_thread

__all__ = ["MAX_PIECES", "Flusher", "flusher", "open_append", "write_all", "write_pieces"]


def open_append(path: str) -> int:
    """Open ``path`` for appending, creating it readable by the owner only.

    Args:
        path: the file.
    Returns:
        a file descriptor opened ``O_WRONLY | O_APPEND``.
    Raises:
        OSError: the file cannot be opened or created.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags | os.O_EXCL, 0o600)
    except FileExistsError:
        return os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask may have taken bits away; never adds any, but be exact
    except (AttributeError, OSError):  # no fchmod on Windows before 3.13
        pass
    return fd


def write_all(fd: int, data: bytes) -> None:
    """Write ``data`` with one ``os.write``; loop on a short write only as a fallback (disk full, signal)."""
    done = os.write(fd, data)
    if done < len(data):
        view = memoryview(data)
        while done < len(data):
            done += os.write(fd, view[done:])


def write_pieces(fd: int, pieces: list[bytes]) -> int:
    """Write ``pieces`` in order with one ``os.writev`` (one write: appenders never interleave
    inside it, and nothing is joined into a copy first); on a short write (disk full, a
    signal), the rest with ``os.write``. At most :data:`MAX_PIECES` pieces. Returns the bytes written."""
    total = sum(map(len, pieces))
    done = os.writev(fd, pieces)
    if done < total:
        view = memoryview(b"".join(pieces))
        while done < total:
            done += os.write(fd, view[done:])
    return total


MAX_PIECES = 512  # a writev takes at most IOV_MAX (1024 on Linux) buffers


class Flusher:
    """Calls ``flush()`` on writers whose buffer has waited ``interval`` seconds, from one handit thread.

    A writer calls :meth:`due` when its buffer goes from empty to not empty
    (once per flush, not per record). The thread sleeps without wake-ups while
    no writer has anything buffered, is started on first use, and is started
    again in a forked child that uses it. A writer is held weakly.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._due: dict[int, tuple[float, weakref.ref[Any]]] = {}
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self.flushes = 0
        self.errors = 0

    def due(self, writer: Any, interval: float) -> None:
        """Flush ``writer`` within ``interval`` seconds (an earlier pending deadline stays)."""
        with self._cond:
            if os.getpid() != self._pid:  # forked: the parent's thread is not here
                self._pid, self._thread, self._due = os.getpid(), None, {}
            pending = self._due.get(id(writer))
            if pending is not None and pending[1]() is writer:
                return
            self._due[id(writer)] = (time.monotonic() + interval, weakref.ref(writer))
            if self._thread is None:
                try:
                    self._thread = start_internal_thread(self._loop, "flush")
                except RuntimeError:  # interpreter shutting down: the exit flush writes it
                    self._due.clear()
                    return
            self._cond.notify()

    def _take_due(self) -> list[Any]:
        with self._cond:
            while True:
                if not self._due:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                first = min(deadline for deadline, _ in self._due.values())
                if first > now:
                    self._cond.wait(first - now)
                    continue
                ready = [key for key, (deadline, _) in self._due.items() if deadline <= now]
                return [self._due.pop(key)[1]() for key in ready]

    def _loop(self) -> None:
        while True:
            for writer in self._take_due():
                if writer is None:
                    continue
                try:
                    writer.flush()
                    self.flushes += 1
                except Exception as exc:  # the writer counts what it lost; never takes the program down
                    self.errors += 1
                    if self.errors == 1:
                        warnings.warn(f"handit: a timed flush of {writer!r} failed ({exc!r})", RuntimeWarning, stacklevel=1)

    def _after_fork_in_child(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._pid, self._thread, self._due = os.getpid(), None, {}


flusher = Flusher()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=flusher._after_fork_in_child)
