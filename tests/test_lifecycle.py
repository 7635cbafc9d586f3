"""Process lifecycle: nothing at import, hooks installed by the first session, fork order,
SIGTERM/SIGHUP, exec and os._exit (handit/lifecycle.py). Every test runs a real program."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import child_env

from handit.tracefile import iter_events

pytestmark = pytest.mark.engine_dependent  # its tests run an engine outside the `engine` fixture

POSIX = os.name == "posix"
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
needs_posix = pytest.mark.skipif(not POSIX, reason="POSIX signals")


def _env(engine: tuple[str, str] | None = None, **extra: str) -> dict[str, str]:
    keep = ("HANDIT_REQUIRE_COMPILED", "HANDIT_ENGINE")  # the pass's engine, unless the test names one
    env = {k: v for k, v in child_env().items() if not k.startswith("HANDIT_") or k in keep}
    if engine is not None:
        env["HANDIT_ENGINE"], env["HANDIT_SOURCE"] = engine
    env.update(extra)
    return env


# The programs start with SIGHUP at its default, as from a terminal, whatever the test run
# inherited (nohup, some CI runners: SIGHUP ignored, where handit rightly installs nothing).
_DEFAULT_SIGHUP = "import signal as _signal\n_signal.signal(_signal.SIGHUP, _signal.SIG_DFL)\n"


def _program(tmp_path, code: str) -> str:
    path = tmp_path / "prog.py"
    path.write_text(_DEFAULT_SIGHUP + textwrap.dedent(code))
    return str(path)


def _run(tmp_path, code: str, engine=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, _program(tmp_path, code)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=_env(engine), **kw)


def _communicate(proc: subprocess.Popen, timeout: float = 60) -> tuple[str, str]:
    """The program's output once it ended; killed (and the test failed) if it does not end."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the program did not end within {timeout} s: {err[-2000:]}")


def _events(path) -> list[dict]:
    return list(iter_events(str(path)))


def test_import_defines_names_only(tmp_path):
    """`import handit` imports one module and installs nothing; the first session installs
    the exit hook and the signal handlers, once."""
    r = _run(tmp_path, """
        import atexit, signal, sys
        before, callbacks = set(sys.modules), atexit._ncallbacks()
        import handit
        new = sorted(set(sys.modules) - before)
        assert new == ["handit"], new
        assert atexit._ncallbacks() == callbacks
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
        assert "handit._tracer" not in sys.modules and "handit._fallback" not in sys.modules  # engines' fork hooks
        handit.configure(capture="args")  # names resolve on use
        assert atexit._ncallbacks() == callbacks and "handit.lifecycle" not in sys.modules
        # imports sessions, drain and lifecycle (and the stdlib's logging, with its own atexit hook)
        assert handit.current() is None
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        from handit import lifecycle
        assert not lifecycle._installed
        with handit.session("one"):
            pass
        assert atexit._ncallbacks() > callbacks and lifecycle._installed
        assert signal.getsignal(signal.SIGTERM) is lifecycle._on_signal
        assert signal.getsignal(signal.SIGHUP) is lifecycle._on_signal
        n = atexit._ncallbacks()
        with handit.session("two"):
            pass
        assert atexit._ncallbacks() == n  # installed once
        print("ok")
    """)
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr


def test_import_time_modules(tmp_path):
    """`python -X importtime -c "import handit"` lists a handful of modules."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", "import handit"], capture_output=True, text=True,
                       timeout=60, env=_env(), cwd=tmp_path)
    baseline = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True,
                              timeout=60, env=_env(), cwd=tmp_path)
    extra = len(r.stderr.splitlines()) - len(baseline.stderr.splitlines())
    assert 1 <= extra <= 3, r.stderr


def test_signal_handlers_only_from_the_main_thread_and_never_over_sig_ign(tmp_path):
    r = _run(tmp_path, """
        import signal, threading
        import handit
        from handit import lifecycle
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        t = threading.Thread(target=lambda: handit.stop(handit.start("worker")))
        t.start(); t.join()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # first session not on the main thread
        with handit.session("main"):
            pass
        assert signal.getsignal(signal.SIGTERM) is lifecycle._on_signal
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN  # the program's choice stays
        print("ok")
    """)
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr


@needs_fork
def test_fork_hooks_run_in_order(tmp_path, engine):
    """The child's hook re-initialises the engine's locks first, then the drain, then the
    sessions, then removes the engine; it is registered once however many sessions ran."""
    r = _run(tmp_path, """
        import os
        import handit
        from handit import lifecycle
        def work(n):
            return n
        for i in range(3):
            with handit.session("s"):
                work(i)
        with handit.session("s"):
            pid = os.fork()
            if pid == 0:
                os.write(1, (",".join(lifecycle.fork_log) + "\\n").encode())
                os._exit(0)
            os.waitpid(pid, 0)
        assert lifecycle.fork_log == []  # the parent ran no child hook
    """, engine)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [",".join(("engine", "drain", "sessions", "uninstall"))]


@needs_fork
def test_forked_child_leaves_the_parents_with(tmp_path, engine):
    """A prefork server: the child opens its own session inside the parent's `with` and
    leaves both (10.3a: was a KeyError in sessions.stop, exit status 1)."""
    trace = tmp_path / "t.handit"
    r = _run(tmp_path, f"""
        import os, sys
        import handit
        handit.configure(output_file={str(trace)!r})
        def serve(n):
            return n * 2
        with handit.session("server") as s:
            serve(0)
            pid = os.fork()
            if pid == 0:
                with handit.session("worker"):
                    serve(1)
        if pid == 0:
            sys.exit(0)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    """, engine)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    events = _events(trace)
    starts = {e["session_id"]: e for e in events if e["type"] == "session_start"}
    ends = {e["session_id"]: e for e in events if e["type"] == "session_end"}
    assert set(starts) == set(ends) and len(starts) == 3
    server = next(e for e in starts.values() if e["parent_session_id"] is None)
    child = next(e for e in starts.values() if e["parent_session_id"] == server["session_id"])
    worker = next(e for e in starts.values() if e["parent_session_id"] == child["session_id"])
    assert child["pid"] == worker["pid"] != server["pid"]
    assert child["trace_id"] == server["trace_id"] and child["parent_span_id"] == server["span_id"]
    serves = [e for e in events if e["type"] == "call" and e["func"] == "serve"]
    # the processes' frames interleave in the file in the order they were written
    assert sorted(e["session_id"] for e in serves) == sorted([server["session_id"], worker["session_id"]])


SLOW_PROGRAM = """
    import os, signal, sys, time
    import handit
    handit.configure(output_file={trace!r})
    {before}
    def step(i):
        time.sleep(0.001)
        return i
    with handit.session("server"):
        {after}
        i = 0
        while True:
            step(i)
            i += 1
            if i == 200:
                print("ready", flush=True)
            {in_loop}
"""


def _slow(tmp_path, engine, before="", after="", in_loop="pass"):
    trace = tmp_path / "t.handit"
    code = SLOW_PROGRAM.format(trace=str(trace), before=before, after=after, in_loop=in_loop)
    proc = subprocess.Popen([sys.executable, _program(tmp_path, code)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, env=_env(engine))
    if proc.stdout.readline() != "ready\n":
        _, err = _communicate(proc)
        pytest.fail(f"the program did not start: {err}")
    return proc, trace


def _one_whole_session(trace) -> tuple[dict, list[dict]]:
    events = _events(trace)
    ends = [e for e in events if e["type"] == "session_end"]
    assert len(ends) == 1 and "incomplete" not in ends[0], ends
    calls = [e for e in events if e["type"] == "call" and e["func"] == "step"]
    returns = [e for e in events if e["type"] == "return" and e["func"] == "step" and not e.get("incomplete")]
    assert len(calls) >= 200
    assert len([e for e in events if e["type"] == "call"]) == ends[0]["stats"]["calls"]
    assert len(returns) >= len(calls) - 1  # the call running when the signal came may be cut
    return ends[0], calls


@needs_posix
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_signal_writes_every_session_then_dies_of_it(tmp_path, engine, signame):
    signum = getattr(signal, signame)
    proc, trace = _slow(tmp_path, engine)
    time.sleep(0.3)
    proc.send_signal(signum)
    _, err = _communicate(proc)
    assert proc.returncode == -signum, err
    end, _ = _one_whole_session(trace)
    assert end["reason"] == f"signal {signame}"


@needs_posix
def test_programs_own_handler_is_kept(tmp_path, engine):
    """A handler installed before handit starts is called after the records are written."""
    proc, trace = _slow(tmp_path, engine, before="""
    def bye(signum, frame):
        print("handled", signum, flush=True)
        sys.exit(3)
    signal.signal(signal.SIGTERM, bye)""")
    proc.send_signal(signal.SIGTERM)
    out, err = _communicate(proc)
    assert proc.returncode == 3, err
    assert out == f"handled {int(signal.SIGTERM)}\n"
    end, _ = _one_whole_session(trace)
    assert end["reason"] == "stop"  # its `with` ended it, on the way out of the handler's sys.exit


@needs_posix
def test_handler_installed_after_handit_and_one_that_returns(tmp_path, engine):
    """A handler the program installs later replaces handit's (its choice); one that does not
    end the program (a SIGHUP "reload") leaves the session recording."""
    proc, trace = _slow(tmp_path, engine, after="""
        def reload(signum, frame):
            print("reloaded", flush=True)
        signal.signal(signal.SIGHUP, reload)
        def bye(signum, frame):
            sys.exit(4)
        signal.signal(signal.SIGTERM, bye)""")
    proc.send_signal(signal.SIGHUP)
    assert proc.stdout.readline() == "reloaded\n"
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = _communicate(proc)
    assert proc.returncode == 4, err
    _one_whole_session(trace)


@needs_posix
def test_chained_handler_that_returns_keeps_recording(tmp_path, engine):
    proc, trace = _slow(tmp_path, engine, before="""
    def reload(signum, frame):
        print("reloaded", flush=True)
    signal.signal(signal.SIGHUP, reload)""", in_loop="""if i == 400:
                sys.exit(0)""")
    proc.send_signal(signal.SIGHUP)
    out, err = _communicate(proc)
    assert proc.returncode == 0, err
    assert out == "reloaded\n"
    _, calls = _one_whole_session(trace)
    assert len(calls) == 400


@needs_posix
@pytest.mark.parametrize("how", ["execv", "execve", "execl", "_exit"])
def test_exec_and_exit_write_the_sessions_first(tmp_path, engine, how):
    trace = tmp_path / "t.handit"
    leave = {
        "execv": "os.execv(sys.executable, [sys.executable, '-c', 'print(\"exec\")'])",
        "execve": "os.execve(sys.executable, [sys.executable, '-c', 'print(\"exec\")'], dict(os.environ))",
        "execl": "os.execl(sys.executable, sys.executable, '-c', 'print(\"exec\")')",
        "_exit": "os._exit(5)",
    }[how]
    r = _run(tmp_path, f"""
        import os, sys
        import handit
        handit.configure(output_file={str(trace)!r}, children=False)
        def step(i):
            return i
        with handit.session("s"):
            for i in range(50):
                step(i)
            sys.stdout.flush()
            {leave}
    """, engine)
    assert r.returncode == (5 if how == "_exit" else 0), r.stderr
    events = _events(trace)
    end = [e for e in events if e["type"] == "session_end"]
    assert len(end) == 1 and end[0]["reason"] == ("os._exit" if how == "_exit" else "exec")
    assert len([e for e in events if e["type"] == "call" and e["func"] == "step"]) == 50
    if how != "_exit":
        assert r.stdout == "exec\n"


def test_process_wrappers_are_installed_once_and_removed_with_the_engine(engine):
    # a server opens a session per request: exec, _exit and the process starters are wrapped
    # once while handit's engine is installed, not at every session, and restored when it goes
    import _posixsubprocess

    import handit
    from handit import lifecycle, propagation, sessions

    names = [n for n in ("execv", "execve", "_exit", "fork", "system", "posix_spawn") if hasattr(os, n)]
    originals = {n: getattr(os, n) for n in names}
    fork_exec = _posixsubprocess.fork_exec
    seen = []
    for tag in ("one", "two", "three"):
        with handit.session(tag):
            seen.append({n: getattr(os, n) for n in names})
            assert all(getattr(os, n) is not originals[n] and getattr(os, n).__wrapped__ is originals[n] for n in names)
            assert _posixsubprocess.fork_exec.__wrapped__ is fork_exec
    # the engine lingers for the next session (every source): so do its wrappers, unchanged
    assert seen[0] == seen[1] == seen[2]
    assert lifecycle._patched and os.execv is seen[0]["execv"]
    sessions.release_idle()
    assert {n: getattr(os, n) for n in names} == originals and _posixsubprocess.fork_exec is fork_exec
    assert not lifecycle._patched and not propagation._wrapped


def test_exec_wrapper_without_a_session_writes_nothing(tmp_path, engine):
    # the wrappers outlive the session while the engine lingers: an exec then stops nothing
    trace = tmp_path / "t.handit"
    r = _run(tmp_path, f"""
        import os, sys
        import handit
        handit.configure(output_file={str(trace)!r}, children=False)
        with handit.session("s"):
            pass
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, '-c', 'print("exec")'])
    """, engine)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "exec\n"
    ends = [e for e in _events(trace) if e["type"] == "session_end"]
    assert [e["reason"] for e in ends] == ["stop"]


def test_session_end_says_how_it_ended(engine):
    import handit

    with handit.session("s") as s:
        pass
    assert s.end_event()["reason"] == "stop"
    assert s.start_event()["pid"] == os.getpid()
    json.dumps(s.events)


@needs_posix
def test_signal_inside_handits_own_work_waits_for_it(tmp_path, engine):
    """A SIGTERM landing while the main thread is inside handit (here: holding the sessions
    lock, as start and stop do) is handled once handit's work is done, not in the middle."""
    trace = tmp_path / "t.handit"
    r = _run(tmp_path, f"""
        import os, signal, time
        import handit
        from handit import sessions
        handit.configure(output_file={str(trace)!r})
        def step(i):
            return i
        with handit.session("s"):
            for i in range(20):
                step(i)
            with sessions._lock:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(100):
                    time.sleep(0.001)  # the handler has run by now, and must have deferred
                print("still in the lock", flush=True)
            time.sleep(30)
        print("not reached")
    """, engine)
    assert r.returncode == -signal.SIGTERM, r.stderr
    assert r.stdout == "still in the lock\n"
    events = _events(trace)
    end = [e for e in events if e["type"] == "session_end"]
    assert len(end) == 1 and end[0]["reason"] == "signal SIGTERM"
    assert len([e for e in events if e["type"] == "call" and e["func"] == "step"]) == 20
