"""pytest plugin: options -> Config -> a session per test; failed tests' reports get their call tree.

Registered through the ``pytest11`` entry point and off by default: ``pytest --handit``
or ``handit = true`` in the ini file turns it on (docs/pytest.md). While off, this
module only adds its options and the ``handit_session`` fixture; nothing is traced.
"""
from __future__ import annotations

import os
import re
from typing import Any, Iterator

import pytest

__all__ = ["HanditPlugin", "handit_session", "pytest_addoption", "pytest_configure"]

PLUGIN_NAME = "handit-tracer"
SECTION = "handit call tree"
RUNNER_MODULES = r"^(?:_pytest|pytest|pluggy|py|xdist|execnet|pytest_cov|coverage|pytest_asyncio|_hypothesis_pytestplugin)(?:\.[^:]*)?::"
"""Never traced by the plugin, wherever they are installed (a source checkout of pytest is under its rootdir)."""
SITE_PACKAGES = r"|[\\/](?:site|dist)-packages[\\/]"
"""The part of :data:`handit.config.DEFAULT_EXCLUDE_FILES` an explicit ``--handit-include`` lifts."""
SESSION_MEMORY = 64 * 1024
"""HANDIT_MAX_SESSION_MEMORY for test sessions (unless set): past it a session's blocks are read
back from the trace file the plugin writes anyway. A test that measures its own allocations
with tracemalloc counts what handit keeps in memory while it runs: with the 16 MiB default,
more-itertools' ``test_repeated_zero_cache_peek_has_bounded_memory`` saw 1.4 MB retained
(its limit: 256 KiB) and failed; with 64 KiB it passes. A failed test that made more than
~10,000 calls pays for it: its tree is read back from the file (~1 s per 400 MB)."""
TOP_FUNCTIONS = 10
WORKER_FUNCTIONS = 50  # a worker sends its 50 busiest functions to the controller (xdist)


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ``--handit*`` options and the ``handit`` ini setting."""
    group = parser.getgroup("handit", "handit: trace each test's calls (docs/pytest.md)")
    group.addoption("--handit", action="store_true", default=False,
                    help="trace every test in its own handit session; failed tests' reports show their calls")
    group.addoption("--handit-include", metavar="REGEX", default=None,
                    help="trace the functions whose module::qualname matches (default: the code under the rootdir, "
                         "not installed packages); the test modules are always traced")
    group.addoption("--handit-exclude", metavar="REGEX", default=None,
                    help="also skip the functions whose module::qualname matches")
    group.addoption("--handit-output", metavar="DIR", default=None,
                    help="directory for the trace files, one per process (default: .handit/ under the rootdir)")
    group.addoption("--handit-show", choices=("failed", "all", "none"), default="failed",
                    help="which reports get a call-tree section (default: failed)")
    group.addoption("--handit-fixtures", action="store_true", default=False,
                    help="trace fixtures' setup and teardown too (default: the test call only)")
    group.addoption("--handit-capture", choices=("timing", "args"), default=None,
                    help="what a call records (default: HANDIT_CAPTURE, else args)")
    parser.addini("handit", "trace tests with handit, as --handit does", type="bool", default=False)


def pytest_configure(config: pytest.Config) -> None:
    """Register the tracer when ``--handit`` or the ini setting asks for it."""
    if config.getoption("handit") or config.getini("handit"):
        config.pluginmanager.register(HanditPlugin(config), PLUGIN_NAME)


@pytest.fixture
def handit_session(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The test's own :class:`handit.sessions.Session`.

    With ``--handit`` it is the session the plugin records the test in (started here, at
    this fixture's setup, if it had not started yet; ended after teardown). Without it,
    a session tagged with the test's node id runs from this fixture's setup to its
    teardown, in memory only.
    """
    plugin = request.config.pluginmanager.get_plugin(PLUGIN_NAME)
    if plugin is not None:
        yield plugin.session_for(request.node)
        return
    from . import api

    session = api.start(request.node.nodeid)
    try:
        yield session
    finally:
        api.stop(session)


def _shown_path(path: str) -> str:
    """``path`` relative to the working directory when it lies under it, else absolute."""
    rel = os.path.relpath(path)
    return path if rel.startswith(os.pardir) else rel


def _raised_by(item: pytest.Item, call: pytest.CallInfo[None]) -> tuple[str, str, str] | None:
    """``(test function, exception type, message)`` when the test function itself raised."""
    if call.when != "call" or call.excinfo is None:
        return None
    exc = call.excinfo.value
    try:
        message = str(exc)
    except Exception:  # a failing __str__ costs the message, not the tree
        message = ""
    return getattr(item, "originalname", item.name), type(exc).__qualname__, message


class _Trace:
    """One test's session and how it is run."""

    __slots__ = ("session", "until_teardown")

    def __init__(self, session: Any, until_teardown: bool) -> None:
        self.session = session
        self.until_teardown = until_teardown


class HanditPlugin:
    """The tracer for one pytest run (or one xdist worker); the controller only reports.

    Args:
        config: the pytest config; ``--handit*`` options are read from it.
    Raises:
        pytest.UsageError: an option's value is not valid (the message names it).
    """

    def __init__(self, config: pytest.Config) -> None:
        from . import config as settings
        from .renderers.summary import Stats

        self.config = config
        self.show = config.getoption("handit_show")
        self.fixtures = config.getoption("handit_fixtures")
        worker = getattr(config, "workerinput", {}).get("workerid")
        self.controller = worker is None and config.getoption("dist", "no") not in ("no", None)
        out = config.getoption("handit_output")
        base_dir = str(config.invocation_params.dir) if out else str(config.rootpath)
        self.out_dir = os.path.abspath(os.path.join(base_dir, out or ".handit"))
        self.path = os.path.join(self.out_dir, f"pytest-{worker or 'main'}.handit")
        self.traces: dict[str, _Trace] = {}
        self.stats = Stats()
        self.tests = 0
        self.problems: list[str] = []
        self.workers: list[dict[str, Any]] = []
        self.previous = settings.get_config()
        self.user_include = config.getoption("handit_include")
        if worker is None:
            self._clear_old_files()
        if self.controller:
            return
        try:
            self.changed = settings.configure(**self._settings(self.previous, config))
        except settings.ConfigError as exc:
            raise pytest.UsageError(f"handit: {exc}") from None

    def _settings(self, base: Any, config: pytest.Config) -> dict[str, Any]:
        from .config import DEFAULT_EXCLUDE_FILES, Config

        for option in ("handit_include", "handit_exclude"):
            value = config.getoption(option)
            if value is not None:
                try:
                    re.compile(value)
                except re.error as exc:
                    flag = "--" + option.replace("_", "-")
                    raise pytest.UsageError(f"{flag}={value!r} is not a valid regular expression: {exc}") from None
        exclude = "|".join(p for p in (base.exclude, RUNNER_MODULES, config.getoption("handit_exclude")) if p)
        files = base.exclude_files
        include = self.user_include
        if include is None:
            roots = {str(config.rootpath), os.path.realpath(config.rootpath)}
            outside = "|".join(re.escape(r) for r in sorted(roots))
            files = "|".join(p for p in (files, rf"^(?!(?:{outside})[\\/])") if p)
        elif files == DEFAULT_EXCLUDE_FILES:
            files = files.replace(SITE_PACKAGES, "")  # named functions are traced wherever installed
        changes: dict[str, Any] = {"exclude": exclude, "exclude_files": files, "include": include,
                                   "output_file": self.path, "output_format": "handit"}
        if base.max_session_memory == Config.__dataclass_fields__["max_session_memory"].default:
            changes["max_session_memory"] = SESSION_MEMORY
        capture = config.getoption("handit_capture")
        if capture is not None:
            changes["capture"] = capture
        return changes

    def _clear_old_files(self) -> None:
        """A run's trace files replace the previous run's (they are appended to while it runs)."""
        try:
            os.makedirs(self.out_dir, exist_ok=True)
            ignore = os.path.join(self.out_dir, ".gitignore")
            if not os.path.exists(ignore):
                with open(ignore, "w") as f:
                    f.write("# written by handit's pytest plugin\n*\n")
            for name in os.listdir(self.out_dir):
                if name.startswith("pytest-") and name.endswith(".handit"):
                    os.unlink(os.path.join(self.out_dir, name))
        except OSError as exc:
            self.problems.append(f"could not prepare {self.out_dir}: {exc}")

    # ---- the run --------------------------------------------------------------------------------

    def pytest_report_header(self, config: pytest.Config) -> str:
        what = f"--handit-include {self.user_include!r}" if self.user_include else f"code under {config.rootpath}"
        return f"handit: tracing {what}; traces in {self.out_dir}"

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """With ``--handit-include``, the test modules are traced too (the tests are what failed)."""
        if self.controller or self.user_include is None:
            return
        modules = sorted({m.__name__ for m in (getattr(item, "module", None) for item in session.items) if m is not None})
        if modules:
            from .config import configure

            tests = "^(?:" + "|".join(map(re.escape, modules)) + ")::"
            configure(include=f"(?:{self.user_include})|{tests}")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Iterator[None]:
        if self.fixtures:
            self._begin(item, until_teardown=True)
        yield

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        started = item.nodeid not in self.traces and self._begin(item, until_teardown=False)
        yield
        if started:
            self._end(item)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Iterator[None]:
        yield
        self._end(item)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
        outcome = yield
        trace = self.traces.get(item.nodeid)
        if trace is None or self.show == "none":
            return
        report = outcome.get_result()
        if report.failed or (self.show == "all" and report.when == "call"):
            try:
                self._attach(report, trace.session, _raised_by(item, call))
            except Exception as exc:
                self.problems.append(f"no call tree for {item.nodeid}: {exc!r}")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_exception_interact(self, node: Any, call: Any, report: Any) -> Iterator[None]:
        # --pdb: what the user runs at the prompt is not the test's (with --handit-fixtures
        # the session is still open here)
        from .api import suppressed

        with suppressed():
            yield

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        trace = self.traces.pop(nodeid, None)
        if trace is not None and trace.session.t1_ns is None:
            self._stop(nodeid, trace)

    def session_for(self, item: pytest.Item) -> Any:
        """The session of ``item``, started now (until teardown) if it has not started yet."""
        trace = self.traces.get(item.nodeid)
        if trace is None:
            self._begin(item, until_teardown=True)
            trace = self.traces.get(item.nodeid)
        return trace.session if trace is not None else None

    def _begin(self, item: pytest.Item, until_teardown: bool) -> bool:
        from . import api

        try:
            session = api.start(item.nodeid)
        except Exception as exc:
            self.problems.append(f"{item.nodeid} not traced: {exc!r}")
            return False
        self.traces[item.nodeid] = _Trace(session, until_teardown)
        item.user_properties.append(("handit_session", session.id))
        item.user_properties.append(("handit_trace", self.path))
        return True

    def _end(self, item: pytest.Item) -> None:
        trace = self.traces.get(item.nodeid)
        if trace is not None and trace.session.t1_ns is None:
            self._stop(item.nodeid, trace)

    def _stop(self, nodeid: str, trace: _Trace) -> None:
        from . import api

        session = trace.session
        try:
            api.stop(session)
            self.stats.add_fold(session.fold(), session._codes.code_info, session.id)
            self.tests += 1
        except Exception as exc:
            self.problems.append(f"session of {nodeid} not finished: {exc!r}")

    def _attach(self, report: pytest.TestReport, session: Any, raised: tuple[str, str, str] | None) -> None:
        from .renderers.failure import build_calls, render_failure, render_tree

        width = max(self.config.get_terminal_writer().fullwidth, 100)
        events = session.iter_calls()  # not kept: a test may make millions of calls
        if report.failed:
            tree = render_failure(events, width=width, test_raised=raised)
        else:
            tree = render_tree(build_calls(events), width=width)
        calls = session.stats["calls"] if session.t1_ns is not None else session.fold()["counts"].get("calls", 0)
        head = (f"{calls:,} call{'s' if calls != 1 else ''} traced in {report.nodeid} ({report.when}); "
                f"all of them: handit show {_shown_path(self.path)} --session {session.id[:8]}")
        text = head + "\n" + (tree or "(no traced call: the code it ran is outside what --handit-include selects)")
        longrepr = report.longrepr
        if report.failed and hasattr(longrepr, "addsection"):
            longrepr.addsection(SECTION, text)  # terminal, --pdb, JUnit XML's failure text, xdist
        else:
            report.sections.append((f"{SECTION} ({report.when})", text))

    # ---- the end ---------------------------------------------------------------------------------

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput["handit"] = {
                "file": self.path, "tests": self.tests, "calls": self.stats.calls, "problems": self.problems,
                "funcs": [[f.module, f.func, f.calls, f.total_ns, f.own_ns] for f in self.stats.top(WORKER_FUNCTIONS)],
            }

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist controller: a worker's files and figures (its ``workeroutput``)."""
        data = getattr(node, "workeroutput", {}).get("handit")
        if data:
            self.workers.append(data)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from .renderers import fmt_ns
        from .renderers.summary import FuncStats

        if getattr(self.config, "workerinput", None) is not None:
            return
        files, tests, calls = [], self.tests, self.stats.calls
        funcs = {(f.module, f.func): f for f in self.stats.functions.values()}
        problems = list(self.problems)
        for data in self.workers:
            files.append(data["file"])
            tests += data["tests"]
            calls += data["calls"]
            problems.extend(data["problems"])
            for module, func, n, total, own in data["funcs"]:
                f = funcs.get((module, func))
                if f is None:
                    f = funcs[(module, func)] = FuncStats(module, func, "?", 0)
                f.calls += n
                f.total_ns += total
                f.own_ns += own
        if not self.controller:
            files.append(self.path)
        tw = terminalreporter
        tw.write_sep("=", "handit")
        shown = [_shown_path(f) for f in sorted(files) if os.path.exists(f)]
        tw.write_line(f"{tests} test{'s' if tests != 1 else ''} traced, {calls:,} calls; traces: "
                      f"{', '.join(shown) or '(none written)'}")
        if shown:
            tw.write_line(f"read one with: handit show {shown[0]} --tag <test node id>")
        top = sorted(funcs.values(), key=lambda f: (f.total_ns, f.calls), reverse=True)[:TOP_FUNCTIONS]
        if top:
            tw.write_line("slowest traced functions (total time across the run):")
            width = min(max(len(f.name) for f in top), 70)
            for f in top:
                name = f.name if len(f.name) <= width else "…" + f.name[-(width - 1):]
                tw.write_line(f"  {name:<{width}}  {f.calls:>9,} calls  {fmt_ns(f.total_ns):>9} total  {fmt_ns(f.own_ns):>9} own")
        for problem in problems[:10]:
            tw.write_line(f"handit: {problem}", yellow=True)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        from . import config as settings
        from .sessions import release_idle

        for nodeid, trace in list(self.traces.items()):
            if trace.session.t1_ns is None:
                self._stop(nodeid, trace)
        self.traces.clear()
        if not self.controller:
            prev = self.previous
            settings.configure(exclude=prev.exclude, exclude_files=prev.exclude_files, include=prev.include,
                               output_file=prev.output_file, output_format=prev.output_format, capture=prev.capture,
                               max_session_memory=prev.max_session_memory)
            release_idle()
