"""Sessions are cheap and leave nothing behind: ids, the engine kept between sessions, flat memory."""
from __future__ import annotations

import gc
import importlib
import os
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

import handit

from conftest import PY312, child_env

pytestmark = pytest.mark.engine_dependent  # its tests run an engine outside the `engine` fixture

sessions = importlib.import_module("handit.sessions")


def f(n):
    return n + 1


def _engine_installed() -> bool:
    return sessions._state["drain"] is not None


def test_ids_have_the_schema_formats(engine):
    seen = set()
    for _ in range(200):
        with handit.session("ids") as s:
            pass
        u = uuid.UUID(s.id)
        assert str(u) == s.id and u.version == 4 and u.variant == uuid.RFC_4122
        assert len(s.trace_id) == 32 and int(s.trace_id, 16) != 0 and s.trace_id == s.trace_id.lower()
        assert len(s.span_id) == 16 and int(s.span_id, 16) != 0
        seen.update((s.id, s.trace_id, s.span_id))
    assert len(seen) == 600


def test_forked_child_makes_other_ids(engine):
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids must not repeat the parent's
        try:
            with handit.session("child") as s:
                pass
            os.write(write, f"{s.id} {s.trace_id}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with handit.session("parent") as s:
        pass
    os.waitpid(pid, 0)
    child = os.read(read, 200).decode().split()
    os.close(read)
    assert child and child != [s.id, s.trace_id]


@pytest.mark.skipif(not PY312, reason="the engine is kept between sessions with sys.monitoring (3.12+)")
def test_engine_kept_between_sessions_then_released(monkeypatch):
    handit.configure(source="sysmon", capture="timing")
    with handit.session("a") as a:
        f(1)
    tool = sessions._state["choice"].module.tool_id()
    assert _engine_installed() and sys.monitoring.get_tool(tool) == "handit"
    for _ in range(20):  # no session: the kept engine records nothing
        f(2)
    with handit.session("b") as b:  # reuses it: same tool id, no new install
        f(3)
        assert sessions._state["choice"].module.tool_id() == tool
    assert a.stats["calls"] == 1 and b.stats["calls"] == 1
    assert [c["func"] for c in b.calls()] == ["f"]
    # the drain thread releases it after LINGER_S without a session
    monkeypatch.setattr(sessions, "LINGER_S", 0.05)
    with handit.session("c"):
        pass
    deadline = time.monotonic() + 10
    while _engine_installed() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _engine_installed()
    assert sys.monitoring.get_tool(tool) is None


@pytest.mark.skipif(not PY312, reason="the engine is kept between sessions with sys.monitoring (3.12+)")
def test_kept_engine_released_when_settings_change():
    handit.configure(source="sysmon")
    with handit.session("a"):
        pass
    assert _engine_installed()
    handit.configure(capture="timing")  # new rules: the idle engine goes, the next session installs anew
    assert not _engine_installed()
    with handit.session("b") as b:
        f(1)
    assert [(c["func"], c["args_preview"]) for c in b.calls()] == [("f", {})]  # timing: no arguments
    sessions.release_idle()
    assert not _engine_installed()


def test_no_engine_kept_without_sysmon_or_background_drain(engine, monkeypatch):
    with handit.session("a"):
        pass
    assert _engine_installed() == (engine[1] == "sysmon")
    sessions.release_idle()
    monkeypatch.setattr(importlib.import_module("handit.drain"), "BACKGROUND", False)
    with handit.session("b"):
        pass
    assert not _engine_installed()  # nobody would release it later


def test_kept_engine_released_at_exit(engine, tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(f"""
        import atexit, sys
        import handit
        from handit import lifecycle, sessions
        handit.configure(engine={engine[0]!r}, source={engine[1]!r})
        def f(n): return n
        with handit.session("one") as s:
            f(1)
        def after():  # runs after handit's exit handler (registered later, runs earlier)
            tools = [sys.monitoring.get_tool(i) for i in range(6)] if sys.version_info >= (3, 12) else []
            print("installed" if sessions._state["drain"] is not None or "handit" in tools else "released")
        atexit.register(after)
        lifecycle.exit_handler_last()
        print(s.stats["calls"])
        """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=child_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "released"], r.stdout


def _rss_kb() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def test_100k_sessions_leave_memory_flat():
    # counts, not time: Python's allocated blocks, the engine's tables and threads, RSS pages.
    # HANDIT_CHILDREN on (the default): handit.propagation used to put a new link in the
    # environment for every period with a session open (with setenv(), glibc kept every
    # value: +26 MB of RSS over 100,000 sessions); it is now written when a child starts.
    engine = sessions._choose(handit.get_config()).module
    start, stop = handit.start, handit.stop
    for _ in range(2000):  # warm up: caches, free lists, the first decisions
        s = start("cycle")
        f(1)
        stop(s)
    gc.collect()
    rss0 = _rss_kb()
    blocks0, codes0, threads0 = sys.getallocatedblocks(), engine.code_count(), engine.thread_states()
    calls = 0
    for i in range(100_000):
        s = start("cycle")
        if i % 100 == 0:  # some of them record a call
            f(i)
        stop(s)
        calls += s.stats["calls"]
    gc.collect()
    assert calls == 1_000 and handit.current() is None and not sessions._by_id
    assert engine.code_count() == codes0 and engine.thread_states() == threads0
    grown = sys.getallocatedblocks() - blocks0
    assert grown < 2_000, f"{grown} more memory blocks after 100,000 sessions"  # a leak of one object a session: 100,000
    assert _rss_kb() - rss0 < 8 * 1024, f"RSS grew by {_rss_kb() - rss0} kB"


def test_sessions_in_a_loop_on_every_engine_stay_flat(engine):
    start, stop = handit.start, handit.stop
    for _ in range(500):
        stop(start("warm"))
    gc.collect()
    blocks0 = sys.getallocatedblocks()
    for _ in range(5_000):
        s = start("cycle")
        f(1)
        stop(s)
    gc.collect()
    assert s.stats["calls"] == 1
    assert sys.getallocatedblocks() - blocks0 < 1_000


def test_attrs_are_redacted_once_and_each_session_gets_its_own_copy(engine):
    # a session per request repeats the same attrs: their redacted form is remembered, and
    # a session's attrs stay its own to change
    attrs = {"http.route": "/items", "api_key": "sk-live-1234567890abcdef"}
    first = handit.start("a", attrs=attrs)
    handit.stop(first)
    first.attrs["added"] = "later"
    second = handit.start("b", attrs=attrs)
    handit.stop(second)
    assert second.attrs == {"http.route": "/items", "api_key": "<redacted>"}
    assert first.attrs is not second.attrs and attrs["api_key"].startswith("sk-live")
    assert second.events[0]["attrs"] == second.attrs
