"""Clock: raw ticks taken on the hot path -> wall-clock nanoseconds since the epoch, in the drain."""
from __future__ import annotations

import time
from typing import Callable


REFINE_EVERY_NS = 5_000_000  # drains closer together than this keep the scale they have
_scales: dict = {}  # per clock: the scale measured by the first calibration in this process


def _read_together(read_ticks: Callable[[], int]) -> tuple[int, int, int]:
    """``(ticks, monotonic ns, epoch ns)`` of one moment.

    Three clocks cannot be read at once; a preemption between the reads would skew every
    timestamp after them (tens of microseconds on a busy machine). So the reads are
    bracketed by the monotonic clock and the tightest of a few tries is kept.
    """
    best: tuple[int, int, int, int] | None = None
    for _ in range(8):
        before = time.perf_counter_ns()
        ticks = read_ticks()
        epoch = time.time_ns()
        after = time.perf_counter_ns()
        if best is None or after - before < best[0]:
            best = (after - before, ticks, (before + after) // 2, epoch)
        if after - before < 2_000:
            break
    assert best is not None
    return best[1], best[2], best[3]


class Calibration:
    """Maps raw ticks to epoch nanoseconds with two reference points.

    The engines read a raw counter (the TSC on x86-64 in the compiled engine,
    ``perf_counter_ns`` in the fallback). An anchor pair (ticks, monotonic ns,
    epoch ns) is taken when tracing starts; each drain takes a fresh pair and
    converts linearly, so timestamps stay monotonic and the scale is refined as
    the baseline grows.
    """

    __slots__ = ("read_ticks", "ticks0", "mono0", "epoch0", "scale", "exact", "refined")

    def __init__(self, read_ticks: Callable[[], int], exact: bool) -> None:
        self.read_ticks = read_ticks
        self.exact = exact  # ticks are already nanoseconds
        self.ticks0, self.mono0, self.epoch0 = _read_together(read_ticks)
        self.refined = self.mono0 - REFINE_EVERY_NS  # the first refine() always reads
        self.scale = 1.0
        if not exact and read_ticks in _scales:
            self.scale = _scales[read_ticks]
        elif not exact:
            # A 2 ms baseline gives the scale to ~1e-4 before the first drain;
            # every later drain refines it over a longer baseline.
            while time.perf_counter_ns() - self.mono0 < 2_000_000:
                pass
            self.refine(min_baseline_ns=1_000_000)
            _scales[read_ticks] = self.scale

    def refine(self, min_baseline_ns: int = 10_000_000) -> None:
        """Update the ticks-per-nanosecond scale from a fresh reading.

        Args:
            min_baseline_ns: keep the current scale if the baseline is shorter (noise).
        """
        if self.exact:
            return
        # once per REFINE_EVERY_NS at most: a session per request drains at every stop, and
        # the scale barely moves between drains (the baseline only grows)
        if time.perf_counter_ns() - self.refined < REFINE_EVERY_NS:
            return
        ticks, mono, _ = _read_together(self.read_ticks)
        self.refined = mono
        dt = mono - self.mono0
        if dt > min_baseline_ns and ticks > self.ticks0:
            self.scale = (ticks - self.ticks0) / dt

    def to_epoch_ns(self, ticks: int) -> int:
        """Convert raw ticks to epoch nanoseconds."""
        return self.epoch0 + int((ticks - self.ticks0) / self.scale)
