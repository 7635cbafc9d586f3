"""Benchmark fixtures: the engine × source matrix, hand-timed rounds, nothing left behind.

Run with ``python -m pytest bench -p no:handit --benchmark-only``; a plain
``pytest`` collects ``tests/`` only (``testpaths``), so these never run there.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import Any, Callable, Iterator

import pytest

import handit
from handit.sessions import release_idle

import _measure
import _workloads as wl

PY312 = sys.version_info >= (3, 12)


def _compiled_available() -> bool:
    try:
        from handit import _tracer  # noqa: F401
    except ImportError:
        if os.environ.get("HANDIT_REQUIRE_COMPILED") == "1":
            raise
        return False
    return True


def engine_params() -> list[Any]:
    """``(engine, source)`` pairs, ids like ``compiled-sysmon``; HANDIT_ENGINE narrows them."""
    forced = os.environ.get("HANDIT_ENGINE", "auto")
    pairs = wl.engine_sources()
    if forced in ("compiled", "fallback"):
        pairs = [p for p in pairs if p[0] == forced]
    if not _compiled_available():
        pairs = [p for p in pairs if p[0] == "fallback"]
    return [pytest.param(p, id=f"{p[0]}-{p[1]}") for p in pairs]


ENGINE_PARAMS = engine_params()


@pytest.fixture(params=ENGINE_PARAMS)
def engine(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """Configure handit for one engine and source; yields ``(engine, source)``."""
    eng, src = request.param
    handit.configure(engine=eng, source=src)
    yield eng, src
    handit.reset_config()


@pytest.fixture
def hand_timed(benchmark: Any, request: pytest.FixtureRequest) -> Callable[..., list[_measure.Sample]]:
    """Run a measurement as pytest-benchmark rounds, timed by hand (see ``_measure``).

    The test must carry ``@pytest.mark.benchmark(..., timer=HAND_CLOCK)``.
    Returns a function ``(measure, rounds, warmup_rounds=1) -> samples``.
    """
    marker = request.node.get_closest_marker("benchmark")
    assert marker is not None and marker.kwargs.get("timer") is _measure.HAND_CLOCK, (
        "mark the test with @pytest.mark.benchmark(group=..., timer=HAND_CLOCK)"
    )

    def run(measure: Callable[[], _measure.Sample], rounds: int, warmup_rounds: int = 1) -> list[_measure.Sample]:
        samples: list[_measure.Sample] = []

        def target() -> None:
            sample = measure()
            _measure.HAND_CLOCK.add(sample.ns)
            samples.append(sample)

        benchmark.pedantic(target, rounds=rounds, warmup_rounds=warmup_rounds)
        measured = samples[warmup_rounds:] or samples  # --benchmark-disable: one run, no warm-up
        best = min(measured, key=lambda s: s.ns)
        benchmark.extra_info["calls"] = best.calls
        benchmark.extra_info["ns_per_call"] = round(best.ns / best.calls, 1) if best.calls else None
        return measured

    return run


def _monitoring_tools() -> dict[int, str]:
    if not PY312:
        return {}
    return {i: sys.monitoring.get_tool(i) for i in range(6) if sys.monitoring.get_tool(i)}


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """Fail a benchmark that leaves a session, a profile function or a monitoring tool installed.

    A session left open holds a monitoring tool id (sysmon) or a profile hook
    (setprofile), so these checks catch it through public interfaces only.
    """
    before_tools = _monitoring_tools()
    before_profile = sys.getprofile()
    yield
    assert handit.current() is None, f"session left active: {handit.current()!r}"
    release_idle()  # an engine kept installed for the next session (handit.sessions.LINGER_S)
    assert sys.getprofile() is before_profile, f"profile function left: {sys.getprofile()!r}"
    assert threading.getprofile() is None, f"threading profile hook left: {threading.getprofile()!r}"
    assert _monitoring_tools() == before_tools, f"monitoring tools left: {_monitoring_tools()}"
    handit.reset_config()
