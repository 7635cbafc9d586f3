"""Side-by-side benchmark report: every figure from one process, repetitions interleaved, min of runs.

Usage::

    python bench/report.py                 # the table (about 30-50 s)
    python bench/report.py --reps 9        # more repetitions, steadier minima
    python bench/report.py --fallback      # also the pure-Python engine (2 runs each; fewer repetitions fit)
    python bench/report.py --json out.json # also write every minimum as JSON

Each repetition runs every measurement once, in a rotated order, so a burst of
noise from elsewhere on the machine touches all of them alike; each figure is
the minimum over the repetitions. Every measurement checks its result (the
workload's return value and the number of calls that arrived, see
``bench/_measure.py``); a failed check prints ``CHECK FAILED`` in the table and
makes the exit status 1. What each figure means: ``docs/benchmarks.md``.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
try:
    import handit
except ImportError:  # run from a checkout with the extension built in place
    sys.path.insert(0, ROOT)
    import handit

from handit.sessions import release_idle  # noqa: E402

import _measure  # noqa: E402  (bench/ is sys.path[0] when this file is run)
import _workloads as wl  # noqa: E402
from _measure import CheckFailed, Sample  # noqa: E402


class Variant:
    """One measurement: a name, how to configure handit for it, and the function that measures once."""

    def __init__(
        self, name: str, fn: Callable[[], Sample], settings: dict[str, Any] | None = None, max_reps: int = 99, inner: int = 1
    ) -> None:
        self.name = name
        self.fn = fn
        self.settings = settings or {}
        self.max_reps = max_reps
        self.inner = inner  # samples per repetition: more for the cheap ones, whose minimum needs them most
        self.samples: list[Sample] = []
        self.error: str | None = None

    def run_once(self) -> None:
        """Take ``inner`` samples (none once failed or at ``max_reps``)."""
        if self.error is not None or len(self.samples) >= self.max_reps:
            return
        handit.reset_config()
        if self.settings:
            handit.configure(**self.settings)
        try:
            for _ in range(self.inner):
                release_idle()  # no engine kept from the measurement before (handit.sessions.LINGER_S)
                gc.collect()
                self.samples.append(self.fn())
        except CheckFailed as exc:
            self.error = f"CHECK FAILED: {exc}"
        except Exception as exc:  # one broken measurement must not take the report down
            self.error = f"error: {type(exc).__name__}: {exc}"
        finally:
            handit.reset_config()

    @property
    def best(self) -> Sample | None:
        return min(self.samples, key=lambda s: s.ns) if self.samples else None


def _git_state() -> str:
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + (" (uncommitted changes)" if dirty.stdout.strip() else "")


def _compiled_available() -> bool:
    try:
        from handit import _tracer  # noqa: F401
    except ImportError:
        return False
    return True


def build_variants(tmp: str, fallback: bool) -> dict[str, Variant]:
    """Every measurement of the report, by name."""
    sources = ["sysmon", "setprofile"] if wl.PY312 else ["setprofile"]
    engines = (["compiled"] if _compiled_available() else []) + (["fallback"] if fallback or not _compiled_available() else [])
    v: dict[str, Variant] = {}

    def add(name: str, fn: Callable[[], Sample], max_reps: int = 99, **settings: Any) -> None:
        cheap = max_reps > 2 and "args" not in name and "jsonl" not in name and "VizTracer" not in name
        v[name] = Variant(name, fn, settings, max_reps, inner=3 if cheap else 1)

    add("untraced", _measure.untraced)
    for src in sources:
        add(f"floor {src}", lambda src=src: _measure.floor(src))
    if wl.PY312 and _compiled_available():
        add("floor sysmon tsc", lambda: _measure.floor("sysmon", tsc=True))
    for eng in engines:
        slow = 2 if eng == "fallback" else 99
        for src in sources:
            tag = f"{eng}-{src}"
            for cap in ("timing", "args"):
                add(f"capture {cap} {tag}", _measure.handit_capture, slow, engine=eng, source=src, capture=cap)
            for cap in ("timing", "args"):
                add(f"excluded {cap} {tag}", lambda: _measure.handit_capture("stdlib"), slow, engine=eng, source=src, capture=cap)
            for cap in ("timing", "args"):
                add(f"drain {cap} {tag}", _measure.drain, slow, engine=eng, source=src, capture=cap)
                path = os.path.join(tmp, f"e2e-{cap}-{tag}.handit")
                add(f"e2e {cap} {tag}", lambda path=path: _measure.end_to_end(path), slow, engine=eng, source=src, capture=cap)
    add("excluded untraced", lambda: _measure.untraced("stdlib"))
    for mode in ("empty", "one call", "nested", "threads"):
        add(f"sessions {mode}", lambda mode=mode: _measure.session_cycles(mode))
    add("sessions released", _measure.session_cycles_released)
    add("cProfile", _measure.cprofile)
    main = engines[0]
    for cap in ("timing", "args"):
        for fmt in ("jsonl", "handit"):
            path = os.path.join(tmp, f"export-{cap}.{fmt}")
            add(f"export {fmt} {cap}", lambda path=path: _measure.export_on_stop(path, 200), engine=main, capture=cap)
    if _measure.viztracer_available() is None:
        add("VizTracer", _measure.viztracer_capture)
        add("VizTracer args", lambda: _measure.viztracer_capture(args=True))
    if _measure.trace0_available() is None:
        counter = iter(range(10_000))
        add("trace0", lambda: _measure.trace0_run(os.path.join(tmp, f"trace0-{next(counter)}.pb")))
    return v


def run(variants: dict[str, Variant], reps: int, budget_s: float, t_start: float) -> int:
    """Interleave repetitions; stop early (at 3 at least) when the time budget would be exceeded."""
    order = list(variants.values())
    t_loop = time.perf_counter()
    done = 0
    for rep in range(reps):
        k = rep % len(order)
        for variant in order[k:] + order[:k]:
            variant.run_once()
        done += 1
        now = time.perf_counter()
        print(f"  repetition {done}/{reps} done, {now - t_start:.1f} s", file=sys.stderr, flush=True)
        if done >= 3 and now - t_start + (now - t_loop) / done > budget_s:
            break
    return done


def fmt_ns(ns: float) -> str:
    return f"{ns:,.0f} ns"


def table(variants: dict[str, Variant], bytes_per_call: dict[str, Any]) -> tuple[list[tuple[str, str, str]], dict[str, Any]]:
    """Rows ``(figure, result, compared with)`` and the raw numbers."""
    rows: list[tuple[str, str, str]] = []
    raw: dict[str, Any] = {}

    def best(name: str) -> Sample | None:
        variant = variants.get(name)
        return variant.best if variant is not None else None

    def failed(name: str) -> str | None:
        variant = variants.get(name)
        if variant is None:
            return None
        return variant.error

    def per_call(name: str) -> float | None:
        s = best(name)
        return s.ns / s.calls if s else None

    base = per_call("untraced")
    base_stdlib = best("excluded untraced")

    def added(name: str) -> float | None:
        pc = per_call(name)
        return None if pc is None or base is None else pc - base

    def row(figure: str, name: str, result: Callable[[], str], versus: Callable[[], str] = lambda: "") -> None:
        err = failed(name)
        if name not in variants:
            return
        if err is not None or best(name) is None:
            rows.append((figure, err or "no sample", ""))
            return
        rows.append((figure, result(), versus()))

    if base is None:
        rows.append(("untraced", failed("untraced") or "no sample", ""))
        return rows, raw
    raw["untraced_ns_per_call"] = base
    rows.append(("untraced workload (2000 × rec(50), 102,001 calls)", f"{base:.1f} ns per call", ""))
    sources = ["sysmon", "setprofile"] if wl.PY312 else ["setprofile"]
    tags = {n.split()[-1] for n in variants}
    engines = [e for e in ("compiled", "fallback") if any(t.startswith(f"{e}-") for t in tags)]
    for src in sources:
        row(f"no-op floor, {src}", f"floor {src}", lambda src=src: f"+{fmt_ns(added(f'floor {src}'))} per call")
        raw[f"floor_{src}_ns"] = added(f"floor {src}")
    tsc_floor = added("floor sysmon tsc")
    raw["floor_sysmon_tsc_ns"] = tsc_floor
    row(
        "no-op floor storing one TSC read per event, sysmon",
        "floor sysmon tsc",
        lambda: f"+{fmt_ns(tsc_floor)} per call",
        lambda: f"{tsc_floor / added('floor sysmon'):.2f}× the sysmon floor" if added("floor sysmon") else "",
    )
    for eng in engines:
        for src in sources:
            tag = f"{eng}-{src}"
            fl = added(f"floor {src}")
            t = added(f"capture timing {tag}")
            a = added(f"capture args {tag}")
            raw[f"capture_timing_{tag}_ns"] = t
            raw[f"capture_args_{tag}_ns"] = a
            row(
                f"handit timing, {tag} (hot path)",
                f"capture timing {tag}",
                lambda t=t: f"+{fmt_ns(t)} per call",
                lambda t=t, fl=fl, src=src: (f"{t / fl:.2f}× the {src} floor" if fl else "") + (
                    f", {t / tsc_floor:.2f}× the TSC-storing floor" if src == "sysmon" and tsc_floor else ""),
            )
            row(
                f"handit args, {tag} (hot path)",
                f"capture args {tag}",
                lambda a=a: f"+{fmt_ns(a)} per call",
                lambda a=a, t=t: f"{a / t:.2f}× timing" if t else "",
            )
    row("cProfile", "cProfile", lambda: f"+{fmt_ns(added('cProfile'))} per call")
    raw["cprofile_ns"] = added("cProfile")
    for name in ("VizTracer", "VizTracer args"):
        row(f"{name} (start to stop)", name, lambda name=name: f"+{fmt_ns(added(name))} per call")
        raw[f"{name.lower().replace(' ', '_')}_ns"] = added(name)
    for eng in engines:
        for src in sources:
            tag = f"{eng}-{src}"
            for cap in ("timing", "args"):
                name = f"excluded {cap} {tag}"
                s = best(name)
                if s is None or base_stdlib is None:
                    row(f"excluded workload (stdlib-heavy), {cap}, {tag}", name, lambda: "no sample")
                    continue
                ratio = s.ns / base_stdlib.ns
                raw[f"excluded_{cap}_{tag}_ratio"] = ratio
                row(
                    f"excluded workload (stdlib-heavy), {cap}, {tag}",
                    name,
                    lambda r=ratio: f"{r:.3f}× untraced",
                    lambda r=ratio: f"{(r - 1) * 100:+.1f}%",
                )
    for eng in engines:
        for src in sources:
            tag = f"{eng}-{src}"
            for cap in ("timing", "args"):
                s = best(f"drain {cap} {tag}")
                if s is None:
                    row(f"drain, {cap}, {tag}", f"drain {cap} {tag}", lambda: "no sample")
                    continue
                rate = s.items / (s.ns / 1e9)
                per = s.ns / s.calls
                cap_added = added(f"capture {cap} {tag}")
                raw[f"drain_{cap}_{tag}_records_per_s"] = rate
                row(
                    f"drain, {cap}, {tag} (one thread)",
                    f"drain {cap} {tag}",
                    lambda rate=rate, per=per: f"{rate / 1e6:,.1f} M records/s ({per:,.0f} ns per call)",
                    lambda per=per, c=cap_added: f"{per / c:.2f}× the capture's cost" if c else "",
                )
    for cap in ("timing", "args"):
        for fmt in ("jsonl", "handit"):
            name = f"export {fmt} {cap}"
            s = best(name)
            if s is None:
                row(f"{fmt} file via stop, {cap}", name, lambda: "no sample")
                continue
            rate = s.items / (s.ns / 1e9)
            raw[f"export_{fmt}_{cap}_events_per_s"] = rate
            label = "JSONL events" if fmt == "jsonl" else ".handit file: events"
            row(
                f"{label} per second, {cap} (drain + encode + write, on stop)",
                name,
                lambda rate=rate: f"{rate / 1e3:,.0f} k events/s",
                lambda s=s: f"{s.ns / s.items:,.0f} ns per event, {s.nbytes / s.calls:.0f} bytes per call",
            )
    for eng in engines:
        for src in sources:
            tag = f"{eng}-{src}"
            t = added(f"e2e timing {tag}")
            a = added(f"e2e args {tag}")
            raw[f"e2e_timing_{tag}_ns"] = t
            raw[f"e2e_args_{tag}_ns"] = a
            peer = added("trace0") if "trace0" in variants and not failed("trace0") else None
            row(
                f"end to end, .handit file, timing, {tag}",
                f"e2e timing {tag}",
                lambda t=t: f"+{fmt_ns(t)} per call",
                lambda t=t, peer=peer: f"{t / peer:.2f}× trace0's" if t and peer else "",
            )
            row(
                f"end to end, .handit file, args, {tag}",
                f"e2e args {tag}",
                lambda a=a: f"+{fmt_ns(a)} per call",
                lambda a=a, t=t: f"{a / t:.2f}× timing" if t else "",
            )
    if "trace0" in variants:
        s = best("trace0")
        t0 = added("trace0")
        raw["trace0_e2e_ns"] = t0
        row("trace0 end to end (protobuf file)", "trace0", lambda: f"+{fmt_ns(t0)} per call", lambda: f"{s.nbytes / s.calls:.1f} bytes per call" if s else "")
    for mode, label in (
        ("empty", "empty"),
        ("one call", "one traced call each"),
        ("nested", "nested in an outer session"),
        ("threads", "two threads at once"),
        ("released", "empty, engine released by each (LINGER_S=0)"),
    ):
        name = f"sessions {mode}"
        s = best(name)
        if s is None:
            row(f"session start + stop, {label}", name, lambda: "no sample")
            continue
        per = s.ns / s.items
        raw[f"session_{mode.replace(' ', '_')}_us"] = per / 1e3
        row(
            f"session start + stop, {label}",
            name,
            lambda per=per: f"{per / 1e3:,.1f} µs per session",
            lambda per=per: f"{1e9 / per / 1e3:,.1f} k sessions/s",
        )
    for cap, value in bytes_per_call.items():
        raw[f"bytes_per_call_{cap}"] = value
        rows.append((f"bytes per call, .handit file, {cap}", value if isinstance(value, str) else f"{value:.1f} bytes", ""))
    return rows, raw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=7, help="repetitions (min of them is reported); default 7")
    parser.add_argument("--budget", type=float, default=50.0, help="seconds the whole report aims to take (3 repetitions at least)")
    parser.add_argument("--fallback", action="store_true", help="also measure the pure-Python engine (2 runs each)")
    parser.add_argument("--json", metavar="PATH", help="also write the raw figures as JSON")
    parser.add_argument("--only", metavar="WORD", action="append", help="measure only figures whose name has WORD (e.g. sysmon, trace0), with the untraced baseline and floors; repeatable")
    args = parser.parse_args(argv)

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="handit-bench-") as tmp:
        variants = build_variants(tmp, args.fallback)
        if args.only:
            keep = ("untraced", "floor ")
            variants = {n: v for n, v in variants.items() if n.startswith(keep) or any(w in n for w in args.only)}
        if "trace0" in variants:  # count trace0's events once, in its JSON format
            try:
                _measure.trace0_run(os.path.join(tmp, "trace0-check.json"), fmt="json", reps=20)
            except Exception as exc:
                variants["trace0"].error = f"CHECK FAILED: {exc}"
        for name in [n for n in variants if n.startswith("capture ")]:  # decode every event once
            variant = variants[name]
            handit.configure(**variant.settings)
            try:
                _measure.handit_capture("rec", verify=True, reps=100)
            except Exception as exc:
                variant.error = f"CHECK FAILED: {exc}"
            finally:
                handit.reset_config()
        done = run(variants, args.reps, args.budget - 4.0, t_start)  # ~4 s left for bytes per call
        bpc: dict[str, Any] = {}
        main_engine = "compiled" if _compiled_available() else "fallback"
        for cap in ("timing", "args"):
            handit.configure(engine=main_engine, capture=cap)
            try:
                bpc[cap] = _measure.bytes_per_call(os.path.join(tmp, f"one-{cap}.handit"))
            except Exception as exc:
                bpc[cap] = f"CHECK FAILED: {exc}"
            finally:
                handit.reset_config()
        rows, raw = table(variants, bpc)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"handit benchmark report — Python {platform.python_version()} ({platform.machine()}), handit {handit.__version__} at {_git_state()}")
    print(f"{done} interleaved repetitions, min of each; {time.perf_counter() - t_start:.0f} s; load average {load:.2f}; {os.cpu_count()} CPUs")
    print()
    width = [max(len(r[i]) for r in rows + [("figure", "result", "compared with")]) for i in range(3)]
    line = "| " + " | ".join(h.ljust(width[i]) for i, h in enumerate(("figure", "result", "compared with"))) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in width) + "|")
    for r in rows:
        print("| " + " | ".join(r[i].ljust(width[i]) for i in range(3)) + " |")
    errors = {n: v.error for n, v in variants.items() if v.error}
    errors.update({f"bytes per call {k}": v for k, v in bpc.items() if isinstance(v, str)})
    if args.json:
        raw.update(python=platform.python_version(), repetitions=done, errors=errors)
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=2, sort_keys=True)
    if errors:
        print()
        for name, err in errors.items():
            print(f"{name}: {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
