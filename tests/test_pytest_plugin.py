"""The pytest plugin, run as a user runs it: pytest in a subprocess on a small project (pytester)."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import stat
import sys
import xml.etree.ElementTree as ET

import pytest
from conftest import PY312, child_env

from handit.tracefile import read_trace

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.engine_dependent  # pytest runs in children that trace with the run's engine

PKG = '''
import time


class Cart:
    def __init__(self, items):
        self.items = items

    def total(self, discount=0):
        s = sum(price(i) for i in self.items)
        return apply_discount(s, discount)


def price(item):
    return item["price"] * item.get("qty", 1)


def apply_discount(total, discount):
    check(discount)
    return total - total * discount / 100


def check(discount):
    if discount > 50:
        raise ValueError(f"discount {discount}% too large")


def unrelated(n):
    return n + 1


def slow(n):
    time.sleep(0.05)  # first in the slowest functions, whatever the machine's speed
    return n
'''

TESTS = '''
import pytest
from shop.cart import Cart, price, slow, unrelated


@pytest.fixture
def broken():
    return unrelated("x")


def test_passes():
    for i in range(5):
        unrelated(i)
    slow(1)
    assert Cart([{"price": 3}]).total() == 3


def test_raises_deep():
    cart = Cart([{"price": 10, "qty": 2}, {"price": 5}])
    assert cart.total(10) == 22.5
    assert cart.total(60) == 10


def test_assertion():
    assert price({"price": 4, "qty": 3}) == 11


def test_errors_in_fixture(broken):
    pass


@pytest.mark.skip(reason="not today")
def test_skipped():
    pass


@pytest.mark.xfail(reason="known")
def test_xfails():
    slow(2)
    unrelated(None)


@pytest.mark.parametrize("discount", [0, 20, 70])
def test_param(discount):
    assert Cart([{"price": 10}]).total(discount) <= 10
'''

OUTCOMES = {"passed": 3, "failed": 3, "errors": 1, "skipped": 1, "xfailed": 1}


def _plugin_args() -> list[str]:
    """Load the plugin by name unless the installed handit's entry point already does (CI's install)."""
    entry_points = importlib.metadata.entry_points(group="pytest11")
    return [] if any(ep.value == "handit.pytest_plugin" for ep in entry_points) else ["-p", "handit.pytest_plugin"]


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A project with a package and its tests; children run the handit under test."""
    monkeypatch.setenv("PYTHONPATH", child_env()["PYTHONPATH"])
    pytester.mkpydir("shop")
    pytester.path.joinpath("shop", "cart.py").write_text(PKG)
    pytester.makepyfile(test_cart=TESTS)
    return pytester


ASYNCIO = ["-o", "asyncio_default_fixture_loop_scope=function"] if importlib.util.find_spec("pytest_asyncio") else []
"""pytest-asyncio (the test extra) warns at every start while this setting is unset (an unknown setting without it)."""


def run(project: pytest.Pytester, *args: str) -> pytest.RunResult:
    return project.runpytest_subprocess(*_plugin_args(), "-p", "no:cacheprovider", *ASYNCIO, *args, timeout=120)


def section_of(output: str, test: str) -> str:
    """The call-tree section printed in the report of ``test`` (a node id, in test_cart.py if no file is named)."""
    head = output.index(f"traced in {test if '::' in test else 'test_cart.py::' + test}")
    end = output.find("\n___", head)
    end = output.find("\n===", head) if end < 0 else min(end, output.find("\n===", head))
    return output[head:end]


def trace_sessions(path: str) -> dict[str, list[dict]]:
    """Events of each session in a trace file, by tag."""
    events = read_trace(path)
    tags = {e["session_id"]: e["tag"] for e in events if e["type"] == "session_start"}
    out: dict[str, list[dict]] = {}
    for e in events:
        out.setdefault(tags.get(e.get("session_id")), []).append(e)
    return out


def test_off_by_default(project: pytest.Pytester) -> None:
    result = run(project)
    result.assert_outcomes(**OUTCOMES)
    assert "handit call tree" not in result.stdout.str()
    assert "==== handit ====" not in result.stdout.str()
    assert not project.path.joinpath(".handit").exists()


def test_failure_sections_outcomes_and_file(project: pytest.Pytester, engine: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    eng, src = engine
    monkeypatch.setenv("HANDIT_ENGINE", eng)
    monkeypatch.setenv("HANDIT_SOURCE", src)
    result = run(project, "--handit")
    result.assert_outcomes(**OUTCOMES)  # the same outcomes as without the plugin (test above)
    out = result.stdout.str()

    deep = section_of(out, "test_raises_deep")
    lines = deep.splitlines()
    # the branch that raised, with arguments, return values and the exception, indented by depth
    assert lines[1].startswith("test_raises_deep() raised ValueError: discount 60% too large")
    assert any(line.startswith("├─ Cart.total(self=<Cart>, discount=10) → 22.5") for line in lines)
    assert any(line.startswith("└─ Cart.total(self=<Cart>, discount=60) raised ValueError") for line in lines)
    assert any(line.startswith("   └─ apply_discount(total=25, discount=60) raised ValueError") for line in lines)
    assert any(line.startswith("      └─ check(discount=60) raised ValueError: discount 60% too large") for line in lines)
    assert "unrelated" not in deep  # only the failing test's own calls

    assertion = section_of(out, "test_assertion")
    assert "test_assertion() raised AssertionError: assert 12 == 11" in assertion
    assert "├─ price(item={'price': 4, 'qty': 3}) → 12" in assertion  # the value the assertion compared

    param = section_of(out, "test_param[70]")
    assert "Cart.total(self=<Cart>, discount=70)" in param
    assert "traced in test_cart.py::test_passes" not in out  # passing tests get no section by default
    assert "traced in test_cart.py::test_xfails" not in out

    path = project.path / ".handit" / "pytest-main.handit"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sessions = trace_sessions(str(path))
    ran = {"test_cart.py::test_passes", "test_cart.py::test_raises_deep", "test_cart.py::test_assertion",
           "test_cart.py::test_xfails", "test_cart.py::test_param[0]", "test_cart.py::test_param[20]",
           "test_cart.py::test_param[70]"}
    assert set(sessions) == ran  # a session per test that ran its call; none for the skipped and the erroring one
    passes = [e for e in sessions["test_cart.py::test_passes"] if e["type"] == "call"]
    assert [e["func"] for e in passes].count("unrelated") == 5
    assert passes[0]["func"] == "test_passes" and passes[0]["module"] == "test_cart"  # pytest itself is not traced
    assert not any(e["module"].startswith(("_pytest", "pytest", "pluggy")) for e in passes)

    summary = out[out.index("==== handit ===="):]
    assert "7 tests traced" in summary
    assert os.path.join(".handit", "pytest-main.handit") in summary
    row = next(line for line in summary.splitlines() if "shop.cart.slow" in line)
    assert "2 calls" in row.split("shop.cart.slow")[1]  # one in test_passes, one in test_xfails


def test_junit_xml_has_the_tree_and_the_session(project: pytest.Pytester) -> None:
    result = run(project, "--handit", "--junitxml=report.xml")
    result.assert_outcomes(**OUTCOMES)
    root = ET.parse(project.path / "report.xml").getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    failure = cases["test_raises_deep"].find("failure")
    assert failure is not None and "check(discount=60) raised ValueError" in failure.text
    props = {p.get("name"): p.get("value") for p in cases["test_passes"].iter("property")}
    assert props["handit_trace"].endswith(os.path.join(".handit", "pytest-main.handit"))
    assert len(props["handit_session"]) == 36


def test_show_all_and_none(project: pytest.Pytester) -> None:
    shown = run(project, "--handit", "--handit-show=all", "-rP").stdout.str()
    passing = shown[shown.index("traced in test_cart.py::test_passes"):]
    assert "unrelated(n=4) → 5  (the last of 5 calls" in passing
    result = run(project, "--handit", "--handit-show=none")
    result.assert_outcomes(**OUTCOMES)
    assert "handit call tree" not in result.stdout.str()
    assert "==== handit ====" in result.stdout.str()


def test_ini_setting_turns_it_on(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\nhandit = true\n")
    # loaded by name as well as by its entry point (named after the module): registered once
    result = project.runpytest_subprocess("-p", "handit.pytest_plugin", "-p", "no:cacheprovider", *ASYNCIO, timeout=120)
    result.assert_outcomes(**OUTCOMES)
    assert "traced in test_cart.py::test_raises_deep" in result.stdout.str()


def test_include_and_exclude(project: pytest.Pytester) -> None:
    # only check() named: the tests are traced anyway, the functions between them are not
    result = run(project, "--handit", r"--handit-include=^shop\.cart::check$", "-k", "raises_deep")
    section = section_of(result.stdout.str(), "test_raises_deep")
    assert "└─ check(discount=60) raised ValueError" in section
    assert "Cart.total" not in section and "apply_discount" not in section
    result = run(project, "--handit", r"--handit-exclude=::check$", "-k", "raises_deep")
    section = section_of(result.stdout.str(), "test_raises_deep")
    assert "apply_discount(total=25, discount=60) raised ValueError" in section
    assert "check(" not in section


def test_bad_option_is_a_usage_error(project: pytest.Pytester) -> None:
    result = run(project, "--handit", "--handit-include=(")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--handit-include='(' is not a valid regular expression" in result.stderr.str()


def test_fixtures_are_traced_on_request(project: pytest.Pytester) -> None:
    result = run(project, "--handit", "--handit-fixtures", "-k", "fixture")
    result.assert_outcomes(errors=1)
    section = section_of(result.stdout.str(), "test_errors_in_fixture (setup)")
    assert "broken() raised TypeError" in section
    assert "└─ unrelated(n='x') raised TypeError" in section


def test_handit_session_fixture(project: pytest.Pytester) -> None:
    project.makepyfile(test_fixture='''
        from shop.cart import unrelated

        def test_own_session(handit_session):
            unrelated(1)
            unrelated(2)
            calls = [e["func"] for e in handit_session.events if e["type"] == "call"]
            assert calls.count("unrelated") == 2, calls
            assert handit_session.tag == "test_fixture.py::test_own_session"
            print("engine", handit_session.engine, handit_session.source)
    ''')
    for args in ((), ("--handit",)):
        result = run(project, "test_fixture.py", "-s", *args)
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines(["*engine *"])


def test_xdist_two_workers(project: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    result = run(project, "--handit", "-n", "2")
    result.assert_outcomes(**OUTCOMES)
    out = result.stdout.str()
    assert "check(discount=60) raised ValueError: discount 60% too large" in section_of(out, "test_raises_deep")
    files = sorted(p.name for p in (project.path / ".handit").glob("pytest-*.handit"))
    assert set(files) <= {"pytest-gw0.handit", "pytest-gw1.handit"} and files
    tags: set[str] = set()
    for name in files:
        tags |= set(trace_sessions(str(project.path / ".handit" / name)))
    assert len(tags) == 7
    summary = out[out.index("==== handit ===="):]
    assert "7 tests traced" in summary
    row = next(line for line in summary.splitlines() if "shop.cart.slow" in line)
    assert "2 calls" in row.split("shop.cart.slow")[1]  # added up over the workers


@pytest.mark.parametrize("core", ["ctrace", "sysmon"] if PY312 else ["ctrace"])
def test_with_pytest_cov(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, core: str) -> None:
    pytest.importorskip("pytest_cov")
    monkeypatch.setenv("COVERAGE_CORE", core)
    result = run(project, "--handit", "--cov=shop", "--cov-report=term-missing")
    result.assert_outcomes(**OUTCOMES)
    out = result.stdout.str()
    assert "check(discount=60) raised ValueError" in section_of(out, "test_raises_deep")
    # coverage saw every line of the package: both tools measured the same run
    row = next(line for line in out.splitlines() if line.startswith("shop" + os.sep + "cart.py "))
    assert row.split()[2:4] == ["0", "100%"], row


def test_pdb(project: pytest.Pytester) -> None:
    result = run(project, "--handit", "--pdb", "-k", "raises_deep")
    out = result.stdout.str()
    assert "check(discount=60) raised ValueError" in section_of(out, "test_raises_deep")
    assert "entering PDB" in out


def test_async_tests(project: pytest.Pytester) -> None:
    pytest.importorskip("pytest_asyncio")  # in the test extra: CI runs this
    project.makepyfile(test_async='''
        import asyncio
        import pytest
        from shop.cart import check

        async def fetch(n):
            await asyncio.sleep(0)
            check(n)
            return n

        @pytest.mark.asyncio
        async def test_async_fails():
            assert await fetch(1) == 1
            await asyncio.gather(fetch(2), fetch(80))
    ''')
    result = run(project, "--handit", "test_async.py")
    result.assert_outcomes(failed=1)
    section = section_of(result.stdout.str(), "test_async.py::test_async_fails")
    assert "fetch(n=1) → 1" in section
    # the gathered calls ran as tasks beside each other: each on a line of its own, marked
    assert "fetch(n=2) → 2" in section and "[concurrent: task Task-" in section
    assert "check(discount=80) raised ValueError: discount 80% too large" in section


def test_unconfigured_plugin_costs_nothing() -> None:
    """Importing the plugin (pytest does, for every run, once handit is installed) starts nothing."""
    import subprocess

    code = ("import sys, handit.pytest_plugin; "
            "print(sorted(m for m in sys.modules if m.startswith('handit')))")
    out = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['handit', 'handit.pytest_plugin']"


def test_a_long_test_is_folded_in_bounded_memory() -> None:
    """200,000 calls before the failure: a few lines, and at most 2 x KEEP calls kept under a parent."""
    from handit.renderers.failure import KEEP, build_calls, render_failure

    def events(n: int):
        yield {"type": "call", "call_id": 1, "parent_id": None, "func": "test_long", "module": "t", "args_preview": {}}
        for i in range(2, n + 2):
            yield {"type": "call", "call_id": i, "parent_id": 1, "func": "step", "module": "t", "args_preview": {"i": str(i)}}
            yield {"type": "return", "call_id": i, "dt_ns": 10, "locals_preview": {"return": "None"}}
        yield {"type": "call", "call_id": n + 2, "parent_id": 1, "func": "last", "module": "t", "args_preview": {}}
        yield {"type": "exception", "call_id": n + 2, "type_name": "KeyError", "message": "'k'"}
        yield {"type": "return", "call_id": n + 2, "dt_ns": 10, "raised": True}
        yield {"type": "exception", "call_id": 1, "type_name": "KeyError", "message": "'k'"}
        yield {"type": "return", "call_id": 1, "dt_ns": 99, "raised": True}

    roots = build_calls(events(200_000))
    assert len(roots[0].children) <= 2 * KEEP and roots[0].size() == 200_002
    lines = render_failure(events(200_000)).splitlines()
    assert lines[0] == "test_long() raised KeyError: 'k'  [99 ns]"
    earlier = re.fullmatch(r"├─ … ([\d,]+) earlier calls: step ×([\d,]+)", lines[1])
    run = re.fullmatch(r"├─ step\(i=200001\) → None  \(the last of (\d+) calls, [\d.]+ [nµ]s in all\)", lines[2])
    assert earlier and run, lines
    assert int(earlier[1].replace(",", "")) + int(run[1]) == 200_000
    assert lines[3:] == ["└─ last() raised KeyError: 'k'  [10 ns]"]


def test_long_tests_keep_little_in_memory(project: pytest.Pytester) -> None:
    """A test's trace waits in memory only up to 64 KiB (the rest is in the file): a test that
    measures its allocations with tracemalloc passes, and a long failed test's tree is read back."""
    project.makepyfile(test_long='''
        import os
        import tracemalloc
        import pytest
        from shop.cart import unrelated, check

        def test_allocations_measured():
            if os.environ.get("HANDIT_ENGINE") == "fallback":
                pytest.skip("the pure-Python engine's pending records are Python objects, which tracemalloc counts")
            tracemalloc.start()
            try:
                for i in range(30_000):
                    unrelated(i)
                retained = tracemalloc.get_traced_memory()[0]
            finally:
                tracemalloc.stop()
            assert retained < 256 * 1024

        @pytest.fixture
        def earlier_bytes_zeroed():
            """Bytes of the earlier tests' sessions overwritten: reading them would warn."""
            path = os.path.join(".handit", "pytest-main.handit")
            size = os.path.getsize(path)
            with open(path, "r+b") as f:
                f.seek(size // 2)
                f.write(bytes(min(4096, size // 4)))

        def test_long_then_fails(earlier_bytes_zeroed):
            for i in range(30_000):
                unrelated(i)
            check(99)
    ''')
    result = run(project, "--handit", "test_long.py")
    fallback = os.environ.get("HANDIT_ENGINE") == "fallback"
    result.assert_outcomes(passed=0 if fallback else 1, skipped=1 if fallback else 0, failed=1)
    assert "30,002 calls traced in test_long.py::test_long_then_fails" in result.stdout.str()
    section = section_of(result.stdout.str(), "test_long.py::test_long_then_fails")
    assert "├─ unrelated(n=29999) → 30000  (the last of" in section
    assert "└─ check(discount=99) raised ValueError: discount 99% too large" in section
    assert "TraceFileWarning" not in result.stdout.str()  # its tree was read from where its session began


def step(i: int) -> int:
    return i


def test_a_session_read_back_skips_the_earlier_ones(engine: tuple[str, str], tmp_path) -> None:
    """A session whose blocks are only in its trace file (a test's, past 64 KiB) is read from
    where it began: the earlier sessions' bytes, damaged here, are not read (they would warn)."""
    import handit
    from handit.tracefile import TraceFileWarning

    path = tmp_path / "t.handit"
    handit.configure(output_file=str(path), capture="timing")
    with handit.session("earlier"):
        for i in range(20_000):
            step(i)
    size = path.stat().st_size
    assert size > 100_000
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(bytes(4096))
    with handit.session("failed") as failed:
        for i in range(3):
            step(i)
    assert failed._blocks == [] and failed._spill is None  # only in the file
    assert [e["func"] for e in failed.events if e["type"] == "call"] == ["step"] * 3
    with pytest.warns(TraceFileWarning, match="damaged"):  # the whole file, read from its start
        read_trace(str(path))


def test_handit_run_of_pytest_adds_no_warning(tmp_path) -> None:
    """`handit run -m pytest` imports handit before pytest loads handit's plugin: pytest must not warn
    that it cannot rewrite handit (a warning changed the outcome line of real suites)."""
    import subprocess

    (tmp_path / "test_a.py").write_text("def test_a():\n    assert 1\n")
    # (-p no:asyncio: pytest-asyncio's warning about its unset loop scope would be an error here)
    r = subprocess.run([sys.executable, "-m", "handit", "run", "--no-summary", "-o", "t.handit", "-m", "pytest", "-q",
                        "-p", "no:cacheprovider", "-p", "no:asyncio", "-W", "error", "test_a.py"],
                       cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout and "warning" not in r.stdout, r.stdout


def test_the_test_is_shown_raising_what_pytest_saw() -> None:
    """Before 3.12 a coroutine whose await raised is recorded as suspended: the failure section
    still starts at the test, raising what pytest reported, with the calls it made."""
    from handit.renderers.failure import render_failure

    events = [
        {"type": "call", "call_id": 1, "parent_id": None, "func": "test_async_fails", "module": "t", "args_preview": {}},
        {"type": "call", "call_id": 2, "parent_id": 1, "func": "fetch", "module": "t", "args_preview": {"n": "1"}},
        {"type": "return", "call_id": 2, "dt_ns": 10, "locals_preview": {"return": "1"}},
        {"type": "call", "call_id": 3, "parent_id": None, "func": "fetch", "module": "t", "args_preview": {"n": "80"}},
        {"type": "exception", "call_id": 3, "type_name": "ValueError", "message": "too large"},
        {"type": "return", "call_id": 3, "dt_ns": 10, "raised": True},
        {"type": "return", "call_id": 1, "dt_ns": 99, "suspended_ns": 50, "locals_preview": {}},  # as a suspension
    ]
    plain = render_failure(events).splitlines()
    assert plain[0].startswith("fetch(n=80) raised ValueError")
    lines = render_failure(events, test_raised=("test_async_fails", "ValueError", "too large")).splitlines()
    assert lines[:3] == ["test_async_fails() raised ValueError: too large  [99 ns]", "├─ fetch(n=1) → 1  [10 ns]",
                         "in another task or thread, fetch() raised it first:"]
    assert lines[3].startswith("   fetch(n=80) raised ValueError: too large")
