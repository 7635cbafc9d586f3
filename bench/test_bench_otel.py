"""OpenTelemetry export benchmark: what HANDIT_OTEL costs for one session of :func:`_workloads.run`
(102,001 traced calls), exported through an SDK TracerProvider into its in-memory exporter.

Group ``otel``: ``off`` (a session), ``on`` (a session with HANDIT_OTEL, until the exporter has
made and exported its spans: the work of the ``handit-otel`` thread included), and ``on-folded``
(HANDIT_OTEL_MIN_DURATION=60 s: every call folded, the cost of decoding and folding alone). ``extra_info["cpu_ms"]`` is the process's CPU
time per round (all threads), ``extra_info["program_ms"]`` the wall time of the session itself as
the program sees it. Each round checks the calls recorded and the spans exported (the cap of 1,000,
or the root alone when every call is folded).

    cd bench && python -m pytest test_bench_otel.py -p no:handit --benchmark-only -s -k compiled-sysmon
"""
from __future__ import annotations

import time
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import handit
from handit.otel.export import exporter

import _workloads as wl

_memory = InMemorySpanExporter()
_PROGRAM = """
import handit

def step(i):
    return i * 2

def work(n):
    return sum(step(i) for i in range(n))

with handit.session("exit"):
    total = work(5)
print("done", total, flush=True)
"""


@pytest.fixture(scope="module", autouse=True)
def provider() -> None:
    current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):
        current = TracerProvider()
        trace.set_tracer_provider(current)
    current.add_span_processor(SimpleSpanProcessor(_memory))


@pytest.mark.benchmark(group="otel")
@pytest.mark.parametrize("mode", ["off", "on", "on-folded"])
def test_otel_session(benchmark: Any, engine: Any, mode: str) -> None:
    handit.configure(otel=mode != "off", otel_min_duration=60.0 if mode == "on-folded" else 0.0)
    cpu: list[float] = []
    wall: list[float] = []

    def round_() -> None:
        _memory.clear()
        c0, t0 = time.process_time(), time.perf_counter()
        with handit.session("bench") as s:
            wl.run()
        wall.append(time.perf_counter() - t0)
        if mode != "off":
            assert exporter(handit.get_config()).flush(120)
        cpu.append(time.process_time() - c0)
        assert s.stats["calls"] == wl.REC_CALLS + 1
        spans = _memory.get_finished_spans()
        if mode == "on":
            assert len(spans) == 1000 and spans[-1].attributes["handit.calls"] == wl.REC_CALLS + 1
        elif mode == "on-folded":
            assert len(spans) == 1 and spans[0].attributes["handit.otel.calls_folded"] == wl.REC_CALLS + 1
        else:
            assert spans == ()

    benchmark.pedantic(round_, rounds=3, warmup_rounds=1)
    cpu_ms, program_ms = min(cpu[1:] or cpu) * 1000, min(wall[1:] or wall) * 1000  # warm-up left out
    benchmark.extra_info.update(cpu_ms=round(cpu_ms, 1), program_ms=round(program_ms, 1))
    print(f"\n{mode}: cpu {cpu_ms:.0f} ms, program {program_ms:.0f} ms")


@pytest.mark.benchmark(group="otel-exit")
@pytest.mark.parametrize("receiver_hangs", [False, True], ids=["receiver-answers", "receiver-hangs"])
def test_otel_exit(benchmark: Any, tmp_path: Any, receiver_hangs: bool) -> None:
    """Wall time of a small traced program (HANDIT_OTEL, OTLP/HTTP) from start to exit, with
    HANDIT_EXIT_TIMEOUT=1: a receiver that hangs adds about that second, no more."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from otlp_receiver import Receiver

    script = tmp_path / "traced.py"
    script.write_text(_PROGRAM)
    with Receiver(hang=receiver_hangs) as receiver:
        env = dict(os.environ, HANDIT_OTEL="1", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, HANDIT_EXIT_TIMEOUT="1")
        env["PYTHONPATH"] = os.pathsep.join([str(Path(handit.__file__).resolve().parent.parent), env.get("PYTHONPATH", "")])

        def run() -> None:
            done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0 and done.stdout == "done 20\n", done.stderr

        benchmark.pedantic(run, rounds=3, warmup_rounds=0)
        assert receiver.attempts >= 3 and len(receiver.accepted) == (0 if receiver_hangs else 3 * 7)
