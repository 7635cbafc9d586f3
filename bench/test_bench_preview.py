"""Preview benchmarks: what a realistic argument mix costs a call, end to end.

Group ``preview``: 20,000 calls of ``f(record, numbers, obj, text)`` — a 5-key dict of
short strings, a list of 10 ints, a plain object and a 200-character string (the mix of
issue 9, item 3; target: at most 1.5 us a call on top of timing capture). Each round
opens a session, makes the calls, and stops the session (every record drained and
encoded, every preview taken), so the figure is end to end. The untraced and
timing-capture rounds are in the same group: args minus timing, divided by 20,000, is
what the previews cost. Every round checks that every call arrived with its previews.

Run: ``python -m pytest bench/test_bench_preview.py -p no:handit --benchmark-only``.
"""
from __future__ import annotations

from typing import Any

import pytest

import handit

CALLS = 20_000


class Customer:
    """A plain object: previewed as ``<Customer>`` in safe mode."""

    def __init__(self) -> None:
        self.name = "alice"


RECORD = {"name": "alice", "city": "paris", "role": "admin", "team": "core", "lang": "py"}
NUMBERS = list(range(10))
OBJ = Customer()
TEXT = ("The quick brown fox jumps over the lazy dog while the cat sleeps " * 4)[:200]


def handle(record: dict[str, str], numbers: list[int], obj: Customer, text: str) -> int:
    return len(record) + len(numbers)


def _workload() -> int:
    total = 0
    for _ in range(CALLS):
        total += handle(RECORD, NUMBERS, OBJ, TEXT)
    return total


def _traced(capture: str) -> tuple[int, Any]:
    handit.configure(capture=capture)
    with handit.session("bench-preview") as s:
        total = _workload()
    return total, s


def _check(total: int, session: Any, capture: str) -> None:
    assert total == CALLS * 15
    assert session.stats["calls"] == CALLS + 1  # handle() and _workload()
    if capture == "args":
        calls = [e for e in session.events if e["type"] == "call" and e["func"] == "handle"]
        assert len(calls) == CALLS
        args = calls[-1]["args_preview"]
        assert args["record"].startswith("{'name': 'alice'") and args["obj"] == "<Customer>"
        assert args["numbers"].endswith("(len=10)") and args["text"].startswith("'The quick")


@pytest.mark.benchmark(group="preview")
def test_untraced(benchmark: Any) -> None:
    total = benchmark.pedantic(_workload, rounds=5, iterations=1)
    assert total == CALLS * 15


@pytest.mark.benchmark(group="preview")
@pytest.mark.parametrize("capture", ["timing", "args"])
def test_handit(benchmark: Any, engine: tuple[str, str], capture: str) -> None:
    total, session = _traced(capture)  # warm: code decided, caches filled
    _check(total, session, capture)
    total, session = benchmark.pedantic(_traced, args=(capture,), rounds=5, iterations=1)
    _check(total, session, capture)
