"""Record layout, declared once: what the capture engines write into per-thread rings.

A record is ``(kind, slot, code, ts, aux, key)``:

- ``kind``: one of the constants below;
- ``slot``: the session slot active in the recording thread or task;
- ``code``: index of the code object in the engine's code table (TASK: the task's name);
- ``ts``: raw clock ticks (see :mod:`handit.clock`);
- ``aux``: CALL: tuple of argument values or None; RETURN: the return value or
  :data:`NO_VALUE`; UNWIND: ``(type_name, message)``; PAUSE, STEP: the time suspended or
  running (in the engine's clock units); otherwise None;
- ``key``: generator/coroutine frame identity for its CALL, YIELD, RESUME, THROW, PAUSE, STEP and
  final RETURN/UNWIND (the encoder turns it into a small number, :class:`GenKeys`); for
  GAP the number of records dropped before it (0 otherwise).

Marker records say what is not a Python call, in the thread where it happened (same clock,
same innermost open call); they hold integers only, never a Python object (the drain thread
encodes them without the GIL). TASK: an asyncio task was created here; ``key`` is its
coroutine's frame (a small number like a generator's, so the coroutine's CALL finds it) and
``code`` its name as :func:`task_name_ref` gives it (the name itself, when not asyncio's
``Task-N``, is an entry of the code table: module ``<task>``, qualname the name). HANDOFF:
work handed to another thread (``loop.run_in_executor``, ``asyncio.to_thread``; ``key``: a
token, written as it is); ENTER / LEAVE: that work starting and ending on its thread (same
token).

The compiled engine stores the same fields in C structs (``_tracer.pxd``: a 16-byte record,
followed by a 16-byte extension only when it has a value or key);
``tests/test_engine_parity.py`` checks that both declare the same kinds.
"""
from __future__ import annotations

from typing import Any, Callable

CALL = 1
RETURN = 2
UNWIND = 3
YIELD = 4
RESUME = 5
THROW = 6
GAP = 7  # bounded-memory mode: records were dropped here; key = how many
PAUSE = 8  # a YIELD and the RESUME right after it (nothing traced ran between), folded; aux = ns suspended
STEP = 9  # a RESUME and the YIELD right after it (nothing traced ran between), folded; aux = ns running
TASK = 10  # an asyncio task is created: key = its coroutine's frame, code = its name (task_name_ref)
HANDOFF = 11  # work handed to another thread: key = a token
ENTER = 12  # handed-over work starts on this thread: key = its token
LEAVE = 13  # handed-over work ends on this thread: key = its token
RENAME = 14  # an asyncio task renamed (Task.set_name): key = the name it was created with, code = its new name
HANDOFF_KINDS = (HANDOFF, ENTER, LEAVE)

KIND_NAMES = {
    CALL: "call",
    RETURN: "return",
    UNWIND: "unwind",
    YIELD: "yield",
    RESUME: "resume",
    THROW: "throw",
    GAP: "gap",
    PAUSE: "pause",
    STEP: "step",
    TASK: "task",
    HANDOFF: "handoff",
    ENTER: "enter",
    LEAVE: "leave",
    RENAME: "rename",
}

# code-object flags (CPython's CO_* values) that make a call suspendable
CO_GENERATOR = 0x20
CO_COROUTINE = 0x80
CO_ITERABLE_COROUTINE = 0x100
CO_ASYNC_GENERATOR = 0x200
SUSPENDABLE = CO_GENERATOR | CO_COROUTINE | CO_ITERABLE_COROUTINE | CO_ASYNC_GENERATOR


class _NoValue:
    """Marker for "no value recorded" (timing-only capture)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE = _NoValue()


class Rendered(str):
    """A preview string made at capture time (for values that may change later)."""

    __slots__ = ()


BLOCK_BYTES = 1 << 16  # a block is cut about here: a reader or writer never holds a larger one
# (64 KiB: a block waiting for the GIL under tracemalloc is the program's memory, see drain())
MAX_GEN_KEYS = 65536  # generator keys in use per session before the table starts again


class GenKeys:
    """The block encoder's generator keys for one session: a frame's identity -> a small number.

    A YIELD, RESUME or THROW names its generator or coroutine. The frame's address takes 7
    bytes as a varint and 95% of a generator-heavy trace was those addresses; the encoder
    writes a number from 1 instead, given at the generator's CALL (or first suspend or
    resume seen) and free again at its final RETURN or UNWIND, so live generators reuse
    the low numbers (one byte below 128 live). A generator collected while suspended
    sends no event: its number stays taken until a new frame at its address is seen (the
    reader then closes the old one as abandoned, as it did with addresses). The table is per
    session, not per thread, because generators move between threads. Past
    :data:`MAX_GEN_KEYS` numbers in use (abandoned generators piling up) the table starts
    again; generators still suspended then read back as abandoned and resumed phantoms.
    """

    __slots__ = ("index", "free", "next")

    def __init__(self) -> None:
        self.index: dict[int, int] = {}
        self.free: list[int] = []
        self.next = 1

    def key(self, frame: int) -> int:
        """The number of the generator whose frame is ``frame`` (a new one if it has none)."""
        k = self.index.get(frame)
        if k is not None:
            return k
        if self.free:
            k = self.free.pop()
        else:
            if self.next > MAX_GEN_KEYS:
                self.index.clear()
                self.next = 1
            k = self.next
            self.next += 1
        self.index[frame] = k
        return k

    def release(self, frame: int) -> None:
        """The generator at ``frame`` has finished: its number is free."""
        k = self.index.pop(frame, None)
        if k is not None:
            self.free.append(k)


def put_varint(out: bytearray, n: int) -> None:
    """Append ``n`` as an unsigned LEB128 varint (the block format's integers)."""
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def put_string(out: bytearray, s: str) -> None:
    """Append a block-format string: varint byte length, then UTF-8 (lone surrogates escaped)."""
    data = s.encode("utf-8", "backslashreplace")
    put_varint(out, len(data))
    out += data


TASK_MODULE = "<task>"  # code-table entries of this module are asyncio task names, not code
MAX_TASK_NAMES = 65536  # distinct task names (other than Task-N) an engine keeps in its code table


def task_name_ref(name: str, names: dict[str, int], codes: list[Any], entry: Callable[[int, str], Any]) -> int:
    """How a TASK record's ``code`` names a task (a plain integer: records hold no Python object).

    Args:
        name: the task's name.
        names: the engine's names added so far (name -> reference; updated).
        codes: the engine's code table (a new name is appended to it).
        entry: makes the code-table entry of name ``name`` at index ``i``: ``entry(i, name)``.
    Returns:
        ``(n << 1) | 1`` for asyncio's default name ``Task-n``; ``i << 1`` for any other name,
        ``i`` its entry in ``codes`` (added once per name, written with the codes); 0 (the
        reader says ``task <id>``) past :data:`MAX_TASK_NAMES` names or beyond 32 bits.
    """
    if name.startswith("Task-") and name[5:].isascii() and name[5:].isdigit() and name[5] != "0":
        n = int(name[5:])
        return (n << 1) | 1 if n < 1 << 31 else 0
    ref = names.get(name)
    if ref is None:
        if len(names) >= MAX_TASK_NAMES or len(codes) >= 1 << 31:
            return 0
        ref = names[name] = len(codes) << 1
        codes.append(entry(len(codes), name))
    return ref


def task_name(ref: int, code_lookup: Callable[[int], Any]) -> str | None:
    """The task name a TASK record's reference stands for (:func:`task_name_ref`), or None."""
    if ref & 1:
        return f"Task-{ref >> 1}"
    if not ref:
        return None
    try:
        return str(code_lookup(ref >> 1).qualname)
    except Exception:  # a table that lost the entry: the reader numbers the task
        return None
