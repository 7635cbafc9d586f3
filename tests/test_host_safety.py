"""Safe in every host: an interpreter embedded with dlopen, and Pythons the compiled engine was not written for."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

import handit

pytestmark = pytest.mark.engine_dependent  # its tests run an engine outside the `engine` fixture

PY312 = sys.version_info >= (3, 12)

HOST_C = r"""
#include <dlfcn.h>
#include <stdio.h>
/* An application embedding Python: libpython loaded with dlopen, so its thread-locals are
   allocated dynamically (mod_wsgi, plugin hosts). argv: libpython path, script. */
int main(int argc, char **argv) {
    void *py = dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL);
    if (py == NULL) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 2; }
    void (*init)(void) = (void (*)(void))dlsym(py, "Py_Initialize");
    int (*run)(const char *) = (int (*)(const char *))dlsym(py, "PyRun_SimpleString");
    int (*finalize)(void) = (int (*)(void))dlsym(py, "Py_FinalizeEx");
    init();
    int rc = run(argv[2]);
    if (finalize() < 0) rc = 3;
    return rc ? 1 : 0;
}
"""

WORK = """
def traced(i):
    return i + 1

def work(n):
    for i in range(n):
        traced(i)
"""

SCRIPT = """
import sys, threading
import handit, work
CALLS = 3000
with handit.session("embedded") as s:
    threads = [threading.Thread(target=work.work, args=(CALLS,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    work.work(CALLS)
n = sum(1 for e in s.events if e["type"] == "call" and e["func"] == "traced")
print("engine", s.engine, "calls", n, "expected", 5 * CALLS, flush=True)
assert n == 5 * CALLS, n
"""


def _shared_libpython() -> Path | None:
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return None
    lib = Path(sysconfig.get_config_var("LIBDIR")) / sysconfig.get_config_var("LDLIBRARY")
    return lib if lib.exists() else None


@pytest.fixture(scope="module")
def host(tmp_path_factory) -> Path:
    """The embedding program, built with the system C compiler."""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc) to build the embedding host")
    if _shared_libpython() is None:
        pytest.skip("this Python has no shared libpython to dlopen (built without --enable-shared)")
    out = tmp_path_factory.mktemp("host")
    (out / "host.c").write_text(HOST_C)
    cflags = (sysconfig.get_config_var("CFLAGS") or "").split()
    cflags = [f for f in cflags if f.startswith(("-O", "-m", "-f"))]  # no -Werror or -I of the build tree
    subprocess.run(["cc", *cflags, "-o", str(out / "host"), str(out / "host.c"), "-ldl"], check=True, capture_output=True)
    return out / "host"


def _run_embedded(host: Path, tmp_path: Path, script: str, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "work.py").write_text(textwrap.dedent(WORK))
    # handit from wherever this test imported it (the worktree, or the installed package),
    # and this interpreter's site-packages (xxhash)
    handit_root = str(Path(handit.__file__).resolve().parent.parent)
    paths = [str(tmp_path), handit_root, sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HANDIT_"))}
    environ.update(PYTHONHOME=sys.base_prefix, PYTHONPATH=os.pathsep.join(paths), **env)
    return subprocess.run([str(host), str(_shared_libpython()), textwrap.dedent(script)], capture_output=True,
                          text=True, env=environ, cwd=tmp_path, timeout=120)


def test_embedded_interpreter_threads_every_call_counted(engine, host, tmp_path):
    """libpython loaded with dlopen: sessions with threads run without a crash and count every
    call (the compiled engine's thread-state fast read used to crash the first other thread)."""
    eng, src = engine
    r = _run_embedded(host, tmp_path, SCRIPT, HANDIT_ENGINE=eng, HANDIT_SOURCE=src)
    assert r.returncode == 0, f"host exited {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert f"engine {eng} calls 15000 expected 15000" in r.stdout


@pytest.mark.skipif(not PY312, reason="the fast thread-state read exists on 3.12+ only")
def test_embedded_interpreter_fast_read_only_where_proven(host, tmp_path):
    """In the embedded host the dynamic TLS block of libpython is at no fixed %fs offset: each
    thread proves the offset before reading through it, and none crashes."""
    pytest.importorskip("handit._tracer")
    script = """
    import threading
    from handit import _tracer
    seen = []
    def probe():
        seen.append(_tracer.fast_thread_state())
    threads = [threading.Thread(target=probe) for _ in range(4)]
    for t in threads:
        t.start()
        t.join()
    seen.append(_tracer.fast_thread_state())
    print("fast", sum(seen), "of", len(seen))
    """
    r = _run_embedded(host, tmp_path, script)
    assert r.returncode == 0, r.stderr
    # a thread whose dynamic block happens to lie at the same offset (a reused stack and
    # arena) passes the proof legitimately: the read is then right for it too
    assert r.stdout.startswith("fast ") and r.stdout.split()[3] == "5", r.stdout


def _fast_states(**env: str) -> str:
    code = """
    import threading, handit, work
    from handit import _tracer
    seen = []
    def probe():
        work.work(10)
        seen.append(_tracer.fast_thread_state())
    with handit.session("s") as s:
        threads = [threading.Thread(target=probe) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seen.append(_tracer.fast_thread_state())
    n = sum(1 for e in s.events if e["type"] == "call" and e["func"] == "traced")
    print(seen, n)
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HANDIT_")}
    environ.update(env, HANDIT_ENGINE="compiled")
    return environ, textwrap.dedent(code)


@pytest.mark.skipif(not PY312, reason="the fast thread-state read exists on 3.12+ only")
@pytest.mark.parametrize("setting, expected", [("1", True), ("0", False)])
def test_fast_thread_state_switch(tmp_path, setting, expected):
    """HANDIT_FAST_TSTATE=0 keeps every thread on CPython's getter; calls are counted either way."""
    pytest.importorskip("handit._tracer")
    (tmp_path / "work.py").write_text(textwrap.dedent(WORK))
    environ, code = _fast_states(HANDIT_FAST_TSTATE=setting)
    environ["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(Path(handit.__file__).resolve().parent.parent)])
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{[expected] * 4} 30"


@pytest.mark.skipif(not PY312, reason="the fast thread-state read exists on 3.12+ only")
def test_fast_thread_state_switched_off_for_running_threads():
    """configure(fast_tstate=False) takes threads that proved the fast read back to the getter."""
    tracer = pytest.importorskip("handit._tracer")
    handit.configure(engine="compiled")
    with handit.session("on"):
        assert tracer.fast_thread_state() is True
    handit.configure(fast_tstate=False)
    with handit.session("off"):
        assert tracer.fast_thread_state() is False
    handit.configure(fast_tstate=True)
    with handit.session("on again"):
        assert tracer.fast_thread_state() is True


def test_fast_tstate_setting_is_validated():
    from handit.config import Config
    from handit.errors import ConfigError, HanditConfigWarning

    with pytest.warns(HanditConfigWarning, match="HANDIT_FAST_TSTATE='maybe' ignored"):
        assert Config.from_env({"HANDIT_FAST_TSTATE": "maybe"}).fast_tstate is True
    assert Config.from_env({"HANDIT_FAST_TSTATE": "0"}).fast_tstate is False
    with pytest.raises(ConfigError, match="HANDIT_FAST_TSTATE"):
        handit.configure(fast_tstate=0)


# ---- Pythons the compiled engine was not written for ----------------------------------------

UNKNOWN = """
import warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import handit, work
    for _ in range(3):
        with handit.session("s") as s:
            work.work(5)
print(s.engine, sum(1 for e in s.events if e["type"] == "call" and e["func"] == "traced"))
for w in caught:
    print("WARNING", w.category.__name__, w.message)
"""


@pytest.mark.parametrize("pretend", ["3.14", "3.13t", "3.9"])
def test_unknown_python_runs_the_pure_engine_with_one_message(tmp_path, pretend):
    """An interpreter whose internal layout the compiled engine does not know (a newer version,
    a free-threaded build): the extension refuses to initialise and the pure engine runs,
    with one warning saying why."""
    pytest.importorskip("handit._tracer")
    (tmp_path / "work.py").write_text(textwrap.dedent(WORK))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HANDIT_")}
    environ.update(_HANDIT_SIMULATE_PYTHON=pretend,
                   PYTHONPATH=os.pathsep.join([str(tmp_path), str(Path(handit.__file__).resolve().parent.parent)]))
    r = subprocess.run([sys.executable, "-c", UNKNOWN], capture_output=True, text=True, env=environ, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "fallback 5"
    warnings_seen = [line for line in lines if line.startswith("WARNING")]
    assert len(warnings_seen) == 1, warnings_seen
    assert warnings_seen[0].startswith(f"WARNING RuntimeWarning handit uses the pure-Python engine: the compiled engine cannot run on Python {pretend}")
    why = "free-threaded builds" if pretend.endswith("t") else "internal frame layout, known for 3.10 to 3.13"
    assert why in warnings_seen[0]

    environ["HANDIT_REQUIRE_COMPILED"] = "1"
    r = subprocess.run([sys.executable, "-c", UNKNOWN], capture_output=True, text=True, env=environ, timeout=60, cwd=tmp_path)
    assert r.returncode != 0
    assert f"HanditError: the compiled engine is required but the compiled engine cannot run on Python {pretend}" in r.stderr


def test_known_python_checks_its_layout():
    """The running interpreter passes the import checks; 3.13 also compares CPython's published
    _Py_DebugOffsets with the engine's mirror."""
    tracer = pytest.importorskip("handit._tracer")
    expected = "version and _Py_DebugOffsets" if sys.version_info[:2] == (3, 13) else "version"
    assert tracer.LAYOUT_CHECKED == expected
