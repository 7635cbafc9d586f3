"""Capture benchmarks: ns a traced call adds, against untraced, the no-op floor and cProfile.

Group ``capture``: one ``run()`` of the recursive workload (2000 × rec(50) with
three small arguments: 102,001 traced calls). Only the workload is timed; the
session starts before the clock and stops after it, with the background drain
held off, so handit's figures are the hot path. The drain has its own group
(test_bench_drain.py); everything together is test_bench_session.py.

Group ``excluded``: a workload that spends almost all its calls in the standard
library, which handit's default filters exclude (DISABLEd under sys.monitoring,
so it should stay within a few percent of untraced; a profile function cannot
be disabled per function, so ``setprofile`` pays the interpreter's floor).

Every measurement checks the workload's result and that every expected call
arrived (``_measure``), so a broken engine cannot look fast.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import pytest

import handit

import _measure
import _workloads as wl
from _measure import HAND_CLOCK, rounds_for

SOURCES = ["sysmon", "setprofile"] if wl.PY312 else ["setprofile"]


@pytest.mark.benchmark(group="capture", timer=HAND_CLOCK)
def test_untraced(hand_timed: Callable[..., Any]) -> None:
    hand_timed(_measure.untraced, rounds=15)


@pytest.mark.benchmark(group="capture", timer=HAND_CLOCK)
@pytest.mark.parametrize("source", SOURCES)
def test_noop_floor(hand_timed: Callable[..., Any], source: str) -> None:
    hand_timed(functools.partial(_measure.floor, source), rounds=15)


@pytest.mark.benchmark(group="capture", timer=HAND_CLOCK)
@pytest.mark.parametrize("capture", ["timing", "args"])
def test_handit(hand_timed: Callable[..., Any], engine: tuple[str, str], capture: str) -> None:
    handit.configure(capture=capture)
    _measure.handit_capture("rec", verify=True, reps=100)  # decode every event of a short run once
    hand_timed(functools.partial(_measure.handit_capture, "rec"), **rounds_for(engine[0]))


@pytest.mark.benchmark(group="capture", timer=HAND_CLOCK)
def test_cprofile(hand_timed: Callable[..., Any]) -> None:
    hand_timed(_measure.cprofile, rounds=15)


@pytest.mark.benchmark(group="excluded", timer=HAND_CLOCK)
def test_excluded_untraced(hand_timed: Callable[..., Any]) -> None:
    hand_timed(functools.partial(_measure.untraced, "stdlib"), rounds=10)


@pytest.mark.benchmark(group="excluded", timer=HAND_CLOCK)
@pytest.mark.parametrize("capture", ["timing", "args"])  # args is the default; timing isolates the filters
def test_excluded_handit(hand_timed: Callable[..., Any], engine: tuple[str, str], capture: str) -> None:
    handit.configure(capture=capture)
    _measure.handit_capture("stdlib", verify=True)  # default filters
    hand_timed(functools.partial(_measure.handit_capture, "stdlib"), **rounds_for(engine[0], 10))
