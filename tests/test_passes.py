"""CI's two passes: each runs the engine it asks for, and .ci/run asks for a different one in each (issue 16.2)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from conftest import PURE_PASS

import handit

pytestmark = pytest.mark.engine_dependent  # runs in both passes: that is what it checks

CI_RUN = Path(__file__).resolve().parent.parent / ".ci" / "run"


def test_this_pass_runs_the_engine_its_environment_asks_for() -> None:
    """A default session (no engine named) runs the pure engine in the pure pass and the
    compiled one where it is required; with neither asked for, the compiled one if built."""
    with handit.session("pass") as s:
        pass
    if PURE_PASS:
        assert s.engine == "fallback"
    elif os.environ.get("HANDIT_REQUIRE_COMPILED") == "1":
        assert s.engine == "compiled"
    else:
        try:
            from handit import _tracer  # noqa: F401
        except ImportError:
            assert s.engine == "fallback"
        else:
            assert s.engine == "compiled"


@pytest.mark.skipif(not CI_RUN.exists(), reason="an installed copy of the tests, without the checkout's .ci/")
def test_ci_runs_the_readme_command_once_per_engine() -> None:
    """.ci/run runs the README's test command twice per Python: compiled required, and the pure
    engine on an install made without the extension. A CI whose passes ran the same engine
    (a dropped HANDIT_ENGINE=fallback, or HANDIT_REQUIRE_COMPILED in both) fails here."""
    script = CI_RUN.read_text()
    runs = [line for line in script.splitlines() if re.search(r"/bin/pytest\b", line) and not line.lstrip().startswith("#")]
    assert len(runs) == 2, runs
    compiled = [r for r in runs if "HANDIT_REQUIRE_COMPILED=1" in r]
    pure = [r for r in runs if "HANDIT_ENGINE=fallback" in r]
    assert len(compiled) == 1 and len(pure) == 1 and compiled != pure, runs
    assert "HANDIT_ENGINE=fallback" not in compiled[0] and "HANDIT_REQUIRE_COMPILED" not in pure[0]
    assert "-pure/bin/pytest" in pure[0], "the pure pass runs in the venv installed without the extension"
    assert re.search(r'HANDIT_NO_EXTENSION=1 "\$work/\$name-pure/bin/python" -m pip install', script)
    for run in runs:  # the README's command: pytest, nothing selected or deselected by hand
        assert re.search(r'/bin/pytest" -q\)', run), run

