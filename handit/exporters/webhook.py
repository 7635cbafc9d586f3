"""HTTP ingest exporter: events -> gzip-compressed JSONL batches POSTed to HANDIT_ENDPOINT, spooled to disk while it is down."""
from __future__ import annotations

import atexit
import collections
import email.utils
import http.client
import ipaddress
import json
import math
import os
import random
import re
import struct
import threading
import time
import urllib.error
import urllib.request
import uuid
import warnings
import weakref
import zlib
from typing import Any
from urllib.parse import urlsplit

from .._internal import start_internal_thread
from ..errors import ConfigError
from .base import Exporter

__all__ = ["HanditExportWarning", "WebhookExporter"]

_STATS = ("sent_batches", "sent_events", "retries", "spooled_batches", "spooled_events",
          "resent_batches", "rejected", "dropped_events")
# Outcomes of one POST. KEEP: a redirect, which is not followed (the Authorization
# header would go along to wherever it points), so the batch stays in the spool.
_OK, _REJECT, _RETRY, _KEEP = "ok", "reject", "retry", "keep"
_SPOOL_NAME = re.compile(r"^\d+-\d+-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.jsonl\.gz$")
_CLAIMED_NAME = re.compile(r"^(.+\.jsonl\.gz)\.sending-(\d+)$")
_TEMP_NAME = re.compile(r"^\.tmp-(\d+)-")
_GZIP_COMMENT = b"handit events="
_RESPONSE_LIMIT = 64 * 1024  # bytes of a response body read (and ignored) before closing
_STALE_S = 600.0  # a claim or temp file this old is abandoned even if its pid is alive (pid reuse)
_EXIT_WAIT_S = 2.0  # at exit, a running sender gets this long to send what is queued
_O_BINARY = os.O_BINARY if os.name == "nt" else 0

_live: weakref.WeakSet[WebhookExporter] = weakref.WeakSet()
_claimed: set[str] = set()  # spool files this process is sending, shared by its exporters
_shutting_down = False


class HanditExportWarning(UserWarning):
    """An exporter lost, refused or postponed events (each kind is reported once)."""


class _Batch:
    """One POST body: JSONL bytes, its event count and an idempotency key kept across retries and the spool."""

    __slots__ = ("id", "data", "events", "body", "taken", "caller_took", "sent", "spool_path")

    def __init__(self, data: bytes, events: int) -> None:
        self.id = str(uuid.uuid4())
        self.data = data
        self.events = events
        self.body: bytes | None = None
        self.taken = False  # spooled (or being spooled) by someone; the sender stops retrying it
        self.caller_took = False  # taken by flush() or the exit hook, not by the sender
        self.sent = False
        self.spool_path: str | None = None

    def gzipped(self) -> bytes:
        if self.body is None:
            self.body = _gzip(self.data, self.events)
        return self.body


class WebhookExporter(Exporter):
    """Send events to an HTTP ingest endpoint as gzip-compressed JSONL batches.

    One background thread (started with the first events) POSTs the batches,
    retries network errors, 408, 429 and 5xx with exponential backoff and
    jitter (``Retry-After`` honoured, capped at ``backoff_max``), and writes a
    batch it cannot deliver to ``spool_dir``; spooled files, also those left by
    earlier processes, are resent after each successful POST. Nothing here
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
        Raises:
            ConfigError: the endpoint is not a usable URL, the key would travel in clear
                text, the key holds control characters, or a number is out of range.
        """
        super().__init__()
        api_key = api_key or None
        host = _check_endpoint(endpoint, api_key, allow_insecure_http)
        for setting, value, low, strict in (
            ("HANDIT_HTTP_TIMEOUT", timeout, 0, True), ("batch_bytes", batch_bytes, 1, False),
            ("HANDIT_MAX_SPOOL_BYTES", max_spool_bytes, 0, False), ("max_queue_bytes", max_queue_bytes, 0, False),
            ("max_retries", max_retries, 0, False), ("backoff_base", backoff_base, 0, False),
            ("backoff_max", backoff_max, 0, False), ("flush_interval", flush_interval, 0, True),
        ):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or value < low or (strict and value == low):
                raise ConfigError(setting, value, f"is not a number {'>' if strict else '>='} {low}")
        self.endpoint = endpoint.strip()
        self.spool_dir = os.path.abspath(spool_dir)
        self.timeout = float(timeout)
        self._shown_url = _display_url(self.endpoint)
        self._batch_bytes = int(batch_bytes)
        self._max_spool = int(max_spool_bytes)
        self._max_queue = int(max_queue_bytes)
        self._max_retries = int(max_retries)
        self._backoff = (float(backoff_base), float(backoff_max))
        self._flush_interval = float(flush_interval)
        self._headers = {"Content-Type": "application/jsonl", "Content-Encoding": "gzip", "User-Agent": "handit"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._opener = _make_opener(loopback=_is_loopback(host))
        self._closed = False
        self._reset()
        _live.add(self)

    def _reset(self) -> None:
        """(Re)create the mutable state: at construction and in a forked child."""
        self.stats = dict.fromkeys(_STATS, 0)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._spool_lock = threading.Lock()
        self._lines: list[bytes] = []
        self._cur_bytes = 0
        self._cur_since = 0.0
        self._queue: collections.deque[_Batch] = collections.deque()
        self._queue_bytes = 0
        self._inflight: _Batch | None = None
        self._thread: threading.Thread | None = None
        self._starting = False
        self._no_thread = False
        self._stop = False
        self._down = False
        self._down_until = 0.0
        self._resend_pending = True  # the spool may hold files from earlier processes
        self._spool_total: int | None = None
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

    def _flush_until(self, deadline: float) -> None:
        with self._cond:
            batch = self._cut() if self._lines else None
        if batch is not None:
            self._submit(batch)
        with self._cond:
            while self._thread_alive():
                inflight = self._inflight
                if not self._queue and (inflight is None or inflight.caller_took):
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    # Past the deadline the batch in flight is taken from the sender, unless
                    # the sender is writing it to the spool already: that takes milliseconds.
                    if inflight is None or not inflight.taken or inflight.caller_took:
                        break
                    remaining = 0.05
                self._cond.wait(remaining)
            leftovers = self._take_all()
        for batch in leftovers:
            self._spool_taken(batch)

    def _thread_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._no_thread

    def _take_all(self) -> list[_Batch]:
        """Under the lock: take the queue and the batch in flight, to be spooled by the caller."""
        taken = list(self._queue)
        self._queue.clear()
        self._queue_bytes = 0
        batch = self._inflight
        if batch is not None and not batch.sent and not batch.taken:
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
                        self._inflight = batch
                        break
                    if self._lines and now - self._cur_since >= self._flush_interval:
                        self._queue.append(self._cut())
                        self._queue_bytes += len(self._queue[-1].data)
                        continue
                    if self._resend_pending and now >= self._down_until:
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
        while not (probe and time.monotonic() < self._down_until):
            kind, status, retry_after, detail = self._post(batch.gzipped(), batch.id)
            if kind == _OK:
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
            if kind == _REJECT:
                self._up()
                self._reject(status, batch.events)
                return
            if kind == _KEEP or probe or attempt >= self._max_retries:
                self._mark_down(retry_after)
                self._warn_unreachable(detail)
                break
            delay = retry_after if retry_after is not None else self._delay(attempt)
            attempt += 1
            self._count("retries", 1)
            end = time.monotonic() + delay
            with self._cond:
                while not batch.taken and (left := end - time.monotonic()) > 0:
                    self._cond.wait(left)
            if batch.taken:
                return
        with self._cond:
            if batch.taken:
                return
            batch.taken = True
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

    def _post(self, body: bytes, batch_id: str) -> tuple[str, int | None, float | None, str]:
        """POST one body once. Returns (outcome, HTTP status, Retry-After seconds, detail)."""
        headers = dict(self._headers)
        headers["X-Handit-Batch-Id"] = batch_id
        request = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read(_RESPONSE_LIMIT)
                return _OK, response.status, None, ""
        except urllib.error.HTTPError as exc:
            status = exc.code
            retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None, self._backoff[1])
            exc.close()
            if status in (408, 429) or status >= 500:
                return _RETRY, status, retry_after, f"HTTP {status}"
            if 300 <= status < 400:
                return _KEEP, status, None, f"HTTP {status} redirect (not followed)"
            return _REJECT, status, None, f"HTTP {status}"
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            return _RETRY, None, None, f"{type(reason).__name__}: {reason}"

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
        try:
            os.unlink(path)
        except OSError:
            return
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
        body = batch.gzipped()
        name = f"{time.time_ns():020d}-{os.getpid()}-{batch.id}.jsonl.gz"
        final = os.path.join(self.spool_dir, name)
        temp = os.path.join(self.spool_dir, f".tmp-{os.getpid()}-{name}")
        try:
            os.makedirs(self.spool_dir, mode=0o700, exist_ok=True)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o600)
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(body)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temp, final)  # a crash never leaves half a file under a final name
            except BaseException:
                _unlink_quietly(temp)
                raise
        except OSError as exc:
            self._count("dropped_events", batch.events)
            self._warn("spoolerror", f"handit: cannot write to spool dir {self.spool_dir} ({exc}); "
                       "unsent events are dropped and counted in stats['dropped_events']")
            return None
        with self._cond:
            self.stats["spooled_batches"] += 1
            self.stats["spooled_events"] += batch.events
            self._resend_pending = True
        self._trim(len(body))
        return final

    def _trim(self, added: int) -> None:
        """Delete the oldest spool files while the spool holds more than max_spool_bytes."""
        dropped = 0
        with self._spool_lock:
            if self._spool_total is not None:
                self._spool_total += added
                if self._spool_total <= self._max_spool:
                    return
            sizes = {}
            for name in _listdir(self.spool_dir):
                if _SPOOL_NAME.match(name) or _CLAIMED_NAME.match(name):
                    try:
                        sizes[name] = os.stat(os.path.join(self.spool_dir, name)).st_size
                    except OSError:
                        pass
            total = sum(sizes.values())
            for name in sorted(n for n in sizes if _SPOOL_NAME.match(n)):  # oldest first
                if total <= self._max_spool:
                    break
                path = os.path.join(self.spool_dir, name)
                events = _event_count(path)
                try:
                    os.unlink(path)
                except OSError:  # claimed by a sender meanwhile
                    continue
                total -= sizes[name]
                dropped += events
            self._spool_total = total
        if dropped:
            self._count("dropped_events", dropped)
            self._warn("dropped", f"handit: spool {self.spool_dir} is over max_spool_bytes={self._max_spool}; "
                       f"its {dropped} oldest unsent events were deleted (further drops are counted in "
                       "stats['dropped_events'])")

    def _resend_one(self) -> None:
        """Resend the oldest spooled file once; on failure it goes back and the endpoint counts as down."""
        claim = self._claim_oldest()
        if claim is None:
            with self._cond:
                self._resend_pending = False
            return
        original, path = claim
        try:
            with open(path, "rb") as file:
                body = file.read()
            match = _SPOOL_NAME.match(os.path.basename(original))
            assert match is not None  # _claim_oldest only takes spool names
            kind, status, retry_after, detail = self._post(body, match.group(1))  # the batch's first id
            if kind not in (_OK, _REJECT):
                os.rename(path, original)  # back in line, for the next attempt or process
                self._mark_down(retry_after)
                self._warn_unreachable(detail)
                return
            self._up()
            if kind == _OK:
                self._count("resent_batches", 1)
            else:
                self._reject(status, _event_count_bytes(body))
            os.unlink(path)
            with self._spool_lock:
                if self._spool_total is not None:
                    self._spool_total = max(0, self._spool_total - len(body))
        except OSError:  # the file vanished or cannot be renamed back: a stale claim, reclaimed later
            pass
        finally:
            _claimed.discard(path)

    def _claim_oldest(self) -> tuple[str, str] | None:
        """Rename the oldest spool file to ``*.sending-<pid>``; returns (original path, claimed path).

        Also reclaims claims of dead processes and deletes their half-written temp files.
        """
        directory, now = self.spool_dir, time.time()
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
        for original, name in sorted(candidates):  # names start with the time: oldest first
            source = os.path.join(directory, name)
            target = os.path.join(directory, f"{original}.sending-{os.getpid()}")
            _claimed.add(target)  # before the rename, so no other exporter here takes it as stale
            try:
                # mtime first: whoever sees the claimed name also sees a fresh claim age
                os.utime(source)
                os.rename(source, target)
            except OSError:  # another process took it first
                _claimed.discard(target)
                continue
            return os.path.join(directory, original), target
        return None

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


def _check_endpoint(endpoint: object, api_key: str | None, allow_insecure_http: bool) -> str:
    """Validate HANDIT_ENDPOINT and HANDIT_API_KEY; returns the endpoint's host. Raises ConfigError."""
    if not isinstance(endpoint, str):
        raise ConfigError("HANDIT_ENDPOINT", endpoint, "is not a URL string")
    try:
        parts = urlsplit(endpoint.strip())
        host = parts.hostname or ""
        parts.port  # raises ValueError for a port out of range
    except ValueError:
        reason: str | None = "is not a valid URL (check the port and any [IPv6] brackets)"
    else:
        if any(c.isspace() or not c.isprintable() or not c.isascii() for c in endpoint.strip()):
            reason = "contains spaces, control or non-ASCII characters (percent-encode them)"
        elif parts.scheme not in ("http", "https"):
            reason = "is not an http:// or https:// URL"
        elif not host:
            reason = "has no host"
        elif "@" in parts.netloc:
            reason = "contains credentials; pass the key as HANDIT_API_KEY instead"
        elif parts.scheme == "http" and api_key and not allow_insecure_http and not _is_loopback(host):
            reason = ("is plain http:// to a non-loopback host, so the API key would travel unencrypted; "
                      "use https://, or allow_insecure_http=True (HANDIT_ALLOW_INSECURE_HTTP=1)")
        else:
            reason = None
    if reason:
        message = f"HANDIT_ENDPOINT: {_display_url(endpoint)!r} {reason}"
        raise ConfigError("HANDIT_ENDPOINT", endpoint, reason, message=message)
    if api_key is not None and (not isinstance(api_key, str) or not api_key.isascii() or not api_key.isprintable()):
        raise ConfigError("HANDIT_API_KEY", api_key, "is not a string of printable ASCII characters", secret=True)
    return host


def _display_url(url: str) -> str:
    """The URL for messages: no user info, query or fragment (they may hold secrets)."""
    url = re.split(r"[?#]", url.strip(), maxsplit=1)[0]
    return re.sub(r"^([^/?#]*//)[^/?#]*@", r"\1", url)


def _is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (also as ::ffff:127.x.y.z)."""
    host = host.rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _make_opener(loopback: bool) -> urllib.request.OpenerDirector:
    """An opener that honours proxy settings (never for loopback) and follows no redirects."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler({} if loopback else None), urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(), urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _retry_after(value: str | None, cap: float) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - time.time()  # naive dates are UTC per RFC 9110
    return min(max(seconds, 0.0), cap) if math.isfinite(seconds) else None


def _gzip(data: bytes, events: int) -> bytes:
    """One gzip member (RFC 1952) carrying the event count in its FCOMMENT field.

    The count lets the spool bound report dropped events without decompressing;
    any gzip reader ignores the comment.
    """
    header = b"\x1f\x8b\x08\x10\x00\x00\x00\x00\x00\xff" + _GZIP_COMMENT + str(events).encode() + b"\x00"
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    trailer = struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)
    return b"".join((header, compressor.compress(data), compressor.flush(), trailer))


def _event_count_bytes(body: bytes) -> int:
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
                return _event_count_bytes(head)
            return _event_count_bytes(head + file.read())
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


def _at_exit() -> None:
    """Spool what is left, synchronously and without starting a thread (see _ensure_thread).

    A sender thread that is already running and not in backoff gets _EXIT_WAIT_S to
    send the last batches; what it has not sent by then is spooled by this thread.
    """
    global _shutting_down
    for exporter in list(_live):
        try:
            with exporter._cond:
                alive = exporter._thread_alive() and not exporter._down
            exporter.flush(min(exporter.timeout, _EXIT_WAIT_S) if alive else 0.0)
            with exporter._cond:
                exporter._stop = exporter._no_thread = True  # later writes are spooled synchronously
                exporter._cond.notify_all()
        except Exception:  # nothing may escape at exit
            pass
    _shutting_down = True  # exporters created from here on never start a thread


def _after_fork_in_child() -> None:
    """A forked child keeps none of its parent's batches (the parent sends them) and no threads."""
    _claimed.clear()
    for exporter in list(_live):
        exporter._reset()


atexit.register(_at_exit)
if os.name == "posix":  # os.register_at_fork does not exist on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)
