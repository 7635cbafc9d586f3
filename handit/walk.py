"""Walk stage: one session's encoded blocks -> its calls handed to a consumer, without making events.

:class:`Walk` decodes blocks as :class:`handit.reader.TraceBuilder` does (a call stack
per thread, suspended generators by key, gaps, calls left open closed as incomplete or
abandoned) but makes no event dicts: it calls ``on_call`` when a call starts and
``on_return`` when it ends, and the consumer prunes what it does not need. ``on_call``
returns a *token* for the call: ``None`` means neither the call's end nor the calls it
makes matter (nothing more is reported below it, which is what makes a call tree of
millions of calls cheap: the calls past a tree's limits cost a stack push and pop);
anything else is handed back as the parent of its calls and to ``on_return``.

Previews are not decoded: ``on_call`` gets the block and the offset of the argument
previews (-1 for none), ``on_return`` those of the return preview; :func:`read_args`
and :func:`read_preview` decode them for the calls shown.

``handit/_walk.pyx`` is the compiled twin (stacks in C arrays); :func:`walk_type` picks
it when it is built and the engine is not ``fallback``; ``tests/test_walk.py`` compares
them, and both with the events' call tree.
"""
from __future__ import annotations

from typing import Any, Callable

from .blocks import compiled_twin
from .reader import read_string, read_uvarint
from .records import KIND_NAMES

__all__ = [
    "ABANDONED", "CodeNames", "INCOMPLETE", "KINDS", "MARKER_KINDS", "Walk", "WalkedSession", "read_args", "read_preview",
    "walk_type", "walks_every_kind",
]

KINDS = frozenset(range(1, 10))  # the record kinds a walk knows (CALL .. STEP); see walks_every_kind()
# task and hand-over markers (TASK .. LEAVE): a session holding any is read as events (its F frame
# counts them: ``counts["markers"]``), so a walk never meets them
MARKER_KINDS = frozenset(range(10, 14))
INCOMPLETE, ABANDONED = 1, 2  # on_return's ``flag`` for a call closed without its end (0: it ended)

# A stack entry is a list: [state, token, t0, key, suspended_ns, call_id].
_PHANTOM, _SKIP, _LIVE = 0, 1, 2  # phantom: a generator resumed in the session but started before it
_STATE, _TOKEN, _T0, _KEY, _SUSP, _ID = range(6)

OnCall = Callable[[Any, int, int, int, int, bytes, int], Any]
OnReturn = Callable[[Any, int, int, int, bytes, int, Any, int], None]


class Walk:
    """One session's calls from its blocks, reported to a consumer that prunes what it does not need.

    Args:
        on_call: ``(parent token or None for a root, call_id, code index, t0_ns, thread ident,
            block, offset of the argument previews or -1) -> token``; a None token stops
            reporting at this call (its end and everything below it).
        on_return: ``(token, t0_ns, t1_ns, suspended_ns or -1 for a plain call, block,
            offset of the return preview or -1, (type name, message) or None, flag)`` where
            flag is 0, :data:`INCOMPLETE` or :data:`ABANDONED`.

    Attributes:
        calls: calls decoded (reported or not); ``call_id`` counts them from 1.
        corrupt_blocks, dropped: counts, as :class:`~handit.reader.TraceBuilder`'s stats.
        first_ts, last_ts: base time of the first block, latest event time (epoch ns).
    """

    def __init__(self, on_call: OnCall, on_return: OnReturn) -> None:
        self._on_call, self._on_return = on_call, on_return
        self._stacks: dict[int, list[list[Any]]] = {}
        self._stash: dict[int, tuple[list[Any], int]] = {}
        self.calls = self.corrupt_blocks = self.dropped = 0
        self.first_ts = self.last_ts = 0

    def _end(self, entry: list[Any], t1: int, data: bytes, rpos: int, exc: Any, flag: int) -> None:
        if entry[_STATE] == _LIVE:
            self._on_return(entry[_TOKEN], entry[_T0], max(t1, entry[_T0]) if flag else t1,
                            entry[_SUSP] if entry[_KEY] else -1, data, rpos, exc, flag)

    def feed(self, block: bytes) -> None:
        """Walk one block (a damaged one up to the damage, counted in ``corrupt_blocks``).

        Args:
            block: one encoded block (bytes or bytearray).
        """
        data = bytes(block) if not isinstance(block, bytes) else block
        end = len(data)
        if not end:
            return
        try:
            ident, pos = read_uvarint(data, 0)
            ts, pos = read_uvarint(data, pos)
        except (IndexError, ValueError):
            self.corrupt_blocks += 1
            return
        if not self.first_ts:
            self.first_ts = ts
        stack = self._stacks.setdefault(ident, [])
        stash = self._stash
        on_call = self._on_call
        try:
            while pos < end:
                tag = data[pos]
                pos += 1
                kind = tag & 0x0F
                if kind == 1:  # CALL: code index before dts
                    code, pos = read_uvarint(data, pos)
                z, pos = read_uvarint(data, pos)
                ts += (z >> 1) ^ -(z & 1)
                if kind == 1:  # CALL
                    key = 0
                    if tag & 0x40:
                        key, pos = read_uvarint(data, pos)
                    apos = -1
                    if tag & 0x80:  # argument previews: skipped here, read by the consumer if it shows them
                        apos = pos
                        n, pos = read_uvarint(data, pos)
                        if n > end - pos:
                            raise IndexError("more argument previews than bytes left")
                        for _ in range(n):
                            size, pos = read_uvarint(data, pos)
                            pos += size
                        if pos > end:
                            raise IndexError("block ends inside an argument preview")
                    self.calls += 1
                    parent = stack[-1] if stack else None
                    if parent is not None and parent[_STATE] == _SKIP:  # below a call the consumer left out
                        stack.append([_SKIP, None, ts, key, 0, self.calls])
                        continue
                    # a phantom's calls are roots, as the reader has them (parent_id None)
                    token = on_call(parent[_TOKEN] if parent is not None else None, self.calls, code, ts, ident,
                                    data, apos)
                    stack.append([_LIVE if token is not None else _SKIP, token, ts, key, 0, self.calls])
                elif kind == 2:  # RETURN
                    rpos = -1
                    if tag & 0x80:
                        rpos = pos
                        size, pos = read_uvarint(data, pos)
                        pos += size
                        if pos > end:
                            raise IndexError("block ends inside a return preview")
                    if stack:
                        self._end(stack.pop(), ts, data, rpos, None, 0)
                elif kind == 3:  # UNWIND
                    type_name, pos = read_string(data, pos)
                    message, pos = read_string(data, pos)
                    if stack:
                        self._end(stack.pop(), ts, data, -1, (type_name, message), 0)
                elif kind == 4:  # YIELD
                    key, pos = read_uvarint(data, pos)
                    if stack and stack[-1][_KEY] == key:
                        entry = stack.pop()
                        stale = stash.get(key)
                        if stale is not None:  # its number went to a new generator: the old one is gone
                            self._end(stale[0], stale[1], data, -1, None, ABANDONED)
                        stash[key] = (entry, ts)
                elif kind == 5 or kind == 6:  # RESUME, THROW: it may continue on another thread
                    key, pos = read_uvarint(data, pos)
                    got = stash.pop(key, None)
                    if got is None:
                        entry = [_PHANTOM, None, ts, key, 0, 0]
                    else:
                        entry = got[0]
                        entry[_SUSP] += ts - got[1]
                    stack.append(entry)
                elif kind == 8:  # PAUSE: the generator on top was suspended this long, and runs again
                    key, pos = read_uvarint(data, pos)
                    ns, pos = read_uvarint(data, pos)
                    if stack and stack[-1][_KEY] == key:
                        stack[-1][_SUSP] += ns
                elif kind == 9:  # STEP: a suspended generator ran this long (to now), suspended again
                    key, pos = read_uvarint(data, pos)
                    ns, pos = read_uvarint(data, pos)
                    got = stash.pop(key, None)
                    if got is not None:
                        got[0][_SUSP] += ts - ns - got[1]
                        stash[key] = (got[0], ts)
                elif kind == 7:  # GAP: records were dropped here; what was open cannot be matched
                    n, pos = read_uvarint(data, pos)
                    while stack:
                        self._end(stack.pop(), ts, data, -1, None, INCOMPLETE)
                    self.dropped += n
                else:
                    raise IndexError(f"unknown event kind {kind} at offset {pos}")
        except (IndexError, ValueError):  # a cut or damaged block: what came before the damage stands
            self.corrupt_blocks += 1
        finally:
            if ts > self.last_ts:
                self.last_ts = ts

    def finish(self, end_ts: int) -> None:
        """Close every call still open: on a stack as incomplete at ``end_ts`` (innermost first),
        suspended as abandoned at its last suspension (as :meth:`handit.reader.TraceBuilder.finish`).

        Args:
            end_ts: the session's end, epoch nanoseconds.
        """
        for stack in self._stacks.values():
            while stack:
                self._end(stack.pop(), end_ts, b"", -1, None, INCOMPLETE)
        self._stacks.clear()
        for entry, t_suspended in self._stash.values():
            self._end(entry, t_suspended, b"", -1, None, ABANDONED)
        self._stash.clear()


def walks_every_kind() -> bool:
    """Whether a walk knows every record kind :mod:`handit.records` declares: a kind added there
    and not here would read as damage, so readers decode events instead until the walk learns it."""
    return set(KIND_NAMES) <= KINDS | MARKER_KINDS


def read_preview(data: bytes, pos: int) -> str | None:
    """The preview string at ``pos`` of a block (an ``on_return`` offset), or None for -1."""
    if pos < 0:
        return None
    return read_string(data, pos)[0]


def read_args(data: bytes, pos: int, names: tuple[str, ...]) -> dict[str, str]:
    """The argument previews at ``pos`` of a block (an ``on_call`` offset) by name ({} for -1).

    Args:
        data: the block.
        pos: the offset ``on_call`` was given.
        names: the code's argument names (``argN`` past their end, as the reader names them).
    """
    if pos < 0:
        return {}
    n, pos = read_uvarint(data, pos)
    args = {}
    for i in range(n):
        text, pos = read_string(data, pos)
        args[names[i] if i < len(names) else f"arg{i}"] = text
    return args


class CodeNames(dict):  # type: ignore[type-arg]
    """A code index -> ``(qualname, module, file, line, argnames)``, looked up once each (as the reader names codes).

    A dict, so a known index costs one lookup in C.

    Args:
        lookup: maps an index to an object with ``qualname``, ``module``, ``file``, ``line``
            and ``argnames``; may raise for an unknown index (named ``<unknown code N>``, not cached).
    """

    def __init__(self, lookup: Callable[[int], Any]) -> None:
        super().__init__()
        self._lookup = lookup

    def __missing__(self, index: int) -> tuple[str, str, str, int, tuple[str, ...]]:
        try:
            info = self._lookup(index)
            got = (str(info.qualname), str(info.module), str(info.file), int(info.line), tuple(info.argnames))
        except Exception:
            return (f"<unknown code {index}>", "?", "?", 0, ())
        self[index] = got
        return got


def walk_type(engine: str | None = None, require_compiled: bool = False) -> type[Walk]:
    """As :func:`handit.blocks.fold_type`, for :class:`Walk` (its compiled twin is ``handit._walk``)."""
    return compiled_twin(Walk, "_walk", engine, require_compiled)  # type: ignore[no-any-return]


class WalkedSession:
    """A session whose blocks are walked, in place of a :class:`~handit.reader.TraceBuilder` in
    :func:`handit.tracefile.iter_trace` (its ``make_builder``): it yields no call events.

    Args:
        walk: the session's :class:`Walk` (compiled or pure).
    """

    def __init__(self, walk: Any) -> None:
        self.walk = walk

    def iter_feed(self, block: bytes) -> tuple[()]:
        """Walk one block; no events come out."""
        self.walk.feed(block)
        return ()

    def extra(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Events made outside the engine, as they are (a walked session has no HTTP events to link)."""
        return events

    def finish(self, end_ts: int) -> list[dict[str, Any]]:
        """Close the calls still open (reported to the walk's consumer); no events come out."""
        self.walk.finish(end_ts)
        return []

    def unanswered(self) -> dict[Any, Any]:
        """No request waits for an answer (a walked session has no HTTP events)."""
        return {}

    @property
    def stats(self) -> dict[str, int]:
        """``calls``, ``corrupt_blocks`` and ``dropped``, as the reader's stats."""
        w = self.walk
        return {"calls": w.calls, "corrupt_blocks": w.corrupt_blocks, "dropped": w.dropped}

    @property
    def first_ts(self) -> int:
        """Base time of the first block walked."""
        return int(self.walk.first_ts)

    @property
    def last_ts(self) -> int:
        """Latest event time walked."""
        return int(self.walk.last_ts)
