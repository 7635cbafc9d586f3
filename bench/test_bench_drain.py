"""Drain and exporter benchmarks: records per second through the drain, events per second into files.

Group ``drain``: the engine is filled with one ``run()`` (102,001 calls, 204,002
records) with the background drain held off, then one ``Drain.run_once()`` on
this thread is timed. ``extra_info`` has records per second. The untraced
baseline is the workload itself: the drain keeps up with a call-heavy program
when draining its records takes less time than the capture added.

Group ``export``: a smaller run (200 × rec(50): 10,201 calls) fills a session
that writes to a file; its ``stop`` is timed: drain, encoding, write and flush.
``.jsonl`` gives JSONL events per second; ``.handit`` the compact default file.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

import pytest

import handit

import _measure
import _workloads as wl
from _measure import HAND_CLOCK, rounds_for

EXPORT_REPS = 200


def _per_second(samples: list[_measure.Sample]) -> float:
    best = min(samples, key=lambda s: s.ns)
    return best.items / (best.ns / 1e9)


@pytest.mark.benchmark(group="drain", timer=HAND_CLOCK)
def test_drain_untraced(hand_timed: Callable[..., Any]) -> None:
    hand_timed(_measure.untraced, rounds=10)


@pytest.mark.benchmark(group="drain", timer=HAND_CLOCK)
@pytest.mark.parametrize("capture", ["timing", "args"])
def test_drain(benchmark: Any, hand_timed: Callable[..., Any], engine: tuple[str, str], capture: str) -> None:
    handit.configure(capture=capture)
    samples = hand_timed(_measure.drain, **rounds_for(engine[0], 10))
    benchmark.extra_info["records_per_s"] = round(_per_second(samples))


@pytest.mark.benchmark(group="export", timer=HAND_CLOCK)
def test_export_untraced(hand_timed: Callable[..., Any]) -> None:
    hand_timed(functools.partial(_measure.untraced, reps=EXPORT_REPS), rounds=10)


@pytest.mark.benchmark(group="export", timer=HAND_CLOCK)
@pytest.mark.parametrize("fmt", ["handit", "jsonl"])
@pytest.mark.parametrize("capture", ["timing", "args"])
def test_export(
    benchmark: Any, hand_timed: Callable[..., Any], engine: tuple[str, str], capture: str, fmt: str, tmp_path: Path
) -> None:
    handit.configure(capture=capture)
    path = str(tmp_path / f"t.{fmt}")
    samples = hand_timed(functools.partial(_measure.export_on_stop, path, EXPORT_REPS), **rounds_for(engine[0], 8))
    benchmark.extra_info["events_per_s"] = round(_per_second(samples))
    benchmark.extra_info["calls_filled"] = wl.expected_calls(EXPORT_REPS)
