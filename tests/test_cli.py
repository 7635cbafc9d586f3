"""The command line, in subprocesses: `handit run` leaves the program unchanged; `show` and `export` read traces."""
from __future__ import annotations

import glob
import json
import os
import random
import subprocess
import sys
import textwrap
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from conftest import child_env

from handit.reader import BlockEncoder
from handit.tracefile import TraceFileWriter, detect_format, read_trace

pytestmark = pytest.mark.engine_dependent  # its tests run an engine outside the `engine` fixture

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "examples" / "agent.py"
# every Python: before 3.12 the profile-function source learns it when the exception reaches
# the caller (the agent's `except HTTPError` handler makes no call); the message is HTTPError's own
EXC = "HTTPError"
EXC_MESSAGE = "HTTP Error 404: Not Found"
PY312 = sys.version_info >= (3, 12)
M = "Agent."  # methods carry their class on every Python (found from the module before 3.11)
S = "FakeAPI."


def _env(**extra: str) -> dict[str, str]:
    # the run's engine choice (HANDIT_ENGINE, HANDIT_REQUIRE_COMPILED) carries over: the pure-Python
    # pass runs the CLI on the pure engine too; every other setting comes from the test
    keep = ("HANDIT_ENGINE", "HANDIT_REQUIRE_COMPILED")
    env = {k: v for k, v in child_env().items() if (k in keep or not k.startswith("HANDIT_")) and k != "NO_COLOR"}
    env["PYTHONWARNINGS"] = "default"
    env.update(extra)
    return env


def handit(*args: str, cwd: Path, stdin: bytes = b"", timeout: float = 60, **env: str) -> subprocess.CompletedProcess[bytes]:
    """``python -m handit ARGS`` in ``cwd``."""
    return subprocess.run([sys.executable, "-m", "handit", *args], cwd=cwd, input=stdin, capture_output=True,
                          env=_env(**env), timeout=timeout)


def python(*args: str, cwd: Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """The same program without handit."""
    return subprocess.run([sys.executable, *args], cwd=cwd, input=stdin, capture_output=True, env=_env(), timeout=60)


def _write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


PROGRAMS = {
    "ok": """
        import sys
        def shout(text):
            return text.upper()
        data = sys.stdin.read()
        print(shout(data), end="")
        print("argv:", sys.argv[1:])
        sys.stderr.write("to stderr\\n")
        sys.stdout.buffer.write("bytes ✓ \\u00e9\\n".encode())
        """,
    "exit3": """
        import sys
        def bail(code):
            print("bailing out")
            sys.exit(code)
        bail(3)
        """,
    "exit_message": """
        import sys
        sys.exit("fatal: giving up")
        """,
    "uncaught": """
        def inner(x):
            raise RuntimeError(f"boom {x}")
        def outer():
            inner(42)
        print("before")
        outer()
        """,
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_program_behaves_the_same(tmp_path: Path, name: str) -> None:
    script = _write(tmp_path / "prog.py", PROGRAMS[name])
    stdin = b"hello\nworld\n"
    plain = python("prog.py", "a", "--b", cwd=tmp_path, stdin=stdin)
    traced = handit("run", "--no-summary", "-o", "t.handit", "prog.py", "a", "--b", cwd=tmp_path, stdin=stdin)
    assert traced.returncode == plain.returncode == {"ok": 0, "exit3": 3, "exit_message": 1, "uncaught": 1}[name]
    assert traced.stdout == plain.stdout
    assert traced.stderr == plain.stderr  # the traceback too: no handit or runpy frames in it
    assert script.exists() and detect_format(str(tmp_path / "t.handit")) == "handit"


def test_summary_goes_to_stderr_only(tmp_path: Path) -> None:
    _write(tmp_path / "prog.py", PROGRAMS["uncaught"])
    plain = python("prog.py", cwd=tmp_path)
    traced = handit("run", "-o", "t.handit", "prog.py", cwd=tmp_path)
    assert traced.returncode == 1 and traced.stdout == plain.stdout
    err = traced.stderr.decode()
    assert err.startswith(plain.stderr.decode())  # the program's traceback first, then the summary
    summary = err[len(plain.stderr):]
    assert "Busiest functions" in summary and "inner" in summary and "outer" in summary
    assert "RuntimeError" in summary and "boom 42" in summary
    assert "t.handit" in summary and "handit show" in summary


def test_argv_path_and_main_match_python(tmp_path: Path) -> None:
    _write(tmp_path / "sub" / "helper.py", "VALUE = 'helper imported'\n")
    _write(tmp_path / "sub" / "prog.py", """
        import json, sys
        import helper  # found through sys.path[0], the script's directory
        print(json.dumps({"argv": sys.argv, "path0": sys.path[0], "name": __name__, "helper": helper.VALUE,
                          "main": sys.modules["__main__"].__dict__.get("__file__")}))
        """)
    plain = python("sub/prog.py", "x", "-y", "--z=1", cwd=tmp_path)
    traced = handit("run", "--no-summary", "-o", "t.jsonl", "sub/prog.py", "x", "-y", "--z=1", cwd=tmp_path)
    assert traced.returncode == plain.returncode == 0, traced.stderr
    assert json.loads(traced.stdout) == json.loads(plain.stdout)
    assert json.loads(traced.stdout)["argv"] == ["sub/prog.py", "x", "-y", "--z=1"]


def test_module_mode(tmp_path: Path) -> None:
    _write(tmp_path / "pkg" / "__init__.py", "")
    _write(tmp_path / "pkg" / "tool.py", """
        import json, sys
        def work(n):
            return n * 2
        if __name__ == "__main__":
            print(json.dumps({"argv": sys.argv, "name": __name__, "path0": sys.path[0], "result": work(21)}))
            sys.exit(5)
        """)
    plain = python("-m", "pkg.tool", "a", "-b", cwd=tmp_path)
    traced = handit("run", "--no-summary", "-o", "m.jsonl", "-m", "pkg.tool", "a", "-b", cwd=tmp_path)
    assert traced.returncode == plain.returncode == 5
    assert json.loads(traced.stdout) == json.loads(plain.stdout)
    calls = [e for e in read_trace(str(tmp_path / "m.jsonl")) if e["type"] == "call"]
    assert [(e["func"], e["args_preview"]) for e in calls if e["func"] == "work"] == [("work", {"n": "21"})]


def test_default_output_and_jsonl(tmp_path: Path) -> None:
    _write(tmp_path / "prog.py", """
        def square(x):
            return x * x
        print(sum(square(i) for i in range(5)))
        """)
    first = handit("run", "--no-summary", "prog.py", cwd=tmp_path)
    assert first.returncode == 0 and first.stdout == b"30\n"
    (default,) = glob.glob(str(tmp_path / "handit-*.handit"))
    assert detect_format(default) == "handit" and os.stat(default).st_mode & 0o777 == 0o600
    second = handit("run", "--no-summary", "-o", "trace.jsonl", "--tag", "mytag", "prog.py", cwd=tmp_path)
    assert second.returncode == 0
    lines = (tmp_path / "trace.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    for path in (default, str(tmp_path / "trace.jsonl")):
        evs = read_trace(path)
        squares = [e for e in evs if e["type"] == "call" and e["func"] == "square"]
        assert [e["args_preview"]["x"] for e in squares] == ["0", "1", "2", "3", "4"]
        returns = {e["call_id"]: e["locals_preview"].get("return") for e in evs if e["type"] == "return"}
        assert [returns[e["call_id"]] for e in squares] == ["0", "1", "4", "9", "16"]
    assert events[0]["type"] == "session_start" and events[0]["tag"] == "mytag" and events[-1]["type"] == "session_end"


def test_run_uses_the_engine_this_pass_asked_for(tmp_path: Path) -> None:
    """CI's pure-Python pass runs the CLI on the pure engine, the compiled pass on the compiled one."""
    _write(tmp_path / "prog.py", """
        import handit
        s = handit.current()
        print(s.engine, s.source)
        """)
    r = handit("run", "--no-summary", "prog.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    engine = r.stdout.decode().split()[0]
    if os.environ.get("HANDIT_ENGINE") == "fallback":
        assert engine == "fallback"
    elif os.environ.get("HANDIT_REQUIRE_COMPILED") == "1":
        assert engine == "compiled"


def test_run_options_reach_the_settings(tmp_path: Path) -> None:
    _write(tmp_path / "prog.py", """
        def keep(secret_token, n):
            return n
        def skip_me(n):
            return n
        keep("abc", 1); skip_me(2)
        """)
    r = handit("run", "--no-summary", "-o", "o.jsonl", "--exclude", "skip_me", "--capture", "timing", "prog.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    calls = [e for e in read_trace(str(tmp_path / "o.jsonl")) if e["type"] == "call"]
    assert {e["func"] for e in calls} == {"<module>", "keep"}
    assert all(e["args_preview"] == {} for e in calls)  # timing only
    bad = handit("run", "--max-str", "3", "prog.py", cwd=tmp_path)
    assert bad.returncode == 2 and b"--max-str 3 is not" in bad.stderr and b"Traceback" not in bad.stderr


def test_every_run_option_reaches_the_trace(tmp_path: Path) -> None:
    """--include, --preview, --tag, --source, --only-cwd, --top, --sample-rate: each changes what is recorded."""
    outside, cwd = tmp_path / "outside", tmp_path / "cwd"
    outside.mkdir()
    cwd.mkdir()
    _write(outside / "elsewhere.py", """
        def far(n):
            return n
        """)
    _write(cwd / "prog.py", f"""
        import sys
        sys.path.insert(0, {str(outside)!r})
        import handit, elsewhere
        class Loud:
            def __repr__(self):
                return "Loud!"
        def keep(x):
            return x
        def other(n):
            return n
        keep(Loud()); other(1); elsewhere.far(3)
        s = handit.current()
        print(s.engine, s.source, s.tag)
        """)

    def funcs(name: str) -> set[str]:
        return {e["func"] for e in read_trace(str(cwd / name)) if e["type"] == "call"}

    source = "setprofile" if PY312 else "auto"  # the non-default source where there is one
    r = handit("run", "--include", "keep", "--preview", "repr", "--tag", "mytag", "--source", source, "-o", "a.jsonl", "prog.py", cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split()[1:] == ["setprofile", "mytag"]
    calls = [e for e in read_trace(str(cwd / "a.jsonl")) if e["type"] == "call"]
    assert [(e["func"], e["args_preview"]) for e in calls] == [("keep", {"x": "Loud!"})]  # repr ran: --preview repr
    r = handit("run", "--only-cwd", "--top", "1", "-o", "b.jsonl", "prog.py", cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert "far" not in funcs("b.jsonl") and {"keep", "other"} <= funcs("b.jsonl")
    busiest = r.stderr.decode().split("Busiest functions")[1].split("Most own time")[0]
    assert len([line for line in busiest.splitlines() if "µs" in line or " ms" in line]) == 1  # --top 1
    r = handit("run", "--sample-rate", "0", "--no-summary", "-o", "c.jsonl", "prog.py", cwd=cwd)
    assert r.returncode == 0 and funcs("c.jsonl") == set()


def test_show_and_export_options(agent_traces: dict[str, Path], tmp_path: Path) -> None:
    full = handit("show", str(agent_traces["handit"]), "--depth", "50", "--max-nodes", "100000", cwd=tmp_path)
    cut = handit("show", str(agent_traces["handit"]), "--depth", "50", "--max-nodes", "5", cwd=tmp_path)
    assert full.returncode == cut.returncode == 0
    assert len(cut.stdout.splitlines()) < len(full.stdout.splitlines())
    out = tmp_path / "named.json"
    r = handit("export", str(agent_traces["handit"]), "--format", "chrome", "--output", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["traceEvents"]


def test_exit_statuses(tmp_path: Path, agent_traces: dict[str, Path]) -> None:
    """130 after Ctrl-C (the trace still written), 1 on a broken pipe, 2 on bad options."""
    _write(tmp_path / "interrupted.py", """
        import os, signal, time
        signal.signal(signal.SIGINT, signal.default_int_handler)  # (ignored in a run started in the background)
        def work(n):
            return n
        work(1)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
        """)
    r = handit("run", "--no-summary", "-o", "i.jsonl", "interrupted.py", cwd=tmp_path)
    assert r.returncode == 130 and b"KeyboardInterrupt" in r.stderr
    assert "work" in {e["func"] for e in read_trace(str(tmp_path / "i.jsonl")) if e["type"] == "call"}
    # a reader that has gone away (`handit show big | head -1`, the head already gone)
    proc = subprocess.Popen([sys.executable, "-m", "handit", "show", str(agent_traces["handit"])],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and b"Traceback" not in err, err
    for bad in (["--sample-rate", "2"], ["--include", "("], ["--frobnicate"], ["--capture", "everything"]):
        r = handit("run", *bad, "interrupted.py", cwd=tmp_path)
        assert r.returncode == 2 and b"Traceback" not in r.stderr, (bad, r.stderr)


@pytest.mark.skipif(not PY312, reason="sys.monitoring tool ids exist from 3.12")
def test_exit_2_when_tracing_cannot_start(tmp_path: Path) -> None:
    if os.environ.get("HANDIT_ENGINE") == "fallback":
        pytest.skip("the pure engine takes a tool id the same way; one pass suffices")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nfor i in range(6):\n    sys.monitoring.use_tool_id(i, 'other')\n")
    (tmp_path / "prog.py").write_text("print('ran')\n")
    env = _env()
    r = subprocess.run([sys.executable, "-m", "handit", "run", "--source", "sysmon", "prog.py"], cwd=tmp_path,
                       env={**env, "PYTHONPATH": os.pathsep.join([str(site), env["PYTHONPATH"]])}, capture_output=True, timeout=60)
    assert r.returncode == 2 and b"cannot start tracing" in r.stderr and b"ran" not in r.stdout, r.stderr


def test_run_usage_errors(tmp_path: Path) -> None:
    missing = handit("run", "nope.py", cwd=tmp_path)
    assert missing.returncode == 2 and b"nope.py" in missing.stderr and b"Traceback" not in missing.stderr
    no_module = handit("run", "-m", "no_such_module_here", cwd=tmp_path)
    assert no_module.returncode == 2 and b"No module named" in no_module.stderr and b"Traceback" not in no_module.stderr
    nothing = handit("run", cwd=tmp_path)
    assert nothing.returncode == 2 and b"handit run needs a script" in nothing.stderr
    (tmp_path / "prog.py").write_text("print(1)\n")
    (tmp_path / "x.jsonl").write_text('{"type": "session_start", "session_id": "s"}\n')
    mixed = handit("run", "-o", "x.jsonl", "--engine", "auto", "prog.py", cwd=tmp_path, HANDIT_OUTPUT_FORMAT="handit")
    assert mixed.returncode == 0  # -o *.jsonl wins over the environment: appended as JSONL
    (tmp_path / "y.handit").write_text('{"not": "a handit file"}\n')
    clash = handit("run", "-o", "y.handit", "prog.py", cwd=tmp_path)
    assert clash.returncode == 2 and b"already holds a jsonl trace" in clash.stderr


@pytest.fixture(scope="module")
def agent_traces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The example agent traced once in each format."""
    cwd = tmp_path_factory.mktemp("agent")
    out = {}
    for fmt in ("handit", "jsonl"):
        r = handit("run", "-o", f"agent.{fmt}", str(AGENT), cwd=cwd)
        assert r.returncode == 0, r.stderr.decode()
        assert b"Here is what I found: fibonacci(12) = 144" in r.stdout
        out[fmt] = cwd / f"agent.{fmt}"
    return out


@pytest.mark.parametrize("fmt", ["handit", "jsonl"])
def test_show_both_formats(agent_traces: dict[str, Path], fmt: str) -> None:
    path = agent_traces[fmt]
    r = handit("show", str(path), cwd=path.parent)
    assert r.returncode == 0, r.stderr
    text = r.stdout.decode()
    for needle in ("Sessions", "agent.py", "Call tree", f"{M}ask(", "fibonacci(n=12) → 144", "Busiest functions",
                   "Most own time", "call_api", "api_key=<redacted>", "[fake-api]", EXC, EXC_MESSAGE):
        assert needle in text, needle
    assert "sk-demo" not in text  # the fake key never shows
    only = handit("show", str(path), "--func", "^fibonacci$", "--depth", "2", "--no-tree", cwd=path.parent).stdout.decode()
    assert "fibonacci" in only and f"{M}ask" not in only and "Call tree" not in only
    tree = handit("show", str(path), "--func", "use_tool", "--depth", "1", cwd=path.parent).stdout.decode()
    assert f"{M}use_tool(self=<Agent>, tool='fibonacci'" in tree and "deeper calls" in tree and "main()" not in tree


def test_show_folds_repeats_and_filters_sessions(tmp_path: Path) -> None:
    _write(tmp_path / "prog.py", """
        import handit
        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)
        def loop():
            return [fib(3) for _ in range(12)]
        loop()
        with handit.session("inner-work"):
            fib(2)
        """)
    assert handit("run", "-o", "t.handit", "--tag", "outer", "prog.py", cwd=tmp_path).returncode == 0
    text = handit("show", "t.handit", cwd=tmp_path).stdout.decode()
    assert "fib(n=3) → 2  ×12" in text
    assert "outer" in text and "inner-work" in text
    inner = handit("show", "t.handit", "--tag", "inner-work", cwd=tmp_path)
    assert inner.returncode == 0 and "loop" not in inner.stdout.decode() and "fib(n=2)" in inner.stdout.decode()
    none = handit("show", "t.handit", "--session", "zzzz", cwd=tmp_path)
    assert none.returncode == 1 and b"no session" in none.stderr
    assert handit("run", "--no-summary", "-o", "t2.jsonl", "--tag", "second", "prog.py", cwd=tmp_path).returncode == 0
    both = handit("show", "t.handit", "t2.jsonl", "--no-tree", cwd=tmp_path).stdout.decode()
    assert "outer" in both and "second" in both and "4 sessions" in both  # each run has an inner session


@pytest.mark.parametrize("bad", ["missing", "directory", "empty", "garbage", "json-but-not-events"])
@pytest.mark.parametrize("command", ["show", "export"])
def test_unreadable_files_exit_2(tmp_path: Path, bad: str, command: str) -> None:
    path = tmp_path / "f.trace"
    if bad == "directory":
        path.mkdir()
    elif bad == "empty":
        path.write_bytes(b"")
    elif bad == "garbage":
        path.write_bytes(bytes(range(256)) * 4)
    elif bad == "json-but-not-events":
        path.write_text("[1, 2, 3]\n")
    extra = ["--format", "chrome", "-o", str(tmp_path / "out.json")] if command == "export" else []
    r = handit(command, str(path), *extra, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith(b"handit: error: ") and b"Traceback" not in r.stderr
    assert not (tmp_path / "out.json").exists()


def _check_trace_event_format(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Validate a Trace Event format document; returns its events by phase."""
    assert isinstance(doc["traceEvents"], list)
    by_ph: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in doc["traceEvents"]:
        for key in ("name", "ph", "ts", "pid", "tid"):
            assert key in e, (key, e)
        assert isinstance(e["ts"], (int, float)) and isinstance(e["pid"], int) and isinstance(e["tid"], int)
        assert e["ph"] in ("X", "M", "i", "b", "e"), e
        by_ph[e["ph"]].append(e)
        if e["ph"] == "X":
            assert isinstance(e["dur"], (int, float)) and e["dur"] >= 0, e
        if e["ph"] == "i":
            assert e["s"] in ("t", "p", "g")
    # async slices: every begin has one end with the same category and id, not before it
    begins = {(e["cat"], e["id"]): e for e in by_ph["b"]}
    ends = {(e["cat"], e["id"]): e for e in by_ph["e"]}
    assert begins.keys() == ends.keys() and len(begins) == len(by_ph["b"]) == len(by_ph["e"])
    assert all(ends[k]["ts"] >= b["ts"] for k, b in begins.items())
    # complete events on one track nest: a child starts at or after its parent and ends at or before it
    eps = 0.0015  # µs: ts and dur carry 3 decimals
    tracks: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for e in by_ph["X"]:
        tracks[(e["pid"], e["tid"])].append(e)
    per_tid: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for (_, tid), events in tracks.items():
        per_tid[tid].extend(events)
    for events in [*tracks.values(), *per_tid.values()]:
        stack: list[tuple[float, float]] = []
        for e in sorted(events, key=lambda e: (e["ts"], -e["dur"])):
            start, end = e["ts"], e["ts"] + e["dur"]
            while stack and stack[-1][1] <= start + eps:
                stack.pop()
            if stack:
                assert stack[-1][0] <= start + eps and end <= stack[-1][1] + eps, (e, stack[-1])
            stack.append((start, end))
    return by_ph


@pytest.mark.parametrize("fmt", ["handit", "jsonl"])
def test_export_chrome_is_valid_trace_event_format(agent_traces: dict[str, Path], fmt: str) -> None:
    src = agent_traces[fmt]
    out = src.parent / f"agent-{fmt}.json"
    r = handit("export", str(src), "--format", "chrome", "-o", str(out), cwd=src.parent)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    by_ph = _check_trace_event_format(doc)
    names = {e["name"] for e in by_ph["X"]}
    assert {"main", f"{M}ask", "call_api", "fibonacci", f"{S}do_POST"} <= names
    assert len([e for e in by_ph["X"] if e["name"] == "fibonacci"]) == 465
    assert [e["name"] for e in by_ph["i"]] == [EXC]
    assert len({e["tid"] for e in by_ph["X"]}) == 2  # the agent's thread and the server's
    assert any(e["name"] == "thread_name" for e in by_ph["M"]) and any(e["name"] == "process_name" for e in by_ph["M"])
    fib = next(e for e in by_ph["X"] if e["name"] == "fibonacci" and e["args"].get("n") == "12")
    assert fib["args"]["return"] == "144"
    assert any(e["args"].get("api_key") == "<redacted>" for e in by_ph["X"])


def test_export_speedscope_structure(agent_traces: dict[str, Path]) -> None:
    src = agent_traces["handit"]
    out = src.parent / "agent.speedscope.json"
    assert handit("export", str(src), "--format", "speedscope", "-o", str(out), cwd=src.parent).returncode == 0
    doc = json.loads(out.read_text())
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    frames = doc["shared"]["frames"]
    assert all(isinstance(f["name"], str) for f in frames)
    assert {"fibonacci", f"{M}ask"} <= {f["name"] for f in frames}
    assert len(doc["profiles"]) == 2
    for profile in doc["profiles"]:
        assert profile["type"] == "evented" and profile["unit"] == "nanoseconds"
        assert profile["startValue"] <= profile["endValue"]
        stack: list[int] = []
        last = profile["startValue"]
        for e in profile["events"]:
            assert e["type"] in ("O", "C") and 0 <= e["frame"] < len(frames)
            assert last <= e["at"] <= profile["endValue"]
            last = e["at"]
            if e["type"] == "O":
                stack.append(e["frame"])
            else:
                assert stack and stack.pop() == e["frame"]
        assert not stack


def test_export_jsonl_round_trip(agent_traces: dict[str, Path]) -> None:
    src = agent_traces["handit"]
    out = src.parent / "round.jsonl"
    assert handit("export", str(src), "--format", "jsonl", "-o", str(out), cwd=src.parent).returncode == 0
    assert read_trace(str(out)) == read_trace(str(src))


# ---- memory: `handit show` on a large file ------------------------------------------------------


class _Code:
    def __init__(self, index: int, qualname: str, argnames: tuple[str, ...]) -> None:
        self.index, self.module, self.qualname, self.file, self.line, self.argnames = (
            index, "bigapp", qualname, "/srv/bigapp.py", 10 * index + 1, argnames)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def write_big_trace(path: Path, size: int, thread: int = 7) -> int:
    """A .handit file of about ``size`` bytes: one session of request loops, each block re-timed.

    One block (a loop of 2,000 requests, each parsing and validating, with
    argument previews of realistic length and an exception every 100) is
    encoded once; its copies get increasing base times, so the trace runs
    forward. Returns the number of blocks.
    """
    base = 1_700_000_000_000_000_000
    enc = BlockEncoder(thread, base)
    t = base
    enc.call(0, t, args=["0"])
    for i in range(2_000):
        payload = "{'user': 'u%d', 'items': [%d, 2, 3], 'note': '%s'}" % (i % 40, i % 9, "lorem ipsum dolor sit amet " * 4)
        t += 50
        enc.call(1, t, args=[str(i % 40), payload])
        t += 40
        enc.call(2, t, args=["GET /api/v1/items?page=%d&sort=name&filter=active" % (i % 7)])
        t += 300
        enc.ret(t, "{'page': %d, 'rows': [...]}" % (i % 7))
        t += 20
        enc.call(3, t, args=["{'page': %d}" % (i % 7)])
        t += 30
        if i % 100 == 99:
            enc.unwind(t, "ValueError", "bad record %d" % (i % 3))
            t += 10
            enc.unwind(t, "ValueError", "bad record %d" % (i % 3))
        else:
            enc.ret(t, "True")
            t += 10
            enc.ret(t, "'ok'")
    t += 100
    enc.ret(t, "None")
    header = _varint(thread) + _varint(base)
    block = enc.to_bytes()
    body = block[len(header):]
    span = t - base + 1_000
    sid = str(uuid.uuid4())
    codes = [_Code(0, "main_loop", ("batch",)), _Code(1, "handle", ("request_id", "payload")),
             _Code(2, "parse", ("text",)), _Code(3, "validate", ("record",))]
    n = 0
    with TraceFileWriter(str(path)) as writer:
        writer.session_start({"type": "session_start", "session_id": sid, "tag": "big", "ts_ns": base, "attrs": {}})
        writer.codes(codes)
        while writer.bytes_written < size:
            writer.block(sid, _varint(thread) + _varint(base + n * span) + body)
            n += 1
        end = base + n * span
        writer.session_end({"type": "session_end", "session_id": sid, "ts_ns": end, "duration_ns": end - base,
                            "stats": {"calls": n * 6_001, "dropped": 0}})
    return n


_MEASURE = """
import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
sys.stdout.write(r.stdout.decode()[-3000:])
sys.stderr.write(r.stderr.decode()[-3000:])
print("\\nPEAK_RSS_KB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(r.returncode)
"""


@pytest.mark.slow
def test_show_large_trace_in_bounded_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("resource")
    path = tmp_path / "big.handit"
    blocks = write_big_trace(path, 300 * 1024 * 1024)
    size = path.stat().st_size
    try:
        r = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable, "-m", "handit", "show", str(path), "--top", "5"],
                           capture_output=True, env=_env(), timeout=900, cwd=tmp_path)
    finally:
        path.unlink()  # pytest keeps recent temporary directories: do not leave 300 MB behind
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    peak_mb = int(out.rsplit("PEAK_RSS_KB", 1)[1]) / 1024  # ru_maxrss is in KiB on Linux
    with capsys.disabled():
        print(f"\n[handit show] {size / 2**20:.0f} MB trace, {blocks * 6_001:,} calls: peak RSS {peak_mb:.1f} MB")
    assert f"{blocks * 6_001:,} calls" in out
    assert "ValueError" in out and "bigapp.validate" in out
    assert peak_mb < 200


def test_five_changed_bytes_are_reported(agent_traces: dict[str, Path], tmp_path: Path) -> None:
    """Five random byte changes in a real trace: `show` and `export` say the file is damaged, show the rest, exit 1."""
    data = bytearray(agent_traces["handit"].read_bytes())
    rng = random.Random(10)
    for pos in rng.sample(range(8, len(data)), 5):
        data[pos] ^= rng.randrange(1, 256)
    path = tmp_path / "damaged.handit"
    path.write_bytes(bytes(data))
    shown = handit("show", str(path), cwd=tmp_path)
    assert shown.returncode == 1
    assert shown.stderr.startswith(f"handit: warning: {path}: damaged: skipped ".encode()), shown.stderr
    assert b"Busiest functions" in shown.stdout and b"Traceback" not in shown.stderr
    exported = handit("export", str(path), "--format", "chrome", "-o", str(tmp_path / "out.json"), cwd=tmp_path)
    assert exported.returncode == 1 and b"damaged: skipped" in exported.stderr
    assert json.loads((tmp_path / "out.json").read_text())["traceEvents"]  # what was intact is exported


def test_a_truncated_trace_says_so(agent_traces: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "cut.handit"
    path.write_bytes(agent_traces["handit"].read_bytes()[:-7])
    shown = handit("show", str(path), cwd=tmp_path)
    assert shown.returncode == 1 and b"Busiest functions" in shown.stdout
    assert b"truncated: the last frame (at offset " in shown.stderr and b"damaged" not in shown.stderr


def test_default_names_are_unique_and_show_takes_the_newest(tmp_path: Path) -> None:
    _write(tmp_path / "prog.py", """
        import sys
        def work(x):
            return x + 1
        print(work(len(sys.argv)))
        """)
    together = [subprocess.Popen([sys.executable, "-m", "handit", "run", "--no-summary", "--tag", f"run{i}", "prog.py"],
                                 cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    for child in together:
        child.communicate(timeout=60)
        assert child.returncode == 0
    first_two = sorted(glob.glob(str(tmp_path / "handit-*.handit")))
    assert len(first_two) == 2  # started within the same moment: one file each
    assert all(len([e for e in read_trace(p) if e["type"] == "session_start"]) == 1 for p in first_two)
    assert handit("run", "--no-summary", "--tag", "last", "prog.py", cwd=tmp_path).returncode == 0
    (newest,) = set(glob.glob(str(tmp_path / "handit-*.handit"))) - set(first_two)
    shown = handit("show", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr == f"handit: reading {os.path.basename(newest)}, the newest trace here\n".encode()
    assert b"last" in shown.stdout and b"run0" not in shown.stdout and b"run1" not in shown.stdout
    exported = handit("export", "--format", "jsonl", "-o", "-", cwd=tmp_path)
    assert exported.returncode == 0 and {json.loads(line)["session_id"] for line in exported.stdout.splitlines()} == {
        e["session_id"] for e in read_trace(newest)}
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = handit("show", cwd=empty)
    assert nothing.returncode == 2 and b"no trace file here" in nothing.stderr


def test_the_readme_commands_after_several_runs(tmp_path: Path) -> None:
    """The README's first command, run three times: `handit show` shows the last run only, and succeeds."""
    readme = (ROOT / "README.md").read_text()
    command = "handit run examples/agent.py && handit show"
    assert f"python3 -m pip install '.[cli]' && {command}\n" in readme
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "agent.py").write_text(AGENT.read_text())
    for _ in range(3):
        assert handit("run", "--no-summary", "examples/agent.py", cwd=tmp_path).returncode == 0
    assert len(glob.glob(str(tmp_path / "handit-*.handit"))) == 3
    shown = handit("show", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    rows = [line for line in shown.stdout.decode().splitlines() if line.startswith("  agent.py  ")]
    assert len(rows) == 1, shown.stdout[:600]  # one session: the last run's, not all three merged
