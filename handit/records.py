"""Record layout, declared once: what the capture engines write into per-thread rings.

A record is ``(kind, slot, code, ts, aux, key)``:

- ``kind``: one of the constants below;
- ``slot``: the session slot active in the recording thread or task;
- ``code``: index of the code object in the engine's code table;
- ``ts``: raw clock ticks (see :mod:`handit.clock`);
- ``aux``: CALL: tuple of argument values or None; RETURN: the return value or
  :data:`NO_VALUE`; UNWIND: ``(type_name, message)``; otherwise None;
- ``key``: generator/coroutine identity for YIELD, RESUME and THROW; for GAP the number of
  records dropped before it (0 otherwise).

The compiled engine stores the same fields in C structs (``_tracer.pxd``: a 16-byte record,
followed by a 16-byte extension only when it has a value or key);
``tests/test_engine_parity.py`` checks that both declare the same kinds.
"""
from __future__ import annotations

CALL = 1
RETURN = 2
UNWIND = 3
YIELD = 4
RESUME = 5
THROW = 6
GAP = 7  # bounded-memory mode: records were dropped here; key = how many

KIND_NAMES = {
    CALL: "call",
    RETURN: "return",
    UNWIND: "unwind",
    YIELD: "yield",
    RESUME: "resume",
    THROW: "throw",
    GAP: "gap",
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
