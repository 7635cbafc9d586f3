"""Benchmark workloads and tracer set-ups shared by the pytest-benchmark suites and report.py.

The workloads live here, in a module of their own outside the standard library,
so handit's default filters trace them like a user's code: every function in
this module counts as one traced call per call, and the expected number of
call events is known exactly (:data:`REC_CALLS`, :func:`expected_calls`).
"""
from __future__ import annotations

import fractions
import json
import sys
import textwrap
from typing import Any

PY312 = sys.version_info >= (3, 12)

REPS = 2000
DEPTH = 50
REC_CALLS = REPS * (DEPTH + 1)
"""Calls of :func:`rec` made by one :func:`run` with the default sizes (102,000)."""

STDLIB_STEPS = 1000
"""Iterations of :func:`stdlib_step` in one :func:`run_stdlib`: ~21 Python-level calls each, 20 in the stdlib."""


def rec(depth: int, label: str, weight: float) -> float:
    """The recursive-call workload: three small arguments, a float returned."""
    if depth == 0:
        return weight
    return rec(depth - 1, label, weight) + 1


def run(_session: Any = None, reps: int = REPS, depth: int = DEPTH) -> float:
    """Call ``rec(depth, ...)`` ``reps`` times; one traced call plus ``reps * (depth + 1)`` of rec.

    ``_session`` is ignored: pytest-benchmark's pedantic mode hands the target
    what ``setup`` returned, and the teardown needs the session.
    """
    total = 0.0
    for _ in range(reps):
        total += rec(depth, "abc", 1.5)
    return total


def run_result(reps: int = REPS, depth: int = DEPTH) -> float:
    """What :func:`run` returns: a benchmark checks it so a broken run cannot look fast."""
    return reps * (depth + 1.5)


def expected_calls(reps: int = REPS, depth: int = DEPTH) -> int:
    """Traced calls in one :func:`run`: ``run`` itself and every ``rec``."""
    return 1 + reps * (depth + 1)


def stdlib_step(i: int) -> fractions.Fraction:
    """One step of the excluded workload: fractions, a JSON round trip and textwrap (all stdlib)."""
    f = fractions.Fraction(i, 7) + fractions.Fraction(1, 3)
    text = json.dumps({"i": i, "f": str(f), "xs": [1, 2, [3, 4]]})
    json.loads(text)
    textwrap.shorten("lorem ipsum dolor sit amet, consectetur adipiscing elit", 30)
    return f


def run_stdlib(_session: Any = None, steps: int = STDLIB_STEPS) -> int:
    """The excluded workload: most calls land in the standard library, which handit does not trace.

    Traced calls: ``run_stdlib`` and one ``stdlib_step`` per step (see :func:`expected_stdlib_calls`).
    """
    n = 0
    for i in range(steps):
        n += stdlib_step(i).denominator
    return n


def expected_stdlib_calls(steps: int = STDLIB_STEPS) -> int:
    """Traced calls in one :func:`run_stdlib`; anything more means the stdlib was traced."""
    return 1 + steps


def stdlib_result(steps: int = STDLIB_STEPS) -> int:
    """What :func:`run_stdlib` returns."""
    return sum((fractions.Fraction(i, 7) + fractions.Fraction(1, 3)).denominator for i in range(steps))


# ---- the no-op floor: the cheapest callback the interpreter can call -----------------------------


class SysmonFloor:
    """``handit._tracer.noop_callback`` for PY_START and PY_RETURN under a free sys.monitoring tool id.

    The floor for the ``sysmon`` source (PY312+): what the interpreter charges to
    call a C callback twice per call, before the callback does any work. With
    ``tsc=True``, ``handit._tracer.tsc_floor_callback`` instead: the same callback
    storing one clock (TSC) reading per event into a buffer, so the floor includes
    the two timestamps a traced call needs.
    """

    def __init__(self, tsc: bool = False) -> None:
        from handit import _tracer

        self.callback = _tracer.tsc_floor_callback if tsc else _tracer.noop_callback
        self.tool: int | None = None

    def start(self) -> None:
        """Take a free tool id and turn the events on globally."""
        mon = sys.monitoring
        free = [t for t in (4, 3, 5, 1, 0, 2) if mon.get_tool(t) is None]
        if not free:
            raise RuntimeError("no free sys.monitoring tool id for the no-op floor")
        self.tool = free[0]
        mon.use_tool_id(self.tool, "handit-bench-floor")
        ev = mon.events
        mon.register_callback(self.tool, ev.PY_START, self.callback)
        mon.register_callback(self.tool, ev.PY_RETURN, self.callback)
        mon.set_events(self.tool, ev.PY_START | ev.PY_RETURN)

    def stop(self) -> None:
        """Turn everything off and free the tool id; raise if another callback had replaced ours."""
        mon = sys.monitoring
        ev = mon.events
        tool, self.tool = self.tool, None
        if tool is None:
            return
        active = mon.get_events(tool)
        mon.set_events(tool, 0)
        replaced = [
            mon.register_callback(tool, ev.PY_START, None) is not self.callback,
            mon.register_callback(tool, ev.PY_RETURN, None) is not self.callback,
        ]
        mon.free_tool_id(tool)
        if any(replaced) or active != ev.PY_START | ev.PY_RETURN:
            raise RuntimeError("the no-op floor was not installed as set up: the measurement is void")


class ProfileFloor:
    """A C profile function that does nothing (``handit._tracer.set_noop_profile``) on this thread.

    The floor for the ``setprofile`` source, and the only one before 3.12.
    """

    def start(self) -> None:
        """Install the no-op profile function."""
        from handit import _tracer

        if sys.getprofile() is not None:
            raise RuntimeError(f"a profile function is already installed: {sys.getprofile()!r}")
        _tracer.set_noop_profile(True)

    def stop(self) -> None:
        """Remove it."""
        from handit import _tracer

        _tracer.set_noop_profile(False)


def floor_for(source: str, tsc: bool = False) -> SysmonFloor | ProfileFloor:
    """The no-op floor matching an event source (``tsc``: the clock-storing one, sysmon only)."""
    return SysmonFloor(tsc) if source == "sysmon" else ProfileFloor()


def cprofile_calls(profile: Any, name: str = "rec") -> int:
    """Calls cProfile counted for Python functions called ``name``."""
    return sum(e.callcount for e in profile.getstats() if getattr(e.code, "co_name", None) == name)


def engine_sources() -> list[tuple[str, str]]:
    """``(engine, source)`` pairs this interpreter supports, compiled first."""
    sources = ["sysmon", "setprofile"] if PY312 else ["setprofile"]
    return [(e, s) for e in ("compiled", "fallback") for s in sources]
