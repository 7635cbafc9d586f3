"""Sessions are cheap and leave nothing behind: ids, the engine kept between sessions, flat memory."""
from __future__ import annotations

import contextvars
import cProfile
import gc
import importlib
import os
import pstats
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import warnings

import pytest

import handit

from conftest import PY312, child_env

pytestmark = pytest.mark.engine_dependent  # its tests run an engine outside the `engine` fixture

sessions = importlib.import_module("handit.sessions")


def f(n):
    return n + 1


def _calls_of_f(prof: cProfile.Profile) -> int | None:
    """How many calls of f the profiler saw."""
    seen = {k[2]: v[1] for k, v in pstats.Stats(prof).stats.items() if k[0] == __file__}  # type: ignore[attr-defined]
    return seen.get("f")


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


def test_no_engine_kept_without_background_drain(engine, monkeypatch):
    with handit.session("a"):
        pass
    assert _engine_installed()  # kept for the next session, on every source
    sessions.release_idle()
    monkeypatch.setattr(importlib.import_module("handit.drain"), "BACKGROUND", False)
    with handit.session("b"):
        pass
    assert not _engine_installed()  # nobody would release it later


def _profiled(engine: tuple[str, str]) -> set[int]:
    """The threads handit's profile function is on now (the pure engine's: the calling thread's alone)."""
    module = sessions._state["choice"].module
    if engine[0] == "compiled":
        return module.profiled_threads()  # type: ignore[no-any-return]
    return {threading.get_ident()} if sys.getprofile() is module.profile_callback else set()


def test_profile_function_paused_between_sessions(engine):
    # the profile-function source keeps its engine (drain, patches, decisions) between
    # sessions, but not its profile function: the program between sessions runs unprofiled
    if engine[1] != "setprofile":
        pytest.skip("the profile-function source")
    with handit.session("a") as a:
        assert threading.get_ident() in _profiled(engine)
        f(1)
    kept = sessions._state["drain"]
    assert kept is not None and _profiled(engine) == set() and threading.getprofile() is None
    for _ in range(20):  # no session, no profile function: nothing recorded
        f(2)
    with handit.session("b") as b:  # the kept engine resumed
        assert threading.get_ident() in _profiled(engine)
        f(3)
    assert sessions._state["drain"] is kept
    assert [c["func"] for c in a.calls()] == [c["func"] for c in b.calls()] == ["_profiled", "f"]
    assert _profiled(engine) == set()


def test_thread_started_between_sessions_is_reached(engine):
    # a thread started while the engine is paused has no profile function; the next session
    # gives it one (the pure engine before 3.12 reaches only the starting thread and new ones)
    with handit.session("a"):
        pass
    go, done = threading.Event(), threading.Event()
    box: dict[str, contextvars.Context] = {}

    def worker() -> None:
        go.wait(10)
        box["ctx"].run(f, 7)  # in session b's context: its calls are b's
        done.set()

    thread = threading.Thread(target=worker)
    thread.start()
    with handit.session("b") as b:
        box["ctx"] = contextvars.copy_context()
        go.set()
        assert done.wait(10)
    thread.join()
    reached = not (engine == ("fallback", "setprofile") and not PY312)
    assert [c["func"] for c in b.calls()] == (["f"] if reached else [])


@pytest.mark.skipif(PY312, reason="PY310/PY311: PyEval_SetProfileAllThreads (3.12+) reaches every thread")
def test_kept_drain_thread_not_profiled_again(engine, tmp_path):
    # the drain thread lives on between sessions: the next session's profile function skips
    # it (a program of its own: in this process the drain thread may be another engine's)
    if engine[0] != "compiled":
        pytest.skip("the compiled engine's per-thread profile function (the pure pass has no extension)")
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent("""
        import threading
        import handit
        from handit import drain, sessions
        handit.configure(engine="compiled", source="setprofile")
        with handit.session("a"):
            pass
        with handit.session("b"):
            worker = drain._worker._thread
            profiled = sessions._state["choice"].module.profiled_threads()
        print(worker.is_alive(), threading.get_ident() in profiled, worker.ident in profiled)
        """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=child_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True", "False"], r.stdout


def test_other_profiler_between_sessions_left_alone(engine, monkeypatch):
    # cProfile started while the engine is kept: handit's next session chains to it (compiled,
    # PY310/PY311; 3.12+ cProfile uses sys.monitoring), puts it back at the stop, and the
    # engine's release later does not take it away
    if engine[0] == "fallback" and not PY312:
        # a Python profile function cannot chain: the pure engine warns and records nothing on this thread
        monkeypatch.setattr(warnings, "filters", [("ignore", None, RuntimeWarning, None, 0), *warnings.filters])
    with handit.session("a"):
        pass
    prof = cProfile.Profile()
    prof.enable()
    try:
        installed = sys.getprofile()
        f(1)
        with handit.session("b") as b:
            f(2)
        assert sys.getprofile() is installed
        f(3)
        sessions.release_idle()  # the kept engine goes: cProfile stays
        assert sys.getprofile() is installed
        f(4)
    finally:
        prof.disable()
    assert _calls_of_f(prof) == 4
    assert b.stats["calls"] == (0 if engine[0] == "fallback" and not PY312 else 1)


@pytest.mark.skipif(PY312, reason="PY310/PY311: handit's profile function chains to a profiler installed before it")
def test_new_thread_does_not_chain_to_a_dead_threads_profiler(engine):
    # thread ids are reused: a thread started in a session with the id of an exited thread
    # that had cProfile (chained to by handit) must not feed that profiler
    if engine[0] != "compiled":
        pytest.skip("only the compiled engine chains to another profiler (the pure pass has no extension)")
    handit.configure(engine="compiled", source="setprofile")
    box: dict[str, cProfile.Profile] = {}
    go = threading.Event()

    def profiled() -> None:
        box["prof"] = prof = cProfile.Profile()
        prof.enable()  # and exits with it still installed
        go.wait(10)

    first = threading.Thread(target=profiled)
    first.start()
    while "prof" not in box:
        time.sleep(0.001)
    with handit.session("s") as s:
        go.set()
        first.join()
        for _ in range(20):  # glibc gives the next thread the exited one's id (its stack, reused)
            second = threading.Thread(target=f, args=(1,))
            second.start()
            second.join()
            if second.ident == first.ident:
                break
        else:
            pytest.skip("no thread id was reused")
    fed = {k[2]: v[1] for k, v in pstats.Stats(box["prof"]).stats.items()}  # type: ignore[attr-defined]
    assert "f" not in fed
    assert s.stats["calls"] >= 1


def test_profiler_started_inside_a_session_keeps_its_place(engine):
    # cProfile enabled inside a session takes the thread's profile slot (PY310/PY311); the stop
    # and the engine's release leave it there (PY312+: it uses sys.monitoring, the slot stays empty)
    prof = cProfile.Profile()
    with handit.session("a"):
        prof.enable()
        installed = None if PY312 else sys.getprofile()
        f(1)
    try:
        assert sys.getprofile() is installed
        f(2)
        sessions.release_idle()
        assert sys.getprofile() is installed
        f(3)
    finally:
        prof.disable()
    assert _calls_of_f(prof) == 3


def test_fork_while_the_engine_is_kept(engine):
    # a forked child drops the parent's paused engine and installs its own; the parent keeps its
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    with handit.session("parent"):
        f(1)
    kept = sessions._state["drain"]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            fresh = sessions._state["drain"] is None
            with handit.session("child") as s:
                f(2)
            os.write(write, f"{fresh} {s.stats['calls']}".encode())
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    child = os.read(read, 100).decode().split()
    os.close(read)
    assert status == 0 and child == ["True", "1"]
    with handit.session("again") as again:
        f(3)
    assert sessions._state["drain"] is kept and again.stats["calls"] == 1


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
