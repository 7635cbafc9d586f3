"""One measurement each: set a tracer up, time what is being measured by hand, check the result.

Shared by the pytest-benchmark suites and ``report.py`` so both measure the
same thing. Every function returns a :class:`Sample` (nanoseconds from
``time.perf_counter_ns`` around the measured part only, plus counts) and
raises :class:`CheckFailed` if the workload's result or the number of events
that arrived is wrong, so a broken tracer cannot look fast.

Why timing by hand: pytest-benchmark switches off any profile function that
``sys.getprofile()`` can see around its timed region (``PauseInstrumentation``),
which would silently disable cProfile on 3.10/3.11 and the fallback engine's
``setprofile`` source. Tracers are therefore switched on inside the measured
call, and only the part of interest is timed.

Each measured call starts any handit session itself: the calling frames
(started before the session) are never traced, so the traced calls are
exactly the workload's.
"""
from __future__ import annotations

import contextlib
import cProfile
import os
import time
from typing import Any, Iterator, NamedTuple

import handit
from handit import drain as drain_mod

import _workloads as wl



class CheckFailed(AssertionError):
    """A measurement's result was wrong: the time it took means nothing."""


class Sample(NamedTuple):
    """One timed run: ``ns`` of the measured part, ``calls`` traced, ``items`` processed, ``nbytes`` written."""

    ns: int
    calls: int = 0
    items: int = 0
    nbytes: int = 0


class HandClock:
    """A pytest-benchmark timer that advances only by the nanoseconds measured by hand.

    Pass it as ``@pytest.mark.benchmark(timer=HAND_CLOCK)``; the measured call adds
    its :class:`Sample` time with :meth:`add`, so pytest-benchmark's table shows
    the hand-timed part alone (set-up and checks excluded).
    """

    __name__ = "HandClock"

    def __init__(self) -> None:
        self._ns = 0

    def __call__(self) -> float:
        return self._ns / 1e9

    def add(self, ns: int) -> None:
        """Advance by ``ns`` nanoseconds."""
        self._ns += ns


HAND_CLOCK = HandClock()


def rounds_for(engine: str, compiled: int = 15, fallback: int = 2) -> dict[str, int]:
    """pytest-benchmark ``pedantic`` rounds for an engine: ``{"rounds": n, "warmup_rounds": w}``.

    The pure-Python engine costs microseconds a call, so it gets fewer rounds and
    no warm-up round (each test's checking run warms it up).
    """
    if engine == "fallback":
        return {"rounds": fallback, "warmup_rounds": 0}
    return {"rounds": compiled, "warmup_rounds": 1}


def check(ok: bool, message: str) -> None:
    """Raise CheckFailed with ``message`` unless ``ok``."""
    if not ok:
        raise CheckFailed(message)


@contextlib.contextmanager
def drain_held() -> Iterator[None]:
    """Hold the background drain off: records stay in the engine until run_once() or stop()."""
    saved = drain_mod.BACKGROUND
    drain_mod.BACKGROUND = False
    try:
        yield
    finally:
        drain_mod.BACKGROUND = saved


@contextlib.contextmanager
def output_to(path: str | None) -> Iterator[None]:
    """Sessions started inside write to ``path`` (None: no file)."""
    saved = handit.get_config().output_file
    handit.configure(output_file=path)
    try:
        yield
    finally:
        handit.configure(output_file=saved)


def _check_run(result: float, reps: int = wl.REPS) -> None:
    check(result == wl.run_result(reps), f"workload returned {result!r}, expected {wl.run_result(reps)!r}")


def _check_session(session: Any, expected: int) -> None:
    calls = session.stats["calls"]
    check(calls == expected, f"{session!r} counted {calls} calls, expected {expected}")


def verify_events(session: Any, func: str, expected: int, args: dict[str, str] | None = None) -> None:
    """Decode a session fully: ``expected`` call events of ``func`` (with ``args`` previews if given)."""
    calls = [e for e in session.events if e["type"] == "call" and e["func"] == func]
    check(len(calls) == expected, f"{len(calls)} call events of {func}, expected {expected}")
    if args is not None:
        check(calls[0]["args_preview"] == args, f"args_preview {calls[0]['args_preview']!r}, expected {args!r}")


REC_ARGS = {"depth": str(wl.DEPTH), "label": "'abc'", "weight": "1.5"}


# ---- capture: the workload alone, timed --------------------------------------------------------


def untraced(work: str = "rec", reps: int = wl.REPS) -> Sample:
    """The workload with no tracer: the baseline of every group."""
    if work == "rec":
        t0 = time.perf_counter_ns()
        result = wl.run(reps=reps)
        ns = time.perf_counter_ns() - t0
        _check_run(result, reps)
        return Sample(ns, wl.expected_calls(reps))
    t0 = time.perf_counter_ns()
    n = wl.run_stdlib()
    ns = time.perf_counter_ns() - t0
    check(n == wl.stdlib_result(), f"stdlib workload returned {n}")
    return Sample(ns, wl.expected_stdlib_calls())


def floor(source: str, tsc: bool = False) -> Sample:
    """The workload under the no-op callback floor of ``source`` (``tsc``: storing a clock reading per event)."""
    from handit import _tracer

    fl = wl.floor_for(source, tsc)
    fl.start()
    try:
        events0 = _tracer.tsc_floor_events() if tsc else 0  # (C functions: no events of their own)
        t0_ticks = _tracer.read_ticks()
        t0 = time.perf_counter_ns()
        result = wl.run()
        ns = time.perf_counter_ns() - t0
        events1 = _tracer.tsc_floor_events() if tsc else 0
        last = _tracer.tsc_floor_last() if tsc else 0
    finally:
        fl.stop()
    _check_run(result)
    if tsc:  # a PY_START and a PY_RETURN per call (run() and every rec), each stored once
        stored = events1 - events0
        # sys.monitoring events are process-wide: a handit drain thread left by an earlier
        # measurement of report.py adds its own few (20-22 seen in a run), never fewer
        expected = 2 * wl.expected_calls()
        check(expected <= stored <= expected + 1000, f"the clock-storing floor stored {stored} readings, expected {expected}")
        check(last >= t0_ticks, f"the clock-storing floor's last reading {last} is older than the run ({t0_ticks})")
    return Sample(ns, wl.expected_calls())


def handit_capture(work: str = "rec", verify: bool = False, reps: int = wl.REPS) -> Sample:
    """The workload in a handit session (as configured), hot path only.

    The background drain is held off and the session stops after the clock
    stops, so this is the engine's cost per call; the drain is measured by
    :func:`drain` and everything together by :func:`end_to_end`.
    """
    with drain_held():
        session = handit.start("bench")
        try:
            t0 = time.perf_counter_ns()
            result = wl.run(reps=reps) if work == "rec" else wl.run_stdlib()
            ns = time.perf_counter_ns() - t0
        finally:
            handit.stop(session)
    if work == "rec":
        _check_run(result, reps)
        expected = wl.expected_calls(reps)
    else:
        check(result == wl.stdlib_result(), f"stdlib workload returned {result}")
        expected = wl.expected_stdlib_calls()
    _check_session(session, expected)
    if verify:
        if work == "rec":
            args = REC_ARGS if handit.get_config().capture != "timing" else None
            verify_events(session, "rec", expected - 1, args)
        else:
            verify_events(session, "stdlib_step", wl.STDLIB_STEPS)
    return Sample(ns, expected)


def cprofile() -> Sample:
    """The workload under cProfile."""
    profile = cProfile.Profile()
    profile.enable()
    try:
        t0 = time.perf_counter_ns()
        result = wl.run()
        ns = time.perf_counter_ns() - t0
    finally:
        profile.disable()
    _check_run(result)
    counted = wl.cprofile_calls(profile)
    check(counted == wl.REC_CALLS, f"cProfile counted {counted} calls of rec, expected {wl.REC_CALLS}")
    return Sample(ns, wl.expected_calls())


# ---- drain and exporters -----------------------------------------------------------------------


def drain(reps: int = wl.REPS) -> Sample:
    """Records per second through the drain on one thread: fill the engine, then time ``Drain.run_once()``.

    ``items`` is the number of records drained (a call and its return are two).
    """
    from handit._engine import choose
    from handit._policy import Policy
    from handit.drain import Drain

    config = handit.get_config()
    module = choose(config.engine, config.source, config.require_compiled).module
    nbytes = 0

    def route(slot: int, block: bytes) -> None:
        nonlocal nbytes
        nbytes += len(block)

    drainer = Drain(module, route)
    drainer.previewer = Policy(config).previewer
    # the whole run waits for this drain: a budget the threads would otherwise drain themselves at
    # (HANDIT_MAX_BUFFER_BYTES, 8 MiB; previews pass it) is raised for this figure only
    saved_budget = config.max_buffer_bytes
    handit.configure(max_buffer_bytes=1 << 30)
    with drain_held():
        session = handit.start("bench")
        try:
            result = wl.run(reps=reps)
            with handit.suppressed():  # `route` is Python code: not a traced call of the session
                t0 = time.perf_counter_ns()
                drainer.run_once()
                ns = time.perf_counter_ns() - t0
        finally:
            handit.stop(session)
            handit.configure(max_buffer_bytes=saved_budget)
    _check_run(result, reps)
    expected = wl.expected_calls(reps)
    _check_session(session, expected)  # the drain counts the calls it turned into blocks
    check(nbytes > expected, f"the drain produced {nbytes} bytes for {expected} calls")
    return Sample(ns, expected, 2 * expected, nbytes)


def _count_in_file(path: str, start: int, needle: bytes) -> tuple[int, int]:
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    return data.count(needle), len(data)


def export_on_stop(path: str, reps: int) -> Sample:
    """Fill a session writing to ``path``, then time its stop: drain, encode, write, flush.

    ``.jsonl``: JSONL events per second; otherwise the compact ``.handit`` file.
    ``items`` is the number of events written (a call and its return are two).
    """
    jsonl = path.endswith(".jsonl")
    with drain_held(), output_to(path):
        session = handit.start("bench")
        try:
            result = wl.run(reps=reps)
        except BaseException:
            handit.stop(session)
            raise
        start = os.path.getsize(path)
        t0 = time.perf_counter_ns()
        handit.stop(session)
        ns = time.perf_counter_ns() - t0
    _check_run(result, reps)
    expected = wl.expected_calls(reps)
    _check_session(session, expected)
    if jsonl:
        calls, nbytes = _count_in_file(path, start, b'{"type":"call"')
        check(calls == expected, f"{calls} call lines in {path}, expected {expected}")
        os.truncate(path, 0)  # keep the disk small; the writer appends at the new end
    else:
        nbytes = os.path.getsize(path) - start
        check(nbytes > expected, f"{nbytes} bytes written to {path} for {expected} calls")
    return Sample(ns, expected, 2 * expected, nbytes)


def end_to_end(path: str) -> Sample:
    """Everything a traced program pays: start, workload, background drain, stop, the trace file written."""
    start = os.path.getsize(path) if os.path.exists(path) else 0
    with output_to(path):
        t0 = time.perf_counter_ns()
        session = handit.start("bench")
        try:
            result = wl.run()
        finally:
            handit.stop(session)
        ns = time.perf_counter_ns() - t0
    _check_run(result)
    _check_session(session, wl.expected_calls())
    nbytes = os.path.getsize(path) - start
    check(nbytes > wl.expected_calls(), f"{nbytes} bytes written to {path}")
    return Sample(ns, wl.expected_calls(), 0, nbytes)


def bytes_per_call(path: str) -> float:
    """One session into a new trace file; read it back; its size divided by the calls in it."""
    from handit.tracefile import read_trace

    check(not os.path.exists(path), f"{path} exists: bytes per call needs a new file")
    sample = end_to_end(path)
    events = read_trace(path)
    calls = sum(1 for e in events if e["type"] == "call" and e["func"] == "rec")
    check(calls == wl.REC_CALLS, f"{path} holds {calls} calls of rec, expected {wl.REC_CALLS}")
    return os.path.getsize(path) / sample.calls


# ---- peers -------------------------------------------------------------------------------------


def trace0_available() -> str | None:
    """None if trace0 can be used here, else why not."""
    try:
        import trace0  # noqa: F401
    except ImportError as exc:
        return f"trace0 is not installed ({exc}); `pip install trace0` (Python 3.13+)"
    return None


def trace0_run(path: str, fmt: str = "protobuf", reps: int = wl.REPS) -> Sample:
    """trace0 (Rust, sys.monitoring) around the workload, its trace file written: end to end."""
    from trace0 import Tracer

    check(not os.path.exists(path), f"{path} exists")
    t0 = time.perf_counter_ns()
    with Tracer(path, format=fmt, trace_subprocesses=False):
        result = wl.run(reps=reps)
    ns = time.perf_counter_ns() - t0
    _check_run(result, reps)
    nbytes = os.path.getsize(path)
    calls = wl.expected_calls(reps)
    if fmt == "json":
        with open(path, "rb") as f:
            found = f.read().count(b'{"name":"rec","cat":"py","ph":"B"')
        check(found == reps * (wl.DEPTH + 1), f"trace0 wrote {found} rec calls, expected {reps * (wl.DEPTH + 1)}")
    else:
        # protobuf is not decoded here; 16 bytes a call is well under the ~37 it writes
        check(nbytes >= 16 * calls, f"trace0 wrote {nbytes} bytes for {calls} calls")
    return Sample(ns, calls, 0, nbytes)


def viztracer_available() -> str | None:
    """None if VizTracer can be used here, else why not."""
    try:
        import viztracer  # noqa: F401
    except ImportError as exc:
        return f"viztracer is not installed ({exc})"
    return None


def viztracer_capture(args: bool = False) -> Sample:
    """VizTracer around the workload (start to stop; saving excluded), optionally logging arguments and return values."""
    from viztracer import VizTracer

    tracer = VizTracer(
        tracer_entries=400_000, verbose=0, log_func_args=args, log_func_retval=args, register_global=False
    )
    tracer.start()
    try:
        t0 = time.perf_counter_ns()
        result = wl.run()
        ns = time.perf_counter_ns() - t0
    finally:
        tracer.stop()
    _check_run(result)
    tracer.parse()
    found = sum(1 for e in tracer.data["traceEvents"] if e.get("name", "").startswith("rec "))
    check(found == wl.REC_CALLS, f"VizTracer recorded {found} calls of rec, expected {wl.REC_CALLS}")
    tracer.clear()
    tracer.data = {}  # the parsed events otherwise outlive this function (200k dicts slow every later gc)
    return Sample(ns, wl.expected_calls())



# ---- sessions: start and stop ------------------------------------------------------------------

SESSIONS = 2000
"""Sessions started and stopped in one :func:`session_cycles` measurement."""


def session_cycles(mode: str = "empty", n: int = SESSIONS, threads: int = 2) -> Sample:
    """``n`` sessions started and stopped back to back; ``items`` is the number of sessions.

    ``mode``: ``empty`` (nothing recorded), ``one call`` (one traced call each, as a
    request handler's session would have), ``nested`` (each inside one outer session), or
    ``threads`` (``threads`` threads at once, ``n`` sessions in all). Checks that every
    session stopped with the calls it made and that none is left active.
    """
    from concurrent.futures import ThreadPoolExecutor

    call = mode == "one call"
    done: list[Any] = []

    def cycles(k: int) -> None:
        start, stop, step = handit.start, handit.stop, wl.rec
        for _ in range(k):
            s = start("cycle")
            if call:
                step(0, "abc", 1.5)
            stop(s)
            done.append(s)

    outer = handit.start("outer") if mode == "nested" else None
    try:
        if mode == "threads":
            with ThreadPoolExecutor(threads) as pool:
                t0 = time.perf_counter_ns()
                for f in [pool.submit(cycles, n // threads) for _ in range(threads)]:
                    f.result()
                ns = time.perf_counter_ns() - t0
        else:
            t0 = time.perf_counter_ns()
            cycles(n)
            ns = time.perf_counter_ns() - t0
    finally:
        if outer is not None:
            handit.stop(outer)
    expected = n // threads * threads if mode == "threads" else n
    check(len(done) == expected, f"{len(done)} sessions stopped, expected {expected}")
    check(handit.current() is None, f"a session is left active: {handit.current()!r}")
    calls = {s.stats["calls"] for s in done}
    check(calls == {1 if call else 0}, f"sessions counted {sorted(calls)} calls, expected {1 if call else 0} each")
    if mode == "nested":
        check(all(s.parent is outer for s in done), "a nested session lost its parent")
    return Sample(ns, 0, expected)


def session_cycles_released(n: int = SESSIONS // 4) -> Sample:
    """:func:`session_cycles` with the engine installed and released by every session
    (``handit.sessions.LINGER_S = 0``): what each session costs when none follows soon."""
    from handit import sessions

    saved = sessions.LINGER_S
    sessions.LINGER_S = 0
    try:
        return session_cycles("empty", n)
    finally:
        sessions.LINGER_S = saved
