"""One interface, two engines: the same public names, the same record kinds, the choice explained."""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import child_env

from handit import _engine, _fallback, records

HANDIT = Path(_fallback.__file__).parent


def test_fallback_all_is_sorted_and_complete():
    assert _fallback.__all__ == sorted(_fallback.__all__)
    for name in _fallback.__all__:
        assert hasattr(_fallback, name)


def test_compiled_has_the_same_names():
    tracer = pytest.importorskip("handit._tracer")
    missing = [n for n in _fallback.__all__ if not hasattr(tracer, n)]
    assert not missing


def test_stub_declares_every_name():
    stub = (HANDIT / "_tracer.pyi").read_text()
    declared = set(re.findall(r"^(?:def )?(\w+)[(:]", stub, re.M))
    assert set(_fallback.__all__) <= declared


def test_record_kinds_match_the_pxd():
    pxd = (HANDIT / "_tracer.pxd").read_text()
    kinds = dict(re.findall(r"\bK_(\w+) = (\d+)", pxd))
    assert {name: int(v) for name, v in kinds.items()} == {
        name.upper(): value for value, name in records.KIND_NAMES.items()
    }


def test_choice_says_why(monkeypatch):
    choice = _engine.choose("fallback", "setprofile")
    assert choice.engine == "fallback" and "HANDIT_ENGINE=fallback" in choice.reason
    with pytest.raises(_engine.ConfigError, match="HANDIT_ENGINE"):
        _engine.choose("turbo")
    with pytest.raises(_engine.ConfigError, match="HANDIT_SOURCE"):
        _engine.choose("auto", "ptrace")


def test_missing_extension_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(_engine, "_import_compiled", lambda: (None, "the compiled extension is not built (test)"))
    monkeypatch.setattr(_engine, "_warned_fallback", False)
    monkeypatch.delenv("HANDIT_REQUIRE_COMPILED", raising=False)
    with pytest.warns(RuntimeWarning, match="pure-Python engine"):
        choice = _engine.choose()
    assert choice.engine == "fallback"
    with pytest.raises(_engine.HanditError, match="required"):
        _engine.choose(require_compiled=True)


def test_install_without_the_extension_runs_pure_with_one_warning(tmp_path):
    """An install made with HANDIT_NO_EXTENSION=1 (CI's pure-Python pass): no monkeypatching, the
    real missing module; every session runs the pure engine, and the user is told once."""
    if _engine._import_compiled()[0] is not None:
        pytest.skip("the compiled extension is installed; CI's pure-Python pass installs without it")
    code = textwrap.dedent("""
        import warnings
        warnings.simplefilter("always")
        import handit
        def f(n):
            return n
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                with handit.session("x") as s:
                    f(1)
        print(s.engine, len([c for c in s.calls() if c["func"] == "f"]))
        print(sum("pure-Python engine" in str(w.message) for w in caught))
        """)
    env = {k: v for k, v in child_env().items() if k not in ("HANDIT_ENGINE", "HANDIT_REQUIRE_COMPILED")}
    (tmp_path / "prog.py").write_text(code)
    r = subprocess.run([sys.executable, "prog.py"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["fallback", "1", "1"]
