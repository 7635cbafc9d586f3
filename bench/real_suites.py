"""Real programs end to end: pure-Python libraries' own test suites, untraced and under each tracer, side by side.

Usage::

    python bench/real_suites.py                          # Python 3.12, every suite, one repetition
    python bench/real_suites.py --python /work/venv/3.13/bin/python --suites markdown
    python bench/real_suites.py --repeat 3 --out table.md # min of 3 interleaved runs; the table also to a file
    python bench/real_suites.py --handit /path/to/checkout # another handit checkout (its extension built in place)

For each Python, a scratch virtual environment under the cache directory
(``$HANDIT_BENCH_CACHE``, default ``~/.cache/handit-bench``; never inside the
repository) gets pytest, VizTracer and xxhash; each library's sdist is downloaded
(``pip download --no-binary :all:``), unpacked there and installed into that
environment, and its own test suite is run from the unpacked source as:

- ``untraced``: the suite alone;
- ``cProfile``: ``python -m cProfile -o FILE`` around it;
- ``handit timing``: ``python -m handit run --capture timing`` with ``HANDIT_INCLUDE`` on the library;
- ``handit default``: ``python -m handit run`` with the default capture (arguments), same include;
- ``VizTracer``: ``python -m viztracer`` (its defaults: everything, a 1M-entry ring, the JSON file written).

Each run's wall time (summary and trace file included: everything the user waits
for) and peak RSS (``os.wait4``'s ``ru_maxrss`` of the run) are compared with the
untraced run, along with the time the suite reports for itself. The outcome counts
each run prints (pytest's or unittest's summary line: passed, failed, skipped,
xfailed, subtests, ...) must equal the untraced run's, or the table says so and the
exit status is 1. Handit is imported from ``--handit`` (default: this checkout) with
``HANDIT_REQUIRE_COMPILED=1``, so a missing build fails instead of measuring the
pure-Python engine. Runs take minutes; nothing here is part of ``.ci/run``.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Suite:
    """A library whose own tests are run: its sdist, how to run them, what to trace."""

    name: str  # the distribution, as pip knows it
    version: str
    include: str  # HANDIT_INCLUDE: the library's modules
    runner: str  # "pytest" or "unittest"
    args: tuple[str, ...]  # after ``-m pytest`` / ``-m unittest``, run in the unpacked sdist (long options:
    # the viztracer command takes short ones such as -t for itself)
    deps: tuple[str, ...] = ()  # what the tests need besides the library


SUITES = {
    "markdown": Suite("markdown", "3.11.3", r"^markdown(\.|::)", "unittest", ("discover", "--start-directory", "tests", "--top-level-directory", "."), ("pyyaml",)),
    "more-itertools": Suite("more-itertools", "11.2.1", r"^more_itertools(\.|::)", "pytest", ("-q", "-p", "no:cacheprovider", "tests")),
}

MODES = ("untraced", "cProfile", "handit timing", "handit default", "VizTracer")


@dataclass
class Result:
    """One run of one suite in one mode."""

    wall_s: float = 0.0
    own_s: float | None = None  # the time the suite reports for itself
    maxrss_kb: int = 0
    outcome: dict[str, int] = field(default_factory=dict)
    status: int = 0
    trace_bytes: int = 0
    error: str | None = None


def _cache_dir(arg: str | None) -> str:
    path = arg or os.environ.get("HANDIT_BENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "handit-bench")
    path = os.path.abspath(path)
    if path == ROOT or path.startswith(ROOT + os.sep):
        raise SystemExit(f"the cache directory {path} is inside the repository; choose one outside it")
    os.makedirs(path, exist_ok=True)
    return path


def _pip(venv_py: str, *args: str) -> None:
    subprocess.run([venv_py, "-m", "pip", "-q", *args], check=True)


def prepare(python: str, suites: list[Suite], cache: str) -> tuple[str, dict[str, str]]:
    """The scratch venv for ``python`` with every tool and library installed; the suites' source dirs."""
    version = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    venv = os.path.join(cache, f"venv-{version}")
    venv_py = os.path.join(venv, "bin", "python")
    if not os.path.exists(venv_py):
        subprocess.run([python, "-m", "venv", venv], check=True)
        _pip(venv_py, "install", "pytest", "viztracer", "xxhash")
    downloads = os.path.join(cache, "sdists")
    sources = os.path.join(cache, "src")
    os.makedirs(downloads, exist_ok=True)
    os.makedirs(sources, exist_ok=True)
    dirs: dict[str, str] = {}
    for suite in suites:
        spec = f"{suite.name}=={suite.version}"
        stem = f"{suite.name.replace('-', '_').lower()}-{suite.version}"
        sdist = [f for f in os.listdir(downloads) if f.lower().startswith(stem) and f.endswith(".tar.gz")]
        if not sdist:
            _pip(venv_py, "download", "--no-deps", "--no-binary", ":all:", "-d", downloads, spec)
            sdist = [f for f in os.listdir(downloads) if f.lower().startswith(stem) and f.endswith(".tar.gz")]
        path = os.path.join(downloads, sdist[0])
        with tarfile.open(path) as tar:
            top = tar.getnames()[0].split("/")[0]
            src = os.path.join(sources, top)
            if not os.path.isdir(src):
                tar.extractall(sources, filter="data") if sys.version_info >= (3, 12) else tar.extractall(sources)
        marker = os.path.join(venv, f".installed-{stem}")
        if not os.path.exists(marker):
            _pip(venv_py, "install", path, *suite.deps)
            open(marker, "w").close()
        dirs[suite.name] = src
    return venv_py, dirs


_PYTEST_COUNT = re.compile(r"(\d+) ((?:subtests? )?[a-z]+)")
_PYTEST_LAST = re.compile(r"^=*\s*(\d+ [a-z].*?) in ([\d.]+)s")
_UNITTEST_RAN = re.compile(r"^Ran (\d+) tests? in ([\d.]+)s")
_UNITTEST_END = re.compile(r"^(OK|FAILED)(?: \((.*)\))?$")


def parse_outcome(runner: str, text: str) -> tuple[dict[str, int], float | None]:
    """The outcome counts and the suite's own time from a runner's output (empty if not found)."""
    counts: dict[str, int] = {}
    own = None
    lines = text.splitlines()
    if runner == "pytest":
        for line in reversed(lines):
            m = _PYTEST_LAST.match(line.strip())
            if m:
                for n, what in _PYTEST_COUNT.findall(m.group(1)):
                    counts[what.replace("subtest ", "subtests ")] = int(n)
                own = float(m.group(2))
                break
        return counts, own
    for i, line in enumerate(lines):
        m = _UNITTEST_RAN.match(line)
        if m:
            counts["tests"] = int(m.group(1))
            own = float(m.group(2))
            for after in lines[i + 1:]:
                e = _UNITTEST_END.match(after.strip())
                if e:
                    counts[e.group(1).lower()] = 1
                    for part in (e.group(2) or "").split(","):
                        if "=" in part:
                            key, value = part.strip().split("=")
                            counts[key] = int(value)
                    break
    return counts, own


def command(mode: str, suite: Suite, venv_py: str, out_dir: str) -> tuple[list[str], dict[str, str]]:
    """The argv and extra environment of one run."""
    target = ["-m", suite.runner, *suite.args]
    env: dict[str, str] = {}
    if mode == "untraced":
        return [venv_py, *target], env
    if mode == "cProfile":
        return [venv_py, "-m", "cProfile", "-o", os.path.join(out_dir, "out.prof"), *target], env
    if mode.startswith("handit"):
        env["HANDIT_INCLUDE"] = suite.include
        env["HANDIT_REQUIRE_COMPILED"] = "1"
        capture = ["--capture", "timing"] if mode == "handit timing" else []
        return [venv_py, "-m", "handit", "run", *capture, "-o", os.path.join(out_dir, "out.handit"), *target], env
    if mode == "VizTracer":
        return [venv_py, "-m", "viztracer", "--quiet", "-o", os.path.join(out_dir, "out.json"), *target], env
    raise ValueError(mode)


def run_one(mode: str, suite: Suite, venv_py: str, src: str, handit_dir: str, timeout: float,
            command: Any = command) -> Result:
    """One run: wall time, peak RSS (``os.wait4``), outcome counts, trace size (every file the run
    wrote to its output directory); ``command`` gives its argv and environment."""
    result = Result()
    with tempfile.TemporaryDirectory(prefix="run-", dir=os.path.dirname(src)) as out_dir:
        argv, extra = command(mode, suite, venv_py, out_dir)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HANDIT_")}
        env.update(extra, PYTHONPATH=handit_dir, PYTHONDONTWRITEBYTECODE="1")
        log_path = os.path.join(out_dir, "log.txt")
        with open(log_path, "wb") as log:
            t0 = time.perf_counter()
            proc = subprocess.Popen(argv, cwd=src, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            deadline = t0 + timeout
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    os.killpg(proc.pid, signal.SIGKILL)
                    pid, status, usage = os.wait4(proc.pid, 0)
                    result.error = f"timed out after {timeout:.0f} s"
                    break
                time.sleep(0.05)
            result.wall_s = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        result.status = proc.returncode
        result.maxrss_kb = usage.ru_maxrss
        with open(log_path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        result.outcome, result.own_s = parse_outcome(suite.runner, text)
        if not result.outcome and result.error is None:
            result.error = "no outcome line; output ends: " + " | ".join(text.strip().splitlines()[-5:])[-400:]
        for name in os.listdir(out_dir):
            if name not in ("log.txt", ".gitignore"):
                result.trace_bytes += os.path.getsize(os.path.join(out_dir, name))
    return result


def _outcome_text(outcome: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in outcome.items())


def report(python_version: str, suite: Suite, results: dict[str, list[Result]], handit_dir: str,
           modes: tuple[str, ...] = MODES) -> tuple[list[str], bool]:
    """Markdown rows for one suite; and whether every outcome equals the untraced one."""
    best = {m: min(rs, key=lambda r: r.wall_s) for m, rs in results.items() if rs}
    base = best.get("untraced")
    ok = True
    lines = [
        f"**{suite.name} {suite.version}** ({suite.runner}, Python {python_version}); untraced outcome: "
        f"{_outcome_text(base.outcome) if base else '?'}",
        "",
        "| run | wall time | × untraced | suite's own time | × untraced | peak RSS | vs untraced | trace file | outcome |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode in modes:
        r = best.get(mode)
        if r is None:
            continue
        same = base is not None and all(x.outcome == base.outcome for x in results[mode])
        if r.error or not same:
            ok = False
        verdict = "; ".join(filter(None, [r.error, "same" if same else "DIFFERENT: " + _outcome_text(r.outcome)]))
        ratio = f"{r.wall_s / base.wall_s:.2f}×" if base else ""
        own = f"{r.own_s:.1f} s" if r.own_s is not None else "?"
        own_ratio = f"{r.own_s / base.own_s:.2f}×" if base and base.own_s and r.own_s is not None else ""
        rss = r.maxrss_kb / 1024
        d_rss = f"{rss - base.maxrss_kb / 1024:+.0f} MB" if base else ""
        size = f"{r.trace_bytes / 1e6:,.1f} MB" if r.trace_bytes else "—"
        lines.append(f"| {mode} | {r.wall_s:.1f} s | {ratio} | {own} | {own_ratio} | {rss:.0f} MB | {d_rss} | {size} | {verdict} |")
    return lines, ok


def main(argv: list[str] | None = None, *, suites_known: dict[str, Suite] = SUITES, modes_known: tuple[str, ...] = MODES,
         command: Any = command, doc: str = __doc__) -> int:
    """Run and compare; the keywords let another bench (bench/pytest_plugin_suites.py) bring its own suites and modes."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="the interpreter to measure (default: this one)")
    parser.add_argument("--suites", default=",".join(suites_known), help=f"comma-separated, of {', '.join(suites_known)}")
    parser.add_argument("--modes", default=",".join(modes_known), help="comma-separated, of: " + ", ".join(modes_known))
    parser.add_argument("--repeat", type=int, default=1, help="interleaved runs per mode; the fastest is reported")
    parser.add_argument("--handit", default=ROOT, help="the handit checkout to import (extension built in place)")
    parser.add_argument("--cache", help="scratch directory (default $HANDIT_BENCH_CACHE or ~/.cache/handit-bench)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before one run is killed")
    parser.add_argument("--out", help="also write the markdown table to this file")
    args = parser.parse_args(argv)
    suites = [suites_known[name] for name in args.suites.split(",")]
    modes = [m for m in modes_known if m in args.modes.split(",")]
    if "untraced" not in modes:
        modes.insert(0, "untraced")
    cache = _cache_dir(args.cache)
    venv_py, dirs = prepare(args.python, suites, cache)
    info = subprocess.run([venv_py, "-c", "import platform; print(platform.python_version())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    head = subprocess.run(["git", "-C", args.handit, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    where = head.stdout.strip() or os.path.basename(os.path.abspath(args.handit))
    out = [f"handit at {where} ({os.path.abspath(args.handit)}), Python {info}, {args.repeat} run(s) per mode, "
           f"fastest shown; {os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.2f}", ""]
    all_ok = True
    for suite in suites:
        results: dict[str, list[Result]] = {m: [] for m in modes}
        for rep in range(args.repeat):
            order = modes[rep % len(modes):] + modes[: rep % len(modes)]
            for mode in order:
                r = run_one(mode, suite, venv_py, dirs[suite.name], args.handit, args.timeout, command)
                results[mode].append(r)
                print(f"  {suite.name} {mode}: {r.wall_s:.1f} s, {r.maxrss_kb / 1024:.0f} MB, "
                      f"{_outcome_text(r.outcome)}{' ' + r.error if r.error else ''}", file=sys.stderr, flush=True)
        lines, ok = report(info, suite, results, args.handit, modes_known)
        all_ok = all_ok and ok
        out.extend(lines + [""])
    text = "\n".join(out)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
