"""The pytest plugin on real suites: pure-Python libraries' own tests run by pytest, untraced and with ``--handit``, side by side.

Usage::

    python bench/pytest_plugin_suites.py                          # Python 3.12, both suites, one repetition
    python bench/pytest_plugin_suites.py --repeat 3 --out table.md  # min of 3 interleaved runs
    python bench/pytest_plugin_suites.py --python /work/venv/3.13/bin/python --suites more-itertools

The scratch environment, the sdists and the measurements are those of
``bench/real_suites.py`` (same cache directory, ``$HANDIT_BENCH_CACHE``): wall time
and peak RSS of the whole pytest process, and the outcome counts pytest prints,
which must equal the untraced run's (the exit status is 1 otherwise). Each suite
is run from its unpacked sdist as:

- ``untraced``: ``python -m pytest`` on the suite;
- ``pytest --handit timing``: ``-p handit.pytest_plugin --handit --handit-capture=timing``;
- ``pytest --handit``: ``-p handit.pytest_plugin --handit`` (the default capture: arguments).

The plugin traces what it traces by default (the code under the rootdir: the
library, imported from the unpacked source, and its tests), writes its trace
files into the run's scratch directory (counted as the trace size) and shows
the failed tests' call trees. Targets (issue 12): timing at most 1.5x the
untraced wall time, the default capture at most 2.5x, peak RSS within 100 MB.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import real_suites  # noqa: E402  (a sibling script, not a package)
from real_suites import Suite  # noqa: E402

SUITES = {
    # tests/test_legacy.py turns warnings into errors at import, so pytest's warning about
    # collecting test_md_in_html.py's TestSuite class (it has __init__) is a collection error,
    # traced or not; the rest of the suite runs on
    "markdown": Suite("markdown", "3.11.3", "", "pytest", ("-q", "-p", "no:cacheprovider", "--continue-on-collection-errors",
                                                          "tests"), ("pyyaml",)),
    "more-itertools": Suite("more-itertools", "11.2.1", "", "pytest", ("-q", "-p", "no:cacheprovider", "tests")),
}

MODES = ("untraced", "pytest --handit timing", "pytest --handit")


def command(mode: str, suite: Suite, venv_py: str, out_dir: str) -> tuple[list[str], dict[str, str]]:
    """The argv and extra environment of one run (the plugin is loaded by its module name, which
    is also its entry point's name: the scratch environment runs handit from ``--handit``'s
    checkout, not an installed copy)."""
    target = ["-m", "pytest", *suite.args]
    if mode == "untraced":
        return [venv_py, *target], {}
    plugin = ["-p", "handit.pytest_plugin", "--handit", f"--handit-output={out_dir}"]
    if mode == "pytest --handit timing":
        plugin.append("--handit-capture=timing")
    elif mode != "pytest --handit":
        raise ValueError(mode)
    return [venv_py, "-m", "pytest", *plugin, *suite.args], {"HANDIT_REQUIRE_COMPILED": "1"}


if __name__ == "__main__":
    sys.exit(real_suites.main(suites_known=SUITES, modes_known=MODES, command=command, doc=__doc__))
