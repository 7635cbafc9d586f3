"""HTTP ingest exporter: events -> gzip-compressed JSONL batches POSTed to HANDIT_ENDPOINT, spooled to disk while it is down."""
from __future__ import annotations

import atexit
import collections
import json
import math
import os
import random
import threading
import time
import uuid
import warnings
import weakref
from typing import Any

from .._internal import start_internal_thread
from ..errors import ConfigError, _safe_url
from . import spool as _spool
from .base import Exporter
from .spool import Claim, Spool, gzip_body
from .transport import KEEP, OK, REJECT, Transport, check_endpoint

__all__ = ["HanditExportWarning", "WebhookExporter"]

_STATS = ("sent_batches", "sent_events", "retries", "spooled_batches", "spooled_events",
          "resent_batches", "rejected", "dropped_events")
# Past the exit deadline, a batch the sender is writing to the spool, or spool files it is
# claiming or merging, get this much longer (a write and an fsync take milliseconds).
_SPOOLING_GRACE_S = 0.3

_live: weakref.WeakSet[WebhookExporter] = weakref.WeakSet()
_shutting_down = False
_exit_started: float | None = None  # time.monotonic() of the first exit flush: one deadline for all


class HanditExportWarning(UserWarning):
    """An exporter lost, refused or postponed events (each kind is reported once)."""


class _Batch:
    """One POST body: JSONL bytes, its event count and an idempotency key kept across retries and the spool."""

    __slots__ = ("id", "data", "events", "body", "taken", "caller_took", "sent", "spool_path", "posted")

    def __init__(self, data: bytes, events: int) -> None:
        self.id = str(uuid.uuid4())
        self.data = data
        self.events = events
        self.body: bytes | None = None
        self.taken = False  # spooled (or being spooled) by someone; the sender stops retrying it
        self.caller_took = False  # taken by flush() or the exit hook, not by the sender
        self.sent = False
        self.spool_path: str | None = None
        self.posted = False  # may have reached the receiver: never merged with other batches

    def gzipped(self) -> bytes:
        if self.body is None:
            self.body = gzip_body(self.data, self.events)
        return self.body


class WebhookExporter(Exporter):
    """Send events to an HTTP ingest endpoint as gzip-compressed JSONL batches.

    One background thread (started with the first events) POSTs the batches,
    retries network errors, 408, 429 and 5xx with exponential backoff and
    jitter (``Retry-After`` honoured, capped at ``backoff_max``), and writes a
    batch it cannot deliver to ``spool_dir``; spooled files, also those left by
    earlier processes, are sent from the thread's start and after each
    successful POST, several unsent files merged per request. At interpreter
    exit it waits at most ``exit_timeout`` and spools the rest. Nothing here
    raises into the caller after construction: problems are counted in
    :attr:`stats` and reported once each as :class:`HanditExportWarning`.
    """

    name = "webhook"

    def __init__(
        self,
        endpoint: str,
        api_key: str | None = None,
        *,
        spool_dir: str = "./handit_spool",
        timeout: float = 30.0,
        batch_bytes: int = 512 * 1024,
        max_spool_bytes: int = 256 * 1024 * 1024,
        max_queue_bytes: int = 8 * 1024 * 1024,
        allow_insecure_http: bool = False,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        flush_interval: float = 1.0,
        exit_timeout: float = 2.0,
    ) -> None:
        """Check the settings; no thread starts and no file is touched until events arrive.

        Args:
            endpoint: HANDIT_ENDPOINT, an ``http://`` or ``https://`` URL.
            api_key: HANDIT_API_KEY, sent as ``Authorization: Bearer <key>``.
            spool_dir: HANDIT_SPOOL_DIR, made absolute now; created (0o700) on first use.
            timeout: HANDIT_HTTP_TIMEOUT, seconds per request; also flush()'s default wait.
            batch_bytes: a batch is cut at about this many bytes of uncompressed JSONL.
            max_spool_bytes: bound of ``spool_dir``; the oldest files go first. 0: never spool.
            max_queue_bytes: bound of the in-memory queue; past it, batches are spooled at once.
            allow_insecure_http: allow the key over plain http to a non-loopback host.
            max_retries: retries after the first attempt before a batch is spooled.
            backoff_base: first retry delay in seconds; doubled each retry.
            backoff_max: cap of a retry delay, ``Retry-After`` included; also how long
                the endpoint is left alone after a batch had to be spooled.
            flush_interval: a partial batch is sent after waiting this many seconds.
            exit_timeout: HANDIT_EXIT_TIMEOUT, the most seconds the program's exit waits
                for delivery (see :meth:`flush_at_exit`).
        Raises:
            ConfigError: the endpoint is not a usable URL, the key would travel in clear
                text, the key holds control characters, or a number is out of range.
        """
        super().__init__()
        api_key = api_key or None
        check_endpoint(endpoint, api_key, allow_insecure_http)
        for setting, value, low, strict in (
            ("HANDIT_HTTP_TIMEOUT", timeout, 0, True), ("batch_bytes", batch_bytes, 1, False),
            ("HANDIT_MAX_SPOOL_BYTES", max_spool_bytes, 0, False), ("max_queue_bytes", max_queue_bytes, 0, False),
            ("max_retries", max_retries, 0, False), ("backoff_base", backoff_base, 0, False),
            ("backoff_max", backoff_max, 0, False), ("flush_interval", flush_interval, 0, True),
            ("HANDIT_EXIT_TIMEOUT", exit_timeout, 0, False),
        ):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or value < low or (strict and value == low):
                raise ConfigError(setting, value, f"is not a number {'>' if strict else '>='} {low}")
        self.endpoint = endpoint.strip()
        self.spool_dir = os.path.abspath(spool_dir)
        self.timeout = float(timeout)
        self.exit_timeout = float(exit_timeout)
        self._shown_url = _safe_url(self.endpoint)
        self._batch_bytes = int(batch_bytes)
        self._max_spool = int(max_spool_bytes)
        self._max_queue = int(max_queue_bytes)
        self._max_retries = int(max_retries)
        self._backoff = (float(backoff_base), float(backoff_max))
        self._flush_interval = float(flush_interval)
        headers = {"Content-Type": "application/jsonl", "Content-Encoding": "gzip", "User-Agent": "handit"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._transport = Transport(self.endpoint, headers, self.timeout, self._backoff[1])
        self._closed = False
        self._reset()
        _live.add(self)

    def _reset(self) -> None:
        """(Re)create the mutable state: at construction and in a forked child."""
        self.stats = dict.fromkeys(_STATS, 0)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._spool_files = Spool(self.spool_dir, self._max_spool, merge_bytes=self._batch_bytes)
        self._lines: list[bytes] = []
        self._cur_bytes = 0
        self._cur_since = 0.0
        self._queue: collections.deque[_Batch] = collections.deque()
        self._queue_bytes = 0
        self._inflight: _Batch | None = None
        self._resending: Claim | None = None
        self._claiming = False  # renaming or merging spool files: an exit lets that finish
        self._exiting = False
        self._thread: threading.Thread | None = None
        self._starting = False
        self._no_thread = False
        self._stop = False
        self._down = False
        self._down_until = 0.0
        self._resend_pending = True  # the spool may hold files from earlier processes
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return f"WebhookExporter(endpoint={self._shown_url!r}, spool_dir={self.spool_dir!r})"

    # -- caller side ---------------------------------------------------------

    def write_events(self, events: list[dict[str, Any]]) -> None:
        """Encode events into the current batch; full batches go to the sender thread.

        Returns after encoding, or after spooling a batch when the queue holds more
        than ``max_queue_bytes``; never waits for the network. Never raises.

        Args:
            events: event dicts in the JSONL schema, ``type`` first.
        """
        try:
            lines = []
            for event in events:
                try:
                    text = json.dumps(event, separators=(",", ":"), ensure_ascii=False, default=str)
                except Exception as exc:  # a circular value, a failing __str__
                    self._count("dropped_events", 1)
                    self._warn("encode", f"handit: an event could not be encoded as JSON and was dropped ({exc})")
                    continue
                # Lone surrogates cannot be UTF-8: backslashreplace writes them as \udcxx,
                # a valid JSON escape, since they can only occur inside strings.
                lines.append(text.encode("utf-8", "backslashreplace") + b"\n")
            if not lines:
                return
            cut: list[_Batch] = []
            with self._cond:
                if self._closed:
                    self.stats["dropped_events"] += len(lines)
                    closed = True
                else:
                    closed = False
                    for line in lines:
                        if self._cur_bytes and self._cur_bytes + len(line) > self._batch_bytes:
                            cut.append(self._cut())
                        if not self._lines:
                            self._cur_since = time.monotonic()
                            self._cond.notify_all()  # the sender now has a deadline to wait for
                        self._lines.append(line)
                        self._cur_bytes += len(line)
                    if self._cur_bytes >= self._batch_bytes or self._no_thread or _shutting_down:
                        cut.append(self._cut())
            if closed:
                self._warn("closed", "handit: events written after WebhookExporter.close() were dropped")
                return
            for batch in cut:
                self._submit(batch)
            self._ensure_thread()
        except Exception as exc:  # never into the traced program
            self._warn("internal", f"handit: webhook exporter error in write_events: {exc!r}")

    def flush(self, timeout: float | None = None) -> None:
        """Send what is buffered; spool whatever is still unsent when ``timeout`` expires.

        Args:
            timeout: seconds to wait for the sender; None: the request timeout.
        """
        try:
            wait = self.timeout if timeout is None else max(0.0, float(timeout))
            self._flush_until(time.monotonic() + wait)
        except Exception as exc:
            self._warn("internal", f"handit: webhook exporter error in flush: {exc!r}")

    def close(self) -> None:
        """Flush (spooling what is not sent within the timeout) and stop the sender thread."""
        try:
            deadline = time.monotonic() + self.timeout
            self._flush_until(deadline)
            with self._cond:
                self._closed = self._stop = True
                self._cond.notify_all()
                thread = self._thread
            _live.discard(self)
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        except Exception as exc:
            self._warn("internal", f"handit: webhook exporter error in close: {exc!r}")

    def flush_at_exit(self) -> None:
        """Exit path: send what is buffered, and what the spool holds, within ``exit_timeout``.

        The deadline is counted from the first exit flush of the process, so several
        exporters (and several calls) together wait at most the longest ``exit_timeout``.
        When the endpoint is down, nothing is waited for. What is not sent by the deadline
        is spooled; a spool file whose resend is still waiting for an answer is put back
        (as possibly received: it is sent alone, under its id, by the next process; if the
        answer is a 2xx before the process ends, the file is deleted). No thread is
        started. Afterwards the exporter writes each batch to the spool synchronously.
        Never raises.
        """
        global _exit_started
        try:
            if _exit_started is None:
                _exit_started = time.monotonic()
            with self._cond:
                self._exiting = True
                self._cond.notify_all()  # a sender in backoff spools its batch at once
                down = self._down
            spooled = self._flush_until(_exit_started + self.exit_timeout if not down else 0.0, spool_too=True)
            if spooled and not down:
                self._warn("exit", f"handit: {self._shown_url} did not take {spooled} events within "
                           f"HANDIT_EXIT_TIMEOUT={self.exit_timeout:g}s; they are spooled to {self.spool_dir} "
                           "and sent by the next process")
            with self._cond:
                self._stop = self._no_thread = True  # later writes are spooled synchronously
                self._cond.notify_all()
        except Exception as exc:  # nothing may escape at exit
            self._warn("internal", f"handit: webhook exporter error at exit: {exc!r}")

    def _flush_until(self, deadline: float, spool_too: bool = False) -> int:
        """Wait for the sender to empty the queue (and with ``spool_too`` the spool) until ``deadline``.

        Returns:
            the events spooled because the deadline came first.
        """
        with self._cond:
            batch = self._cut() if self._lines else None
        if batch is not None:
            self._submit(batch)
        force = False
        with self._cond:
            while self._thread_alive():
                inflight = self._inflight
                busy = self._queue or (inflight is not None and not inflight.caller_took)
                if spool_too and not busy:
                    busy = self._resending is not None or (self._resend_pending and not self._down)
                if not busy:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    # Past the deadline the batch in flight is taken from the sender, unless
                    # the sender is writing it to the spool already: that takes milliseconds.
                    spooling = inflight is not None and inflight.taken and not inflight.caller_took
                    if not (spooling or (spool_too and self._claiming)):
                        break
                    if remaining <= -_SPOOLING_GRACE_S:
                        # The sender's spool write is slow (fsync on a loaded disk): the process may
                        # end before it lands, so this thread spools the batch too (the same id).
                        force = spooling
                        break
                    remaining = 0.05
                self._cond.wait(remaining)
            if spool_too:
                self._stop = True  # no new claim once the exit stops waiting
                self._spool_files.cancel_merges()  # nor a merge committed while the process ends
                claim, self._resending = self._resending, None
                if claim is not None:  # a resend still waiting for its answer: its file goes back
                    self._spool_files.release(claim)  # under the lock, so the sender sees it gone
            leftovers = self._take_all(force)
        for batch in leftovers:
            self._spool_taken(batch)
        return sum(batch.events for batch in leftovers)

    def _thread_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._no_thread

    def _take_all(self, force: bool = False) -> list[_Batch]:
        """Under the lock: take the queue and the batch in flight, to be spooled by the caller.

        ``force``: also a batch in flight that the sender is spooling itself.
        """
        taken = list(self._queue)
        self._queue.clear()
        self._queue_bytes = 0
        batch = self._inflight
        if batch is not None and not batch.sent and (not batch.taken or (force and not batch.caller_took)):
            taken.append(batch)
        for batch in taken:
            batch.taken = batch.caller_took = True
        self._cond.notify_all()  # wakes a sender in backoff: its batch is taken
        return taken

    def _cut(self) -> _Batch:
        """Under the lock: turn the current lines into a batch."""
        batch = _Batch(b"".join(self._lines), len(self._lines))
        self._lines = []
        self._cur_bytes = 0
        return batch

    def _submit(self, batch: _Batch) -> None:
        with self._cond:
            room = not self._queue or self._queue_bytes + len(batch.data) <= self._max_queue
            if room and not self._no_thread and not _shutting_down:
                self._queue.append(batch)
                self._queue_bytes += len(batch.data)
                self._cond.notify_all()
                return
            batch.taken = True
        self._spool_taken(batch)  # the queue is full or no thread may run: disk, not waiting

    def _ensure_thread(self) -> None:
        with self._cond:
            if self._thread is not None or self._starting or self._no_thread or self._stop or _shutting_down:
                return
            self._starting = True
        try:
            thread = start_internal_thread(self._run, "webhook")
        except RuntimeError:
            # PY312: CPython 3.12.0-3.12.2 raise RuntimeError("can't create new thread at
            # interpreter shutdown") when a thread is started from an atexit handler
            # (python/cpython#113964); the batches are spooled synchronously instead.
            with self._cond:
                self._starting = False
                self._no_thread = True
                if self._lines:
                    self._queue.append(self._cut())
                leftovers = self._take_all()
            for batch in leftovers:
                self._spool_taken(batch)
            return
        with self._cond:
            self._starting = False
            self._thread = thread

    # -- sender thread -------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:
            with self._cond:
                self._no_thread = True
                self._cond.notify_all()
            self._warn("internal", f"handit: webhook sender stopped; batches are spooled instead: {exc!r}")

    def _loop(self) -> None:
        while True:
            batch = None
            with self._cond:
                while True:
                    if self._stop:
                        return
                    now = time.monotonic()
                    if self._queue:
                        batch = self._queue.popleft()
                        self._queue_bytes -= len(batch.data)
                        batch.posted = True  # from here on the exit path may spool it mid-POST
                        self._inflight = batch
                        break
                    if self._lines and now - self._cur_since >= self._flush_interval:
                        self._queue.append(self._cut())
                        self._queue_bytes += len(self._queue[-1].data)
                        continue
                    if self._resend_pending and now >= self._down_until and not (self._exiting and self._down):
                        break
                    waits = [self._cur_since + self._flush_interval - now] if self._lines else []
                    if self._resend_pending:
                        waits.append(self._down_until - now)
                    self._cond.wait(min(waits) if waits else None)
            if batch is None:
                self._resend_one()
                continue
            try:
                self._deliver(batch)
            finally:
                with self._cond:
                    self._inflight = None
                    self._cond.notify_all()

    def _deliver(self, batch: _Batch) -> None:
        """Send one batch with retries; spool it when the endpoint does not take it."""
        probe = self._down  # while the endpoint is down, one attempt, and none before _down_until
        attempt = 0
        reached = False
        while not (probe and time.monotonic() < self._down_until):
            kind, status, retry_after, detail, reached_now = self._transport.post(batch.gzipped(), batch.id)
            reached = reached or reached_now
            if kind == OK:
                with self._cond:
                    batch.sent = True
                    path = batch.spool_path
                    self.stats["sent_batches"] += 1
                    self.stats["sent_events"] += batch.events
                    self._down = False
                    self._down_until = 0.0
                    self._resend_pending = True
                if path is not None:
                    self._unspool(batch, path)
                return
            if kind == REJECT:
                self._up()
                self._reject(status, batch.events)
                return
            if kind == KEEP or probe or attempt >= self._max_retries or self._exiting:
                self._mark_down(retry_after)
                self._warn_unreachable(detail)
                break
            delay = retry_after if retry_after is not None else self._delay(attempt)
            attempt += 1
            self._count("retries", 1)
            end = time.monotonic() + delay
            with self._cond:
                while not batch.taken and not self._exiting and (left := end - time.monotonic()) > 0:
                    self._cond.wait(left)
            if batch.taken:
                return
            if self._exiting:  # no more waiting: the exit spools it now
                break
        with self._cond:
            if batch.taken:
                return
            batch.taken = True
            batch.posted = reached
        self._spool_taken(batch)

    def _delay(self, attempt: int) -> float:
        base, cap = self._backoff
        return min(cap, base * 2.0 ** min(attempt, 60)) * random.uniform(0.5, 1.0)

    def _up(self) -> None:
        with self._cond:
            self._down = False
            self._down_until = 0.0

    def _mark_down(self, retry_after: float | None) -> None:
        with self._cond:
            self._down = True
            self._down_until = time.monotonic() + (self._backoff[1] if retry_after is None else retry_after)

    def _reject(self, status: int | None, events: int) -> None:
        self._count("rejected", 1)
        self._warn(f"reject:{status}", f"handit: {self._shown_url} refused a batch of {events} events with "
                   f"HTTP {status}; it was dropped (further refusals are counted in stats['rejected'])")

    def _warn_unreachable(self, detail: str) -> None:
        self._warn("unreachable", f"handit: {self._shown_url} did not take a batch ({detail}); batches are "
                   f"spooled to {self.spool_dir} and resent when it answers")

    # -- spool ---------------------------------------------------------------

    def _spool_taken(self, batch: _Batch) -> None:
        """Spool a batch taken from the sender; undo it if the sender delivered it meanwhile."""
        path = self._spool(batch)
        with self._cond:
            batch.spool_path = path
            sent = batch.sent
        if sent and path is not None:
            self._unspool(batch, path)

    def _unspool(self, batch: _Batch, path: str) -> None:
        # If another process has claimed the file already, it resends the batch under
        # the same X-Handit-Batch-Id and the receiver drops the duplicate.
        if self._spool_files.unlink(path, len(batch.gzipped())):
            with self._cond:
                self.stats["spooled_batches"] -= 1
                self.stats["spooled_events"] -= batch.events

    def _spool(self, batch: _Batch) -> str | None:
        """Write a batch to the spool as one file; returns its path, or None if it was dropped."""
        if self._max_spool <= 0:
            self._count("dropped_events", batch.events)
            self._warn("nospool", f"handit: a batch of {batch.events} events was not delivered and the spool is "
                       "disabled (max_spool_bytes=0); unsent events are dropped and counted")
            return None
        try:
            path, dropped = self._spool_files.write(batch.gzipped(), batch.id, unsent=not batch.posted)
        except OSError as exc:
            self._count("dropped_events", batch.events)
            self._warn("spoolerror", f"handit: cannot write to spool dir {self.spool_dir} ({exc}); "
                       "unsent events are dropped and counted in stats['dropped_events']")
            return None
        with self._cond:
            self.stats["spooled_batches"] += 1
            self.stats["spooled_events"] += batch.events
            self._resend_pending = True
        if dropped:
            self._count("dropped_events", dropped)
            self._warn("dropped", f"handit: spool {self.spool_dir} is over max_spool_bytes={self._max_spool}; "
                       f"its {dropped} oldest unsent events were deleted (further drops are counted in "
                       "stats['dropped_events'])")
        return path

    def _resend_one(self) -> None:
        """Resend the oldest spooled file (with the unsent ones merged into it) once.

        On failure the file goes back and the endpoint counts as down.
        """
        with self._cond:
            if self._stop:
                return
            self._claiming = True
        try:
            claim = self._spool_files.claim()
        finally:
            with self._cond:
                self._claiming = False
                self._cond.notify_all()
        with self._cond:
            if claim is None:
                self._resend_pending = False
                self._cond.notify_all()  # an exit flush may be waiting for the spool to empty
                return
            self._resending = claim
        answer = self._transport.post(claim.body, claim.batch_id)
        with self._cond:
            put_back = self._resending is not claim  # by the exit, past its deadline
            self._resending = None
            self._cond.notify_all()
        if put_back:
            if answer.kind in (OK, REJECT):  # taken after all: the file put back must not go again
                self._spool_files.unlink(claim.retry_path, len(claim.body))
            return
        if answer.kind in (OK, REJECT):
            self._spool_files.finish(claim)
            self._up()
            if answer.kind == OK:
                self._count("resent_batches", claim.files)
            else:
                self._reject(answer.status, claim.events)
            return
        self._spool_files.release(claim, unsent=not answer.reached)  # for the next attempt or process
        self._mark_down(answer.retry_after)
        self._warn_unreachable(answer.detail)

    # -- small helpers -------------------------------------------------------

    def _count(self, key: str, n: int) -> None:
        with self._cond:
            self.stats[key] += n

    def _warn(self, key: str, message: str) -> None:
        """Warn once per kind of problem; messages never contain the API key."""
        with self._cond:
            if key in self._warned:
                return
            self._warned.add(key)
        try:
            warnings.warn(message, HanditExportWarning, stacklevel=3)
        except Exception:  # -W error turns the warning into an exception; it must not escape
            pass


def _at_exit() -> None:
    """Spool what is left within the exit deadline, without starting a thread (see _ensure_thread)."""
    global _shutting_down
    for exporter in list(_live):
        exporter.flush_at_exit()
    _shutting_down = True  # exporters created from here on never start a thread


def _after_fork_in_child() -> None:
    """A forked child keeps none of its parent's batches (the parent sends them) and no threads."""
    global _exit_started
    _exit_started = None
    _spool.forget_claims()
    for exporter in list(_live):
        exporter._reset()


atexit.register(_at_exit)
if os.name == "posix":  # os.register_at_fork does not exist on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)
