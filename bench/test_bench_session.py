"""End-to-end benchmarks: a session around the workload with the default ``.handit`` trace file written.

Group ``session``: start, ``run()`` (102,001 calls) with the background drain
at its default period, stop (last drain, file flushed) — everything a traced
program pays — against untraced and, where it is installed, trace0 (Rust,
sys.monitoring, Python 3.13+; its Perfetto protobuf file written).
``extra_info["bytes_per_call"]`` is the size of a new trace file holding one
such session divided by its calls (the file is read back and checked).

Group ``session-cycles``: sessions started and stopped back to back — empty, with
one traced call each (a request handler's), nested in an outer session, and on two
threads at once — as a server with a session per request or the pytest plugin with a
session per test has them.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

import pytest

import handit

import _measure
from _measure import HAND_CLOCK, rounds_for


@pytest.mark.benchmark(group="session", timer=HAND_CLOCK)
def test_session_untraced(hand_timed: Callable[..., Any]) -> None:
    hand_timed(_measure.untraced, rounds=15)


@pytest.mark.benchmark(group="session", timer=HAND_CLOCK)
@pytest.mark.parametrize("capture", ["timing", "args"])
def test_session_handit_file(
    benchmark: Any, hand_timed: Callable[..., Any], engine: tuple[str, str], capture: str, tmp_path: Path
) -> None:
    handit.configure(capture=capture)
    benchmark.extra_info["bytes_per_call"] = round(_measure.bytes_per_call(str(tmp_path / "one.handit")), 2)
    samples = hand_timed(functools.partial(_measure.end_to_end, str(tmp_path / "t.handit")), **rounds_for(engine[0], 10))
    benchmark.extra_info["file_bytes_per_round"] = min(s.nbytes for s in samples)


@pytest.mark.benchmark(group="session", timer=HAND_CLOCK)
def test_session_trace0(benchmark: Any, hand_timed: Callable[..., Any], tmp_path: Path) -> None:
    missing = _measure.trace0_available()
    if missing:
        pytest.skip(missing)
    _measure.trace0_run(str(tmp_path / "check.json"), fmt="json", reps=20)  # count its events once
    paths = (str(tmp_path / f"t{i}.pb") for i in range(1000))
    samples = hand_timed(lambda: _measure.trace0_run(next(paths)), rounds=10)
    best = min(samples, key=lambda s: s.ns)
    benchmark.extra_info["bytes_per_call"] = round(best.nbytes / best.calls, 2)


@pytest.mark.benchmark(group="session-cycles", timer=HAND_CLOCK)
@pytest.mark.parametrize("mode", ["empty", "one call", "nested", "threads"])
def test_session_start_stop(benchmark: Any, hand_timed: Callable[..., Any], engine: tuple[str, str], mode: str) -> None:
    """_measure.SESSIONS sessions started and stopped back to back (the table's time is for all of them)."""
    samples = hand_timed(functools.partial(_measure.session_cycles, mode), rounds=10)
    best = min(samples, key=lambda s: s.ns)
    benchmark.extra_info["us_per_session"] = round(best.ns / best.items / 1e3, 2)
    benchmark.extra_info["sessions_per_s"] = round(best.items / (best.ns / 1e9))
