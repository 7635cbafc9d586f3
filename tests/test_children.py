"""Child processes: sessions continue into fork, multiprocessing and subprocess children
(handit/propagation.py, handit.pth), and `handit run` records them in its trace."""
from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
from conftest import child_env

import handit
from handit import propagation
from handit.tracefile import iter_events

pytestmark = pytest.mark.engine_dependent  # its tests run an engine outside the `engine` fixture

REPO_PTH = Path(handit.__file__).resolve().parent.parent / "handit.pth"
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")


def _installed_pth() -> Path | None:
    for d in [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]:
        if (Path(d) / "handit.pth").exists():
            return Path(d) / "handit.pth"
    return None


@pytest.fixture(scope="session")
def child_python(tmp_path_factory) -> str:
    """A Python whose site-packages holds handit.pth: this one when handit is installed
    (CI), else a venv made here whose .pth files put this run's sys.path first."""
    if _installed_pth() is not None:
        return sys.executable
    assert REPO_PTH.exists(), "handit.pth is missing from the source tree"
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    paths = [str(Path(handit.__file__).resolve().parent.parent)] + [p for p in sys.path if p and os.path.isdir(p)]
    # "_" sorts before "h": the paths are there when handit.pth runs
    (Path(purelib) / "_handit_test_paths.pth").write_text("\n".join(paths) + "\n")
    (Path(purelib) / "handit.pth").write_text(REPO_PTH.read_text())
    return str(python)


def _env(engine: tuple[str, str] | None = None) -> dict[str, str]:
    keep = ("HANDIT_REQUIRE_COMPILED", "HANDIT_ENGINE")  # the pass's engine, unless the test names one
    env = {k: v for k, v in child_env().items() if not k.startswith("HANDIT_") or k in keep}
    if engine is not None:
        env["HANDIT_ENGINE"], env["HANDIT_SOURCE"] = engine
    return env


def test_pth_is_one_line_that_imports_nothing_without_the_variable(child_python, tmp_path):
    text = REPO_PTH.read_text()
    assert text.startswith("import os;") and text.count("\n") == 1
    r = subprocess.run([child_python, "-c", "import sys; print(sorted(m for m in sys.modules if 'handit' in m))"],
                       capture_output=True, text=True, env=_env(), timeout=60, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == "[]\n", r.stderr


def test_pth_is_in_the_wheel_build(tmp_path):
    """setup.py's build_py puts handit.pth at the top of what is installed (site-packages)."""
    root = REPO_PTH.parent
    if not (root / "setup.py").exists():
        pytest.skip("not a source tree")
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path / "lib")],
                       capture_output=True, text=True, cwd=root, timeout=120,
                       env={**os.environ, "HANDIT_NO_EXTENSION": "1"})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "lib" / "handit.pth").read_text() == REPO_PTH.read_text()
    assert (tmp_path / "lib" / "handit" / "propagation.py").exists()


PROGRAM = """
    import multiprocessing, os, subprocess, sys

    def child_work(n):
        return n + 1

    def in_child(n):
        child_work(n)

    def main():
        kind = sys.argv[1]
        if kind == "fork":
            pid = os.fork()
            if pid == 0:
                in_child(1)
                os._exit(0)
            os.waitpid(pid, 0)
        elif kind == "subprocess":
            subprocess.run([sys.executable, __file__, "child"], check=True)
            assert subprocess.run(["sh", "-c", "echo shell"], capture_output=True, text=True).stdout == "shell\\n"
        elif kind == "child":
            in_child(2)
        else:
            p = multiprocessing.get_context(kind).Process(target=in_child, args=(3,))
            p.start()
            p.join()
            assert p.exitcode == 0, p.exitcode
        child_work(0)

    if __name__ == "__main__":
        main()
"""

KINDS = ["fork", "spawn", "forkserver", "subprocess"]


def _handit_run(child_python, tmp_path, engine, kind, *options):
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(PROGRAM))
    trace = tmp_path / "t.handit"
    r = subprocess.run([child_python, "-m", "handit", "run", "-o", str(trace), "--no-summary", *options,
                        str(script), kind], capture_output=True, text=True, cwd=tmp_path, env=_env(engine), timeout=180)
    assert r.returncode == 0, r.stderr
    return list(iter_events(str(trace)))


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "fork" or hasattr(os, "fork")])
def test_handit_run_records_python_children(child_python, tmp_path, engine, kind):
    if kind in ("fork", "forkserver") and os.name != "posix":
        pytest.skip("POSIX start method")
    events = _handit_run(child_python, tmp_path, engine, kind)
    starts = [e for e in events if e["type"] == "session_start"]
    ends = {e["session_id"]: e for e in events if e["type"] == "session_end"}
    roots = [e for e in starts if e["parent_session_id"] is None]  # file order is write order, not start order
    assert len(roots) == 1, starts
    root = roots[0]
    assert root["tag"] == "prog.py"
    children = [e for e in starts if e["parent_session_id"] == root["session_id"]]
    assert len(children) == 1, starts
    child = children[0]
    assert child["trace_id"] == root["trace_id"] and child["parent_span_id"] == root["span_id"]
    assert child["pid"] != root["pid"]
    assert set(ends) == {e["session_id"] for e in starts}, "every session ended"
    assert not any(e.get("incomplete") for e in ends.values())
    by_session: dict[str, list[str]] = {}
    for e in events:
        if e["type"] == "call":
            by_session.setdefault(e["session_id"], []).append(e["func"])
    assert "in_child" in by_session[child["session_id"]]
    assert "child_work" in by_session[child["session_id"]]
    assert "in_child" not in by_session[root["session_id"]]
    assert len(starts) == 2, "no session for multiprocessing's helpers (forkserver, resource tracker) or the shell"


def test_no_children(child_python, tmp_path, engine):
    for kind in ("subprocess", "spawn") + (("fork",) if hasattr(os, "fork") else ()):
        events = _handit_run(child_python, tmp_path, engine, kind, "--no-children")
        starts = [e for e in events if e["type"] == "session_start"]
        assert len(starts) == 1, (kind, starts)
        assert not [e for e in events if e["type"] == "call" and e["func"] == "in_child"]
        (tmp_path / "t.handit").unlink()


def test_child_keeps_the_api_key_out_of_its_environment(engine):
    from handit import propagation

    handit.configure(api_key="sk-test-1234567890abcdef", capture="timing", output_file="rel.handit")
    try:
        with handit.session("s") as s:
            link = propagation.link_of(s)
            assert propagation.ENV not in os.environ  # written when a child starts, not before
            out = subprocess.run(["/bin/sh", "-c", 'printf %s "$HANDIT_PARENT_SESSION"'], capture_output=True,
                                 text=True, timeout=30).stdout
            assert json.loads(out) == json.loads(os.environ[propagation.ENV]) == link
            assert "sk-test" not in out
        assert propagation.ENV not in os.environ
    finally:
        handit.reset_config()
    assert "api_key" not in link["settings"] and "sk-test" not in str(link)
    assert link["settings"]["capture"] == "timing"
    assert link["settings"]["output_file"] == os.path.abspath("rel.handit")
    assert link["session"] == s.id and link["trace"] == s.trace_id


def test_a_bad_variable_warns_and_the_child_runs(child_python, tmp_path):
    r = subprocess.run([child_python, "-c", "print('ran')"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                       env={**_env(), "HANDIT_PARENT_SESSION": "{not json"})
    assert r.returncode == 0 and r.stdout == "ran\n"
    assert "could not continue" in r.stderr


def test_back_to_back_sessions_each_reach_a_child_through_the_c_environment(tmp_path):
    # a shell reads the C environment (subprocess with env=None passes it as it is); the
    # link is rewritten in handit's own buffer each period, and os.environ agrees with it
    shown = []
    for tag in ("one", "two", "three"):
        with handit.session(tag) as s:
            out = subprocess.run(["/bin/sh", "-c", 'printf %s "$HANDIT_PARENT_SESSION"'], capture_output=True, text=True, timeout=30).stdout
            assert json.loads(out) == json.loads(os.environ[propagation.ENV])
            shown.append(json.loads(out)["session"] == s.id)
        out = subprocess.run(["/bin/sh", "-c", 'printf %s "${HANDIT_PARENT_SESSION-unset}"'], capture_output=True, text=True, timeout=30).stdout
        assert out == "unset" and propagation.ENV not in os.environ
    assert shown == [True, True, True]
    with handit.session("replaced"):
        os.environ[propagation.ENV] = "theirs"  # someone else's value is left to them
    try:
        assert os.environ[propagation.ENV] == "theirs"
        out = subprocess.run(["/bin/sh", "-c", 'printf %s "$HANDIT_PARENT_SESSION"'], capture_output=True, text=True, timeout=30).stdout
        assert out == "theirs"
    finally:
        del os.environ[propagation.ENV]


def _shell_link(**kw) -> dict | None:
    out = subprocess.run(["/bin/sh", "-c", 'printf %s "${HANDIT_PARENT_SESSION-unset}"'], capture_output=True,
                         text=True, timeout=30, **kw).stdout
    return None if out == "unset" else json.loads(out)


@pytest.mark.skipif(os.name != "posix", reason="the link is written lazily where _posixsubprocess starts processes")
def test_the_link_is_written_when_a_child_starts_and_names_the_current_session(engine, tmp_path):
    # nothing is written at a session's start (a server opens a session per request); a child
    # started later gets the session current where it is started: the inner one here
    with handit.session("copies") as copies:
        # an environment of the program's own, made before any child started: a copy of
        # os.environ gets the link, one built from scratch does not, a value set is the program's
        assert propagation.ENV not in os.environ and os.getenv(propagation.ENV) is None
        copy, scratch, theirs = {**os.environ, "EXTRA": "1"}, {"PATH": os.environ.get("PATH", "/bin")}, dict(os.environ)
        theirs[propagation.ENV] = "theirs"
        assert _shell_link(env=copy)["session"] == copies.id
        assert _shell_link(env=scratch) is None
        out = subprocess.run(["/bin/sh", "-c", 'printf %s "$HANDIT_PARENT_SESSION"'], capture_output=True, text=True,
                             timeout=30, env=theirs).stdout
        assert out == "theirs"
    with handit.session("outer") as outer:
        assert propagation.ENV not in os.environ and os.getenv(propagation.ENV) is None
        os.system(f'printf %s "$HANDIT_PARENT_SESSION" > {tmp_path / "system"}')  # os.system: the C environment
        assert json.loads((tmp_path / "system").read_text())["session"] == outer.id
        with handit.session("inner") as inner:
            assert json.loads(os.environ[propagation.ENV])["session"] == outer.id  # the last child's, until the next
            assert _shell_link()["session"] == inner.id
        assert _shell_link()["session"] == outer.id
    assert _shell_link() is None and propagation.ENV not in os.environ


@pytest.mark.skipif(os.name != "posix", reason="the link is written lazily where _posixsubprocess starts processes")
def test_posix_spawn_child_gets_the_link(engine):
    if not hasattr(os, "posix_spawn"):
        pytest.skip("no posix_spawn")
    r, w = os.pipe()
    try:
        with handit.session("spawner") as s:
            pid = os.posix_spawn("/bin/sh", ["sh", "-c", 'printf %s "$HANDIT_PARENT_SESSION"'], dict(os.environ),
                                 file_actions=[(os.POSIX_SPAWN_DUP2, w, 1)])
            os.waitpid(pid, 0)
        os.close(w)
        w = -1
        out = b""
        while chunk := os.read(r, 65536):
            out += chunk
    finally:
        os.close(r)
        if w != -1:
            os.close(w)
    assert json.loads(out)["session"] == s.id
