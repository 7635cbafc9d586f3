"""What ``pytest --handit`` adds per test, and whose it is: the session's start and stop, the plugin's own work.

Usage::

    python bench/pytest_plugin_per_test.py          # 3,000 tests of one call each
    python bench/pytest_plugin_per_test.py 1000

A scratch project of N one-call tests is run by pytest untraced and with ``--handit``,
side by side. A conftest measures the main thread's CPU time (``time.thread_time``: the
drain thread and the machine's load are not in it) in ``pytest_runtest_protocol`` (the
whole test: setup, call, teardown, report) and, with ``--handit``, in ``handit.api.start`` /
``handit.api.stop`` (the session), the plugin's ``_begin`` / ``_stop`` (which call them) and
``Stats.add_fold`` (the summary's slowest functions). Both runs must pass N tests (exit
status 1 otherwise).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this checkout's handit (built in place)
CONFTEST = '''
import functools
import json
import os
import time

import pytest

T = {"protocol": 0.0}


def _timed(owner, name, key):
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def timed(*args, **kwargs):
        t = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            T[key] = T.get(key, 0.0) + time.thread_time() - t

    setattr(owner, name, timed)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    t = time.thread_time()
    yield
    T["protocol"] += time.thread_time() - t


def pytest_configure(config):
    if config.getoption("handit", False):
        from handit import api, pytest_plugin
        from handit.renderers import summary

        _timed(api, "start", "session start")
        _timed(api, "stop", "session stop")
        _timed(pytest_plugin.HanditPlugin, "_begin", "plugin _begin")
        _timed(pytest_plugin.HanditPlugin, "_stop", "plugin _stop")
        _timed(summary.Stats, "add_fold", "add_fold")


def pytest_unconfigure(config):
    with open(os.environ["PER_TEST_OUT"], "w") as f:
        json.dump(T, f)
'''


def run(project: str, n: int, plugin: bool) -> dict[str, float]:
    import json

    out = os.path.join(project, "times.json")
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    if plugin:
        args += ["-p", "handit.pytest_plugin", "--handit", "--handit-output=out"]
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PER_TEST_OUT=out, HANDIT_REQUIRE_COMPILED="1", PYTHONPATH=path)
    done = subprocess.run([*args, "test_many.py"], cwd=project, env=env, capture_output=True, text=True)
    if not re.search(rf"\b{n} passed\b", done.stdout):
        raise SystemExit(f"expected {n} passed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    with open(out) as f:
        return {k: 1e6 * v / n for k, v in json.load(f).items()}


def main(n: int) -> int:
    project = tempfile.mkdtemp(prefix="handit-per-test-")
    try:
        os.makedirs(os.path.join(project, "pkg"))
        with open(os.path.join(project, "pkg", "__init__.py"), "w") as f:
            f.write("def add(a, b):\n    return a + b\n")
        with open(os.path.join(project, "conftest.py"), "w") as f:
            f.write(CONFTEST)
        with open(os.path.join(project, "test_many.py"), "w") as f:
            f.write("from pkg import add\n\n")
            f.writelines(f"\ndef test_{i}():\n    assert add({i}, 1) == {i + 1}\n" for i in range(n))
        untraced = run(project, n, plugin=False)
        traced = run(project, n, plugin=True)
    finally:
        shutil.rmtree(project, ignore_errors=True)
    base, total = untraced["protocol"], traced["protocol"]
    start, stop = traced["session start"], traced["session stop"]
    own = traced["plugin _begin"] - start + traced["plugin _stop"] - stop
    print(f"{n:,} one-call tests, main thread CPU per test (µs):")
    print(f"  untraced test {base:7.0f}")
    print(f"  --handit test {total:7.0f}  (+{total - base:.0f})")
    print(f"    session start {start:5.0f}, stop {stop:5.0f}")
    print(f"    plugin's own  {own:5.0f}  (of which the summary's add_fold {traced['add_fold']:.0f})")
    print(f"    the rest      {total - base - start - stop - own:5.0f}  (the engine meeting each new test function, "
          "pytest's hooks with the engine installed)")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000))
