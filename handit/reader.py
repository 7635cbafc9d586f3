"""Reading stage: encoded blocks and trace files -> events in the JSONL schema, streamed.

A block is what one drain produced for one session from one thread (see
``docs/trace-format.md`` and :func:`handit._fallback.drain`, the encoder):

    varint thread_ident, varint base_ts, then events up to the end of the block

Each event is a tag byte (``kind = tag & 0x0F``; ``0x80`` "has aux", ``0x40``
"has key", CALL only) followed by fields; ``dts`` is a zigzag varint delta from
the previous event's time (the first event's from ``base_ts``):

    CALL    varint code_index, dts, [varint key], [varint n, n strings]
    RETURN  dts, [string]
    UNWIND  dts, string type_name, string message
    YIELD / RESUME / THROW   dts, varint key
    PAUSE   dts, varint key, varint ns (a YIELD and the RESUME right after it)
    STEP    dts, varint key, varint ns (a RESUME and the YIELD right after it)
    TASK    dts, varint key, varint name  (an asyncio task was created: records.task_name_ref)
    HANDOFF / ENTER / LEAVE  dts, varint token  (work handed to another thread)
    RENAME  dts, varint old name, varint new name  (a task renamed: records.RENAME)

:class:`TraceBuilder` turns blocks into ``call`` / ``return`` / ``exception``
events, keeping call stacks and suspended generators across blocks. Parents follow
OpenTelemetry's context rule: a task's first call has as parent the call open where
the task was created (its TASK marker, keyed by the task's coroutine), and so does
the first call of work handed to another thread (HANDOFF, then ENTER on that
thread); calls in a task carry its ``task`` name and per-session ``task_id``.

A task renamed after it was created (``Task.set_name``; the engine sees the name a task
has when it is done: a RENAME record) gets a ``task_name`` event (``task_id``, ``task``,
``ts_ns``); later calls carry the new name, and :attr:`TraceBuilder.task_names` holds
every renamed task's last name, for views that rename what they already hold.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable, Iterator

from .records import (
    CALL, ENTER, GAP, HANDOFF, LEAVE, PAUSE, RENAME, RESUME, STEP, RETURN, TASK, THROW, UNWIND, YIELD, put_string, put_varint, task_name,
)

__all__ = ["BlockEncoder", "CorruptBlockError", "TraceBuilder", "read_string", "read_uvarint", "rename_tasks"]

# A stack entry is a list: [call_id, func, t0_ns, key, suspended_ns, task].
# call_id None marks a phantom: a generator resumed in the session but started
# before it; it emits nothing and only keeps later pops balanced. task is
# [name, task_id] for a call in an asyncio task (one list per task: a rename changes it), else None.
_ID, _FUNC, _T0, _KEY, _SUSP, _TASK = range(6)
_MAX_PENDING = 65536  # tasks created but not started, hand-overs not entered: kept at most (records.MAX_GEN_KEYS)
_MAX_HELD = 256  # blocks of a thread held for a HANDOFF (it comes in the next drain's blocks at the latest)
_NEVER = 1 << 63  # no HTTP request waits for its link on this thread


class CorruptBlockError(ValueError):
    """A block does not follow the block format (bad kind byte, a count or varint out of bounds, or cut short)."""


_VARINT_BITS = 64  # every encoder writes 64-bit values: 10 bytes at most


def read_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode an unsigned LEB128 varint of at most 64 bits.

    Args:
        data: the buffer.
        pos: offset of the varint's first byte.
    Returns:
        ``(value, offset after the varint)``.
    Raises:
        IndexError: the buffer ends inside the varint.
        CorruptBlockError: the varint is longer than 10 bytes (no encoder writes one).
    """
    result = 0
    shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= _VARINT_BITS + 6:
            raise CorruptBlockError(f"a varint longer than 10 bytes at offset {pos - 10}")


def read_string(data: bytes, pos: int) -> tuple[str, int]:
    """Decode a block-format string (varint byte length, then UTF-8).

    Args:
        data: the buffer.
        pos: offset of its length.
    Returns:
        ``(text, offset after it)``.
    Raises:
        IndexError: the buffer ends inside it.
    """
    size, pos = read_uvarint(data, pos)
    end = pos + size
    if end > len(data):
        raise IndexError("block ends inside a string")
    return data[pos:end].decode("utf-8", "replace"), end


def _unknown_code(index: int) -> tuple[str, str, str, int, tuple[str, ...]]:
    return (f"<unknown code {index}>", "?", "?", 0, ())


def _arg_names(names: tuple[str, ...], n: int) -> tuple[str, ...]:
    """Names for ``n`` previews when the code table has a different count (``argN`` past the end)."""
    return tuple(names[i] if i < len(names) else f"arg{i}" for i in range(n))


class TraceBuilder:
    """Decodes one session's blocks into events, keeping state across blocks.

    Per thread a call stack; per session a stash of suspended generator and
    coroutine calls keyed by their key (the frame's identity). Events come out
    in block order; ``call_id`` counts from 1 per session.
    A thread whose ENTER comes before its work's HANDOFF (a drain raced the
    hand-over) has its records held until the block with the HANDOFF is fed.

    HTTP events made outside the engine (:meth:`extra`) get the ``parent_id`` of the
    call running on their thread at their request's ``t0_ns``: the innermost call on
    the thread's stack when decoding passes that time (a coroutine suspended then is
    not on the stack, so concurrent tasks on one thread are told apart). A request is
    held, with its responses, until then: its ``http_request`` event is always written
    before the records its thread makes after it, so a stream of blocks and extras in
    write order (a trace file, a sink) links every request once its thread moves on.

    Args:
        session_id: written into every event.
        code_lookup: maps a code index to an object with ``qualname``,
            ``module``, ``file``, ``line`` and ``argnames`` (a
            :class:`handit._policy.CodeInfo` or alike); may raise for an
            unknown index (the call is then named ``<unknown code N>``).

    Attributes:
        stats: ``calls``, ``returns``, ``exceptions``, ``max_depth``, and the
            ``incomplete``, ``abandoned`` and ``corrupt_blocks`` counts.
        task_names: task id -> its last name, for the tasks renamed after they were created.
        first_ts: base time of the first block fed (0 before any).
        last_ts: latest event time seen (0 before any).
    """

    def __init__(self, session_id: str, code_lookup: Callable[[int], Any]) -> None:
        self.session_id = session_id
        self._lookup = code_lookup
        self._codes: dict[int, tuple[str, str, str, int, tuple[str, ...]]] = {}
        self._stacks: dict[int, list[list[Any]]] = {}
        self._stash: dict[int, tuple[list[Any], int]] = {}
        self._spawned: dict[int, tuple[Any, tuple[str, int]]] = {}  # coroutine key -> (parent id, task)
        self._handoffs: dict[int, Any] = {}  # token -> parent id
        # threads whose records wait for a HANDOFF not read yet: ident -> [(block, pos, ts, ENTER token)]
        self._held: dict[int, list[tuple[bytes, int, int, int]]] = {}
        self._awaited: dict[int, int] = {}  # token -> the thread held for its HANDOFF
        self._ready: list[int] = []  # held threads whose HANDOFF was read
        self._giving_up = False
        self._links: dict[int, list[list[Any]]] = {}  # thread -> [token, parent id, stack depth] of entered work
        self._n_tasks = 0
        self._task_refs: dict[int, list[Any]] = {}  # name reference -> the latest task created with it
        self.task_names: dict[int, str] = {}
        self._next_id = 1
        # HTTP requests waiting for their parent, per thread in time order: [request, held responses]
        self._waiting: dict[int, list[list[Any]]] = {}
        self._inbox: deque[dict[str, Any]] = deque()
        self._http_parent: dict[Any, Any] = {}  # request id -> parent call id, once linked
        self._thread_ts: dict[int, int] = {}  # per thread: the latest record time decoded
        self.first_ts = 0
        self.last_ts = 0
        self.stats: dict[str, int] = {
            "calls": 0, "returns": 0, "exceptions": 0, "max_depth": 0,
            "incomplete": 0, "abandoned": 0, "corrupt_blocks": 0,
        }

    def _code(self, index: int) -> tuple[str, str, str, int, tuple[str, ...]]:
        """Look a code index up once; unknown indices are not cached (a later table may add them)."""
        try:
            info = self._lookup(index)
            entry = (str(info.qualname), str(info.module), str(info.file), int(info.line), tuple(info.argnames))
        except Exception:
            return _unknown_code(index)
        self._codes[index] = entry
        return entry

    def _closing(self, entry: list[Any], t1: int, flag: str) -> dict[str, Any]:
        """The ``return`` event of a call that never returned (``incomplete`` or ``abandoned``)."""
        self.stats["returns"] += 1
        self.stats[flag] += 1
        t1 = max(t1, entry[_T0])
        event: dict[str, Any] = {
            "type": "return", "session_id": self.session_id, "func": entry[_FUNC], "t1_ns": t1,
            "dt_ns": t1 - entry[_T0], "locals_preview": {}, "call_id": entry[_ID], flag: True,
        }
        if entry[_KEY]:
            event["suspended_ns"] = entry[_SUSP]
        return event

    def feed(self, block: bytes) -> list[dict[str, Any]]:
        """Decode one block.

        Args:
            block: one encoded block (bytes or bytearray).
        Returns:
            the events it finishes, in order. A corrupt block yields the events
            decoded before the damage and is counted in ``stats["corrupt_blocks"]``.
        """
        return list(self.iter_feed(block))

    def iter_feed(self, block: bytes) -> Iterator[dict[str, Any]]:
        """Decode one block lazily (bounded memory for large blocks); consume it fully.

        Args:
            block: one encoded block.
        Yields:
            events in the JSONL schema.
        """
        if self._inbox:
            yield from self._take_inbox()
        data = bytes(block) if not isinstance(block, bytes) else block
        if not data:
            return
        try:
            ident, pos = read_uvarint(data, 0)
            ts, pos = read_uvarint(data, pos)
        except (IndexError, CorruptBlockError):
            self.stats["corrupt_blocks"] += 1
            return
        if not self.first_ts:
            self.first_ts = ts
        held = self._held.get(ident)
        if held is not None:  # this thread waits for a hand-over's HANDOFF: its blocks queue behind
            held.append((data, pos, ts, 0))
            if len(held) > _MAX_HELD:  # the HANDOFF is not coming (another session's, or dropped)
                yield from self._resume(ident, give_up=True)
            return
        yield from self._decode(ident, data, pos, ts, 0)
        while self._ready:
            yield from self._resume(self._ready.pop())

    def _resume(self, ident: int, give_up: bool = False) -> Iterator[dict[str, Any]]:
        """Decode a thread's blocks held since an ENTER whose HANDOFF was not read yet (now read, or given up)."""
        queue = self._held.pop(ident, None)
        if not queue:
            return
        self._awaited.pop(queue[0][3], None)
        self._giving_up = give_up
        try:
            for n, (data, pos, ts, enter) in enumerate(queue):
                yield from self._decode(ident, data, pos, ts, enter)
                held = self._held.get(ident)
                if held is not None:  # held again at a later ENTER: the rest waits behind it
                    held.extend(queue[n + 1:])
                    return
        finally:
            self._giving_up = False

    def _decode(self, ident: int, data: bytes, pos: int, ts: int, enter: int) -> Iterator[dict[str, Any]]:
        """Decode a thread's block from ``pos`` (time ``ts`` there); ``enter``: the token of an ENTER just before it."""
        end = len(data)
        sid = self.session_id
        codes = self._codes
        code_of = self._code
        stash = self._stash
        stats = self.stats
        stack = self._stacks.get(ident)
        if stack is None:
            stack = self._stacks[ident] = []
        push = stack.append
        pop = stack.pop
        spawned = self._spawned
        links = self._links.get(ident)
        if enter:  # resumed after the ENTER that held this thread
            links = self._links.setdefault(ident, [])
            links.append([enter, self._handoffs.pop(enter, None), len(stack)])
        waiting = self._waiting.get(ident)
        next_link = waiting[0][0]["t0_ns"] if waiting else _NEVER
        next_id = self._next_id
        n_calls = n_returns = n_exc = 0
        max_depth = stats["max_depth"]
        # kinds are literals below: constants beat global lookups in this loop
        try:
            while pos < end:
                tag = data[pos]
                pos += 1
                kind = tag & 0x0F
                # dts follows the tag for every kind but CALL (code index first)
                if kind == 1:  # CALL
                    v = data[pos]
                    pos += 1
                    if v & 0x80:
                        v, pos = read_uvarint(data, pos - 1)
                    code = codes.get(v) or code_of(v)
                z = data[pos]
                pos += 1
                if z > 0x7F:  # deltas of 64 ns to 8 us take two bytes: inline them too
                    b = data[pos]
                    if b < 0x80:
                        z = (z & 0x7F) | (b << 7)
                        pos += 1
                    else:
                        z, pos = read_uvarint(data, pos - 1)
                ts += (z >> 1) ^ -(z & 1)
                if ts > next_link and kind < 8:  # an HTTP request made before this record: its parent is running now
                    yield from self._link_until(ident, stack, ts)
                    next_link = waiting[0][0]["t0_ns"] if waiting else _NEVER

                if kind == 1:  # CALL
                    key = 0
                    if tag & 0x40:
                        key = data[pos]
                        pos += 1
                        if key & 0x80:
                            key, pos = read_uvarint(data, pos - 1)
                    if tag & 0x80:
                        n = data[pos]
                        pos += 1
                        if n & 0x80:
                            n, pos = read_uvarint(data, pos - 1)
                        if n > end - pos:  # each preview takes a byte at least: checked before allocating
                            raise CorruptBlockError(f"{n} argument previews in the {end - pos} bytes left")
                        names = code[4]
                        if len(names) != n:
                            names = _arg_names(names, n)
                        args = {}  # filled in place: 2-3x faster than dict(zip(...))
                        for name in names:
                            size = data[pos]
                            pos += 1
                            if size & 0x80:
                                size, pos = read_uvarint(data, pos - 1)
                            args[name] = data[pos : pos + size].decode("utf-8", "replace")
                            pos += size
                        if pos > end:
                            raise CorruptBlockError("block ends inside an argument preview")
                    else:
                        args = {}
                    if stack:
                        top = stack[-1]
                        parent = top[0]
                        task = top[5]
                    else:
                        parent = task = None
                    if links and links[-1][2] == len(stack):  # the first call of work handed to this thread
                        parent = links[-1][1]
                        task = None
                    if key and spawned:
                        created = spawned.pop(key, None)
                        if created is not None:  # a task's first call: the parent is where it was created
                            parent, task = created
                    cid = next_id
                    next_id += 1
                    push([cid, code[0], ts, key, 0, task])
                    if len(stack) > max_depth:
                        max_depth = len(stack)
                    n_calls += 1
                    event = {
                        "type": "call", "session_id": sid, "func": code[0], "module": code[1],
                        "file": code[2], "line": code[3], "t0_ns": ts, "args_preview": args,
                        "call_id": cid, "parent_id": parent, "thread": ident,
                    }
                    if task is not None:
                        event["task"], event["task_id"] = task
                    yield event
                elif kind == 2:  # RETURN
                    if tag & 0x80:
                        size = data[pos]
                        pos += 1
                        if size & 0x80:
                            size, pos = read_uvarint(data, pos - 1)
                        ret = {"return": data[pos : pos + size].decode("utf-8", "replace")}
                        pos += size
                        if pos > end:
                            raise CorruptBlockError("block ends inside a return preview")
                    else:
                        ret = {}
                    if stack:
                        entry = pop()
                        if entry[0] is not None:
                            n_returns += 1
                            event = {
                                "type": "return", "session_id": sid, "func": entry[1], "t1_ns": ts,
                                "dt_ns": ts - entry[2], "locals_preview": ret, "call_id": entry[0],
                            }
                            if entry[3]:
                                event["suspended_ns"] = entry[4]
                            yield event
                elif kind == 3:  # UNWIND
                    type_name, pos = read_string(data, pos)
                    message, pos = read_string(data, pos)
                    if stack:
                        entry = pop()
                        if entry[0] is not None:
                            n_exc += 1
                            n_returns += 1
                            yield {
                                "type": "exception", "session_id": sid, "func": entry[1], "ts_ns": ts,
                                "type_name": type_name, "message": message, "call_id": entry[0],
                            }
                            event = {
                                "type": "return", "session_id": sid, "func": entry[1], "t1_ns": ts,
                                "dt_ns": ts - entry[2], "locals_preview": {}, "call_id": entry[0], "raised": True,
                            }
                            if entry[3]:
                                event["suspended_ns"] = entry[4]
                            yield event
                elif 4 <= kind <= 6:  # YIELD, RESUME, THROW
                    key = data[pos]
                    pos += 1
                    if key & 0x80:
                        key, pos = read_uvarint(data, pos - 1)
                    if kind == 4:
                        if stack and stack[-1][3] == key:
                            entry = pop()
                            stale = stash.get(key)
                            if stale is not None and stale[0][0] is not None:
                                # the key (a frame address) was reused: the old generator is gone
                                yield self._closing(stale[0], stale[1], "abandoned")
                            stash[key] = (entry, ts)
                    else:  # RESUME, THROW: the generator may continue on another thread
                        got = stash.pop(key, None)
                        if got is None:
                            entry = [None, None, ts, key, 0, None]
                            if spawned:
                                spawned.pop(key, None)  # a task's coroutine thrown into before it started
                        else:
                            entry = got[0]
                            entry[4] += ts - got[1]
                        push(entry)
                        if len(stack) > max_depth:
                            max_depth = len(stack)
                elif kind == PAUSE:  # the generator on top was suspended this long, and runs again
                    key, pos = read_uvarint(data, pos)
                    ns, pos = read_uvarint(data, pos)
                    if ts > next_link:  # requests made before it: the stack as it is
                        yield from self._link_until(ident, stack, ts)
                        next_link = waiting[0][0]["t0_ns"] if waiting else _NEVER
                    if stack and stack[-1][3] == key:
                        stack[-1][4] += ns
                elif kind == STEP:  # a suspended generator ran this long (to now) and is suspended again
                    key, pos = read_uvarint(data, pos)
                    ns, pos = read_uvarint(data, pos)
                    got = stash.pop(key, None)
                    if ts > next_link:
                        # folded steps keep their total time, not their windows: a request made
                        # since the previous record is taken to be the stepped generator's
                        if got is not None:
                            push(got[0])
                        yield from self._link_until(ident, stack, ts)
                        if got is not None:
                            pop()
                        next_link = waiting[0][0]["t0_ns"] if waiting else _NEVER
                    if got is not None:
                        got[0][4] += ts - ns - got[1]
                        stash[key] = (got[0], ts)
                        if len(stack) + 1 > max_depth:  # it ran on top of this thread's stack
                            max_depth = len(stack) + 1
                elif kind == GAP:  # records were dropped here (bounded-memory mode)
                    n = data[pos]
                    pos += 1
                    if n & 0x80:
                        n, pos = read_uvarint(data, pos - 1)
                    while stack:  # what was open here can no longer be matched
                        entry = pop()
                        if entry[_ID] is not None:
                            yield self._closing(entry, ts, "incomplete")
                    stats["dropped"] = stats.get("dropped", 0) + n
                    yield {"type": "gap", "session_id": self.session_id, "ts_ns": ts, "dropped": n, "thread": ident}
                elif kind == TASK:  # an asyncio task was created here
                    key, pos = read_uvarint(data, pos)
                    ref, pos = read_uvarint(data, pos)
                    self._n_tasks += 1
                    task = [task_name(ref, self._lookup) or f"task {self._n_tasks}", self._n_tasks]
                    if ref:
                        refs = self._task_refs
                        if len(refs) >= _MAX_PENDING:  # renames come as tasks end: the oldest are done with
                            del refs[next(iter(refs))]
                        refs.pop(ref, None)
                        refs[ref] = task
                    started = stash.get(key)
                    if started is not None:  # an eager task: it ran to its first await, and is its task from now on
                        started[0][5] = task
                    else:
                        if len(spawned) >= _MAX_PENDING:  # tasks that never ran: their first calls stay roots
                            spawned.clear()
                        spawned[key] = (self._innermost(stack, links), task)
                elif HANDOFF <= kind <= LEAVE:
                    token, pos = read_uvarint(data, pos)
                    if kind == HANDOFF:
                        if len(self._handoffs) >= _MAX_PENDING:
                            self._handoffs.clear()
                        self._handoffs[token] = self._innermost(stack, links)
                        if token in self._awaited:  # a thread held at its ENTER goes on after this block
                            self._ready.append(self._awaited.pop(token))
                    elif kind == ENTER:
                        if token not in self._handoffs and not self._giving_up:
                            # handed over by a thread whose blocks are not read yet (a drain raced the
                            # hand-over): this thread's records wait for the HANDOFF, in a later block
                            self._held[ident] = [(data, pos, ts, token)]
                            self._awaited[token] = ident
                            return
                        links = self._links.setdefault(ident, [])
                        links.append([token, self._handoffs.pop(token, None), len(stack)])
                    elif links:
                        for i in range(len(links) - 1, -1, -1):
                            if links[i][0] == token:
                                del links[i:]
                                break
                elif kind == RENAME:  # a task has a new name
                    ref, pos = read_uvarint(data, pos)
                    new_ref, pos = read_uvarint(data, pos)
                    task = self._task_refs.get(ref)
                    name = task_name(new_ref, self._lookup)
                    if task is not None and name is not None and name != task[0]:
                        task[0] = self.task_names[task[1]] = name
                        yield {"type": "task_name", "session_id": sid, "ts_ns": ts, "task_id": task[1], "task": name}
                else:
                    raise CorruptBlockError(f"unknown event kind {kind} at offset {pos}")
        except (IndexError, CorruptBlockError):
            stats["corrupt_blocks"] += 1
        finally:
            self._next_id = next_id
            stats["calls"] += n_calls
            stats["returns"] += n_returns
            stats["exceptions"] += n_exc
            stats["max_depth"] = max_depth
            self._thread_ts[ident] = ts
            if ts > self.last_ts:
                self.last_ts = ts

    @staticmethod
    def _innermost(stack: list[list[Any]], links: list[list[Any]] | None) -> Any:
        """The id of the call a marker belongs to: the innermost open one (entered work's parent below it)."""
        if links and links[-1][2] == len(stack):
            return links[-1][1]
        return _running(stack)

    def finish(self, end_ts: int) -> list[dict[str, Any]]:
        """Close every call still open.

        Calls still on a stack get a ``return`` with ``"incomplete": true`` at
        ``end_ts`` (innermost first). Suspended generators and coroutines that
        never finished get a ``return`` with ``"abandoned": true`` at the time
        they were last suspended (the last moment they ran).

        Args:
            end_ts: the session's end, epoch nanoseconds.
        Returns:
            the closing events.
        """
        out = self._take_inbox()
        for ident in list(self._held):  # threads still waiting for a HANDOFF: their work's calls are roots
            out.extend(self._resume(ident, give_up=True))
        self._ready.clear()
        for ident in list(self._waiting):
            out.extend(self._link_until(ident, self._stacks.get(ident, []), _NEVER))
        for stack in self._stacks.values():
            while stack:
                entry = stack.pop()
                if entry[0] is not None:
                    out.append(self._closing(entry, end_ts, "incomplete"))
        self._stacks.clear()
        for entry, t_suspended in self._stash.values():
            if entry[0] is not None:
                out.append(self._closing(entry, t_suspended, "abandoned"))
        self._stash.clear()
        self._spawned.clear()
        self._handoffs.clear()
        self._links.clear()
        return out

    def extra(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Take events made outside the engine; HTTP ones wait to be linked to their calls.

        May be called from any thread while another one feeds blocks: HTTP events go to
        an inbox (a deque: appends are atomic) that only :meth:`feed` and :meth:`finish` read.

        Args:
            events: extra events of this session, in the order they were made.
        Returns:
            the events that can be written now (every non-HTTP one). HTTP events come out
            of a later :meth:`feed` (once their thread's records pass their request's time)
            or :meth:`finish`, with ``parent_id`` set.
        """
        out: list[dict[str, Any]] = []
        for e in events:
            if e.get("type") in ("http_request", "http_response") and "request_id" in e:
                self._inbox.append(e)
            else:
                out.append(e)
        return out

    def _take_inbox(self) -> list[dict[str, Any]]:
        """File the HTTP events taken since the last call; returns those that are linked now."""
        out: list[dict[str, Any]] = []
        inbox = self._inbox
        while inbox:
            e = inbox.popleft()
            if e["type"] == "http_request" and "thread" in e and type(e.get("t0_ns")) is int:
                ident = e["thread"]
                if self._thread_ts.get(ident, 0) > e["t0_ns"]:  # its thread's records passed it already
                    e["parent_id"] = self._http_parent[e["request_id"]] = _running(self._stacks.get(ident, []))
                    out.append(e)
                else:
                    self._waiting.setdefault(ident, []).append([e, []])
                continue
            rid = e["request_id"]
            if rid in self._http_parent:
                e["parent_id"] = self._http_parent.pop(rid)
                out.append(e)
                continue
            held = next((w for ws in self._waiting.values() for w in ws if w[0]["request_id"] == rid), None)
            if held is not None and e["type"] == "http_response":
                held[1].append(e)
            else:  # its request was not seen (or has no thread): written as it is
                e.setdefault("parent_id", None)
                out.append(e)
        return out

    def unanswered(self) -> dict[Any, Any]:
        """Requests linked whose response has not come yet: request id -> parent call id (for an
        answer finished after its session, read after the session's end)."""
        return dict(self._http_parent)

    def _link_until(self, ident: int, stack: list[list[Any]], ts: int) -> list[dict[str, Any]]:
        """Link this thread's waiting requests made before ``ts`` to the call running now."""
        waiting = self._waiting.get(ident)
        out: list[dict[str, Any]] = []
        if not waiting:
            return out
        parent = _running(stack)
        while waiting and waiting[0][0]["t0_ns"] < ts:
            request, responses = waiting.pop(0)
            request["parent_id"] = parent
            out.append(request)
            if responses:
                for response in responses:
                    response["parent_id"] = parent
                out.extend(responses)
            else:
                self._http_parent[request.get("request_id")] = parent
        if not waiting:
            del self._waiting[ident]
        return out

    def open_calls(self) -> int:
        """How many calls are on a stack or suspended right now (phantoms excluded)."""
        on_stacks = sum(1 for s in self._stacks.values() for e in s if e[0] is not None)
        return on_stacks + sum(1 for e, _ in self._stash.values() if e[0] is not None)


class BlockEncoder:
    """Builds one block by hand: a reference encoder for tests, benchmarks and generated traces.

    The engines' drain is the production encoder; this one writes the same
    format from explicit events. Every method returns ``self``.

    Args:
        thread: the thread ident written in the block header.
        base_ts: the block's base time, epoch nanoseconds.
    """

    def __init__(self, thread: int, base_ts: int) -> None:
        self._out = bytearray()
        self._last = base_ts
        put_varint(self._out, thread)
        put_varint(self._out, base_ts)

    def _head(self, tag: int, ts: int) -> None:
        dts = ts - self._last
        self._last = ts
        self._out.append(tag)
        self._dts = (dts << 1) ^ (dts >> 63)

    def call(self, code: int, ts: int, *, key: int = 0, args: list[str] | None = None) -> BlockEncoder:
        """A CALL of code index ``code`` (``key`` for a generator/coroutine; argument previews)."""
        self._head(CALL | (0x80 if args is not None else 0) | (0x40 if key else 0), ts)
        put_varint(self._out, code)
        put_varint(self._out, self._dts)
        if key:
            put_varint(self._out, key)
        if args is not None:
            put_varint(self._out, len(args))
            for arg in args:
                put_string(self._out, arg)
        return self

    def ret(self, ts: int, preview: str | None = None) -> BlockEncoder:
        """A RETURN, with the return value's preview or none."""
        self._head(RETURN | (0x80 if preview is not None else 0), ts)
        put_varint(self._out, self._dts)
        if preview is not None:
            put_string(self._out, preview)
        return self

    def unwind(self, ts: int, type_name: str, message: str) -> BlockEncoder:
        """An UNWIND: the call ends with an exception."""
        self._head(UNWIND, ts)
        put_varint(self._out, self._dts)
        put_string(self._out, type_name)
        put_string(self._out, message)
        return self

    def _keyed(self, kind: int, ts: int, key: int) -> BlockEncoder:
        self._head(kind, ts)
        put_varint(self._out, self._dts)
        put_varint(self._out, key)
        return self

    def yield_(self, ts: int, key: int) -> BlockEncoder:
        """A YIELD: the generator with ``key`` is suspended."""
        return self._keyed(YIELD, ts, key)

    def resume(self, ts: int, key: int) -> BlockEncoder:
        """A RESUME: the generator with ``key`` continues."""
        return self._keyed(RESUME, ts, key)

    def throw(self, ts: int, key: int) -> BlockEncoder:
        """A THROW: the generator with ``key`` continues with an exception thrown in."""
        return self._keyed(THROW, ts, key)

    def pause(self, ts: int, key: int, ns: int) -> BlockEncoder:
        """A PAUSE: the generator with ``key`` was suspended ``ns`` and continues at ``ts``."""
        self._keyed(PAUSE, ts, key)
        put_varint(self._out, ns)
        return self

    def step(self, ts: int, key: int, ns: int) -> BlockEncoder:
        """A STEP: the suspended generator with ``key`` ran ``ns`` up to ``ts``, and is suspended again."""
        self._keyed(STEP, ts, key)
        put_varint(self._out, ns)
        return self

    def task(self, ts: int, key: int, name_ref: int) -> BlockEncoder:
        """A TASK: an asyncio task whose coroutine has ``key`` is created (``name_ref``: records.task_name_ref)."""
        self._keyed(TASK, ts, key)
        put_varint(self._out, name_ref)
        return self

    def rename(self, ts: int, old_ref: int, new_ref: int) -> BlockEncoder:
        """A RENAME: the task created with name ``old_ref`` is named ``new_ref`` now (records.task_name_ref)."""
        self._keyed(RENAME, ts, old_ref)
        put_varint(self._out, new_ref)
        return self

    def handoff(self, kind: int, ts: int, token: int) -> BlockEncoder:
        """A HANDOFF, ENTER or LEAVE (``kind``) of the work with ``token``."""
        return self._keyed(kind, ts, token)

    def to_bytes(self) -> bytes:
        """The encoded block."""
        return bytes(self._out)


def rename_tasks(events: list[dict[str, Any]], names: dict[int, str]) -> None:
    """Give the call events of renamed tasks their last name, in place (a list of one session's events).

    Args:
        events: the events, as a :class:`TraceBuilder` made them.
        names: its :attr:`TraceBuilder.task_names`.
    """
    for e in events:
        if e.get("type") == "call":
            name = names.get(e.get("task_id"))  # type: ignore[arg-type]
            if name is not None:
                e["task"] = name


def _running(stack: list[list[Any]]) -> Any:
    """The call id of the innermost call on ``stack`` that belongs to the session (None if none)."""
    for entry in reversed(stack):
        if entry[_ID] is not None:
            return entry[_ID]
    return None
