"""User code that a preview runs (HANDIT_PREVIEW=repr) stays inside handit, on both engines.

Each program runs in a subprocess, once untraced and once traced with ``repr`` previews
of every argument, return value and exception message: its output and exit status must
not change, whatever the user's ``__repr__``/``__str__`` raises — except that a
``KeyboardInterrupt`` on the main thread (what a Ctrl-C arriving then raises) still
interrupts the program.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import child_env


PROGRAM = textwrap.dedent(
    """
    import os, sys
    import handit

    class Hostile(BaseException):
        pass

    RAISE = {{"SystemExit": SystemExit(3), "GeneratorExit": GeneratorExit(), "Hostile": Hostile("x"),
             "ValueError": ValueError("v")}}

    class Boom:
        def __repr__(self):
            if "{kind}" == "RecursionError":
                return repr(self)  # recurses until RecursionError
            raise RAISE["{kind}"]

    class Err(Exception):
        def __str__(self):
            if "{kind}" == "RecursionError":
                return str(self)
            raise RAISE["{kind}"]

    def take(x, y):
        return x

    def give():
        return Boom()

    def fail():
        raise Err()

    def program():
        take(Boom(), [Boom()])
        give()
        try:
            fail()
        except Err:
            print("caught")
        print("done", take(1, 2))

    if os.environ.get("TRACED") == "1":
        with handit.session("contained") as s:
            program()
        print("calls", s.stats["calls"] >= 4)
    else:
        program()
        print("calls", True)
    """
)

INTERRUPT = textwrap.dedent(
    """
    import os
    import signal
    import handit

    # a run started in the background inherits SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: this program is interrupted as from a terminal
    signal.signal(signal.SIGINT, signal.default_int_handler)

    class Boom:
        def __repr__(self):
            raise KeyboardInterrupt

    def take(x):
        return 1

    def program():
        take(Boom())
        total = 0
        for i in range(100000):  # the re-delivered interrupt lands here at the latest
            total += i
        print("not interrupted")

    try:
        if os.environ.get("TRACED") == "1":
            with handit.session("contained"):
                program()
        else:
            program()
    except KeyboardInterrupt:
        print("interrupted")
    print("after")
    """
)


def _run(tmp_path: Path, source: str, engine: tuple[str, str] | None) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "prog.py"
    script.write_text(source)
    env = child_env(HANDIT_PREVIEW="repr", HANDIT_INCLUDE="__main__")
    env.pop("HANDIT_ENGINE", None)
    if engine is not None:
        env.update(TRACED="1", HANDIT_ENGINE=engine[0], HANDIT_SOURCE=engine[1])
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)


@pytest.mark.parametrize("kind", ["SystemExit", "GeneratorExit", "Hostile", "RecursionError", "ValueError"])
def test_raising_repr_changes_nothing(tmp_path: Path, engine: tuple[str, str], kind: str) -> None:
    source = PROGRAM.format(kind=kind)
    plain = _run(tmp_path, source, None)
    traced = _run(tmp_path, source, engine)
    assert plain.returncode == 0, plain.stderr
    assert (traced.returncode, traced.stdout) == (plain.returncode, plain.stdout), traced.stderr
    assert traced.stdout == "caught\ndone 1\ncalls True\n"
    assert "Traceback" not in traced.stderr


def test_keyboard_interrupt_still_interrupts(tmp_path: Path, engine: tuple[str, str]) -> None:
    plain = _run(tmp_path, INTERRUPT, None)
    traced = _run(tmp_path, INTERRUPT, engine)
    assert plain.stdout == "not interrupted\nafter\n"
    assert traced.stdout == "interrupted\nafter\n", traced.stderr
    assert traced.returncode == 0, traced.stderr
