"""Shared fixtures: the engine × source matrix and a check that nothing is left installed."""
from __future__ import annotations

import os
import sys
import threading

import pytest

import handit
import importlib

session_mod = importlib.import_module("handit.sessions")

PY312 = sys.version_info >= (3, 12)

# The directory holding the handit these tests imported: the installed package (CI), or the
# checkout with its in-place build. Child processes get it first on their path, and run in a
# directory without a ``handit/`` of its own, so they never import a bare checkout instead.
HANDIT_HOME = os.path.dirname(os.path.dirname(os.path.abspath(handit.__file__)))


_children_started: list[int] = []  # child_env() calls, for the pass check (engine_dependent)


def child_env(*, traced: bool = True, **extra: str) -> dict[str, str]:
    """The environment for a Python child process that must run the handit under test.

    Args:
        traced: the child may record (start a session, ``handit run``): the test depends on the
            engine and must say so (the ``engine`` fixture or ``@pytest.mark.engine_dependent``).
            False for a child that only uses an exporter or the reader.
    """
    if traced:
        _children_started.append(1)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([HANDIT_HOME, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def _compiled_available() -> bool:
    try:
        from handit import _tracer  # noqa: F401
    except ImportError:
        if os.environ.get("HANDIT_REQUIRE_COMPILED") == "1":
            raise
        return False
    return True


def engine_params() -> list:
    """``(engine, source)`` pairs this run covers; HANDIT_ENGINE=fallback keeps only the pure twin."""
    forced = os.environ.get("HANDIT_ENGINE", "auto")
    engines = ["compiled", "fallback"]
    if forced == "fallback" or not _compiled_available():
        engines = ["fallback"]
    elif forced == "compiled":
        engines = ["compiled"]
    sources = ["sysmon", "setprofile"] if PY312 else ["setprofile"]
    return [pytest.param((e, s), id=f"{e}-{s}") for e in engines for s in sources]


ENGINE_PARAMS = engine_params()


PURE_PASS = os.environ.get("HANDIT_ENGINE") == "fallback"


def _depends_on_engine(item: pytest.Item) -> bool:
    """The test runs an engine: through the ``engine`` fixture, or (marked) in a session with the
    run's default engine or in a child process."""
    return "engine" in getattr(item, "fixturenames", ()) or item.get_closest_marker("engine_dependent") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Two selections.

    - Tests marked ``slow`` (hundreds of MB written and read) run where SLOW_TESTS=1: CI sets it
      for one pass of one Python, so they run once per CI run, not eight times.
    - The pure-Python pass (HANDIT_ENGINE=fallback, CI's second pass) runs only the tests whose
      outcome can depend on the engine; the others (reader, config, exporters, renderers...)
      ran in the first pass and would run the same code again. The first pass checks that
      each of those really runs no engine (``engine_use_is_declared``).
    """
    if PURE_PASS:
        kept = [item for item in items if _depends_on_engine(item)]
        if len(kept) < len(items):
            config.hook.pytest_deselected(items=[item for item in items if not _depends_on_engine(item)])
            items[:] = kept
    if os.environ.get("SLOW_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="slow: runs once per CI run (set SLOW_TESTS=1 to run it)")
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def engine_use_is_declared(request: pytest.FixtureRequest):
    """Fail a test that runs an engine without saying so: the pure-Python pass would leave it out.

    Seen here: a session started in this process, or a child process given ``child_env()``.
    """
    if _depends_on_engine(request.node):
        yield
        return
    slot = session_mod._next_slot
    del _children_started[:]
    yield
    assert session_mod._next_slot == slot and not _children_started, (
        "this test runs handit's engine (a session, or a child process that may trace) but takes no "
        "`engine` fixture and is not marked engine_dependent, so the pure-Python pass would skip it")


@pytest.fixture(params=ENGINE_PARAMS)
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Configure handit for one engine and source; yields ``(engine, source)``.

    Every engine installed in this process during the test must be the one asked for
    (a test that silently ran the other engine would prove nothing about this one).
    """
    from handit import _engine

    eng, src = request.param
    chosen: list[tuple[str, str]] = []
    choose = _engine.choose

    def recording_choose(*args, **kwargs):
        choice = choose(*args, **kwargs)
        chosen.append((choice.engine, choice.source))
        return choice

    monkeypatch.setattr(_engine, "choose", recording_choose)
    handit.configure(engine=eng, source=src)
    yield eng, src
    handit.reset_config()
    assert all(c == (eng, src) for c in chosen), f"asked for {eng}-{src}, ran {sorted(set(chosen))}"


def _monitoring_tools() -> dict[int, str]:
    if not PY312:
        return {}
    return {i: sys.monitoring.get_tool(i) for i in range(6) if sys.monitoring.get_tool(i)}


@pytest.fixture(autouse=True)
def nothing_left_behind():
    """Fail any test that leaves a session, a profile function or a monitoring tool installed."""
    before_tools = _monitoring_tools()
    before_profile = sys.getprofile()
    yield
    leftover = session_mod.active_sessions()
    for s in leftover:
        handit.stop(s)
    session_mod.release_idle()  # an engine kept for the next session (sessions.LINGER_S; tested on its own)
    assert not leftover, f"sessions left active: {leftover}"
    assert sys.getprofile() is before_profile, f"profile function left: {sys.getprofile()!r}"
    assert getattr(threading, "_profile_hook", None) is None, "threading profile hook left"
    assert _monitoring_tools() == before_tools, f"monitoring tools left: {_monitoring_tools()}"
    handit.reset_config()


def calls_of(events: list[dict], func: str | None = None) -> list[dict]:
    """Call events (of one function)."""
    return [e for e in events if e["type"] == "call" and (func is None or e["func"].endswith(func))]
