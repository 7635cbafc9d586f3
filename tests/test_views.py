"""What the views say: thread names, `handit show` options, tables, generator closes, option messages (issue 11.5-11.10)."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import handit
from conftest import child_env
from handit.renderers.chrome import ChromeTraceWriter
from handit.renderers.summary import Stats, render_summary, summary_blocks
from handit.renderers.tree import TreeBuilder

PROGRAM = """
    import threading

    class Account:
        def deposit(self, n):
            return n

    def serve():
        Account().deposit(2)

    def main():
        t = threading.Thread(target=serve, name="teller")
        t.start()
        t.join()
        Account().deposit(1)

    main()
    """


def _handit(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    keep = ("HANDIT_ENGINE", "HANDIT_REQUIRE_COMPILED")
    environ = {k: v for k, v in child_env(**env).items() if k in keep or k in env or not k.startswith("HANDIT_")}
    return subprocess.run([sys.executable, "-m", "handit", *args], cwd=cwd, capture_output=True, text=True,
                          env=environ, timeout=120)


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("views")
    (cwd / "prog.py").write_text(textwrap.dedent(PROGRAM))
    r = _handit("run", "--no-summary", "-o", "t.handit", "prog.py", cwd=cwd)
    assert r.returncode == 0, r.stderr
    return cwd / "t.handit"


@pytest.mark.engine_dependent  # handit runs in a child process
def test_thread_names_in_tree_and_exports(trace: Path) -> None:
    cwd = trace.parent
    r = _handit("show", str(trace), "--func", r"Account\.", cwd=cwd)
    assert r.returncode == 0, r.stderr
    tree = r.stdout.split("Call tree", 1)[1].split("Busiest", 1)[0]
    lines = [line for line in tree.splitlines() if "Account.deposit" in line]
    # the teller's call ran first and says so by name; the session's own thread is not labelled
    assert len(lines) == 2 and "n=2" in lines[0] and "[teller]" in lines[0] and "[" not in lines[1].split("→")[1]
    assert "[thread" not in r.stdout
    assert _handit("export", str(trace), "--format", "chrome", "-o", "t.json", cwd=cwd).returncode == 0
    names = {e["args"]["name"] for e in json.loads((cwd / "t.json").read_text())["traceEvents"] if e["name"] == "thread_name"}
    assert {"MainThread", "teller"} <= names
    assert _handit("export", str(trace), "--format", "speedscope", "-o", "t.ss.json", cwd=cwd).returncode == 0
    profiles = [p["name"] for p in json.loads((cwd / "t.ss.json").read_text())["profiles"]]
    assert any(p.endswith("· teller") for p in profiles) and any(p.endswith("· MainThread") for p in profiles)


def test_thread_names_in_session_events(engine) -> None:
    def work() -> int:
        return 1

    with handit.session("t") as s:
        t = threading.Thread(target=work, name="worker-7")
        t.start()
        t.join()
        work()
    start, end = s.events[0], s.events[-1]
    assert start["thread"] == threading.get_ident()
    assert set(end["threads"].values()) == {"worker-7", threading.current_thread().name}


@pytest.mark.engine_dependent  # handit runs in a child process
def test_show_rejects_what_matches_nothing_and_negative_counts(trace: Path) -> None:
    cwd = trace.parent
    nothing = _handit("show", str(trace), "--func", "zzz", cwd=cwd)
    tag = _handit("show", str(trace), "--tag", "nope", cwd=cwd)
    assert (nothing.returncode, tag.returncode) == (1, 1)
    assert "no function in" in nothing.stderr and "--func zzz" in nothing.stderr and "no session in" in tag.stderr
    for option in ("--depth", "--top", "--max-nodes"):
        r = _handit("show", str(trace), option, "-1", cwd=cwd)
        assert r.returncode == 2 and f"argument {option}: '-1' is not a whole number >= 0" in r.stderr


@pytest.mark.engine_dependent  # handit runs in a child process
def test_option_errors_name_the_option_as_typed(tmp_path: Path) -> None:
    (tmp_path / "p.py").write_text("pass\n")
    rate = _handit("run", "--sample-rate", "2", "p.py", cwd=tmp_path)
    assert rate.returncode == 2 and rate.stderr == "handit: error: --sample-rate 2 is not a number between 0 and 1\n"
    bad = _handit("run", "--include", "(", "p.py", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("handit: error: --include '(' is not a valid regular expression (")
    assert "(?:" not in bad.stderr
    env = _handit("run", "--no-summary", "-o", "x.handit", "p.py", cwd=tmp_path, HANDIT_SAMPLE_RATE="2")
    assert env.returncode == 0
    assert env.stderr == ("handit: warning: HANDIT_SAMPLE_RATE='2' ignored: not a number between 0 and 1; "
                          "using default 1.0\n")


@pytest.mark.engine_dependent  # handit runs in a child process
def test_config_warning_points_at_the_users_line(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("import handit\nwith handit.session('x'):\n    pass\n")
    r = subprocess.run([sys.executable, "app.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                       env=child_env(HANDIT_SAMPLE_RATE="2", PYTHONWARNINGS="default"))
    assert r.returncode == 0
    assert r.stderr.startswith(f"{tmp_path / 'app.py'}:2: HanditConfigWarning: HANDIT_SAMPLE_RATE='2' ignored")
    assert "config.py" not in r.stderr and "from_env" not in r.stderr


def _session(*events: dict) -> list[dict]:
    sid = "00000000-0000-4000-8000-000000000001"
    out = [{"type": "session_start", "session_id": sid, "tag": "t", "ts_ns": 0}]
    for e in events:
        out.append({"session_id": sid, "thread": 1, **e})
    out.append({"type": "session_end", "session_id": sid, "ts_ns": 1000, "duration_ns": 1000})
    return out


def _call(cid: int, func: str, t0: int = 0, parent: int | None = None) -> dict:
    return {"type": "call", "call_id": cid, "parent_id": parent, "func": func, "module": "m", "t0_ns": t0}


def _ret(cid: int, dt: int, **extra: object) -> dict:
    return {"type": "return", "call_id": cid, "t1_ns": dt, "dt_ns": dt, "locals_preview": {}, **extra}


def test_control_flow_apart_from_errors_and_plurals() -> None:
    events = _session(
        _call(1, "it"), {"type": "exception", "call_id": 1, "func": "it", "type_name": "StopIteration", "message": ""}, _ret(1, 5),
        _call(2, "g"), {"type": "exception", "call_id": 2, "func": "g", "type_name": "GeneratorExit", "message": ""}, _ret(2, 5),
        _call(3, "f"), {"type": "exception", "call_id": 3, "func": "f", "type_name": "ValueError", "message": "bad"}, _ret(3, 5),
        _call(4, "h"), _ret(4, 5, abandoned=True),
    )
    text = render_summary(events)
    assert "1 session · 4 calls · 1 exception · 0 HTTP calls" in text
    assert "2 StopIteration/GeneratorExit (iteration's control flow, not errors)" in text
    assert "1 generator abandoned" in text
    errors = text.split("Errors", 1)[1].split("\n\n", 1)[0]
    assert "ValueError" in errors and "StopIteration" not in errors and "GeneratorExit" not in errors


def test_own_time_never_above_total_and_thread_sums_said() -> None:
    # two threads running f at once for 800 of the session's 1,000 ns each: 1,600 ns summed
    events = _session(_call(1, "f"), _ret(1, 800))
    events[2:2] = [{"session_id": events[0]["session_id"], "thread": 2, **_call(2, "f")},
                   {"session_id": events[0]["session_id"], "thread": 2, **_ret(2, 800)}]
    stats = Stats().feed(events)
    stats.functions[("m", "f")].own_ns = stats.functions[("m", "f")].total_ns + 500  # as concurrent tasks could count
    table = next(b for b in summary_blocks(stats) if getattr(b, "title", "").startswith("Busiest"))
    row = table.rows[0]
    assert row[2] == row[3]  # own shown as the total, never above it
    assert "1 function ran longer than the sessions' 1 µs of wall-clock time" in table.note


def test_more_line_never_leads_with_a_nameless_group() -> None:
    kids = [_call(10 + i, f"f{i}", parent=1) for i in range(80)]
    dominant = [_call(200 + i, "hot", parent=1) for i in range(500)]
    events = [_call(1, "root")]
    for e in kids + dominant:
        events += [e, _ret(e["call_id"], 1)]
    events.append(_ret(1, 1000))
    tree = TreeBuilder(max_children=4).feed(_session(*events))
    more = next(line for line in tree.lines() if "more:" in "".join(t for t, _ in line))
    text = "".join(t for t, _ in more)
    assert "… 576 more: hot ×500" in text and "others ×" in text and "… ×" not in text


def test_thousands_separators_in_counts() -> None:
    events = _session(*[e for i in range(1500) for e in (_call(i, "f"), {"type": "exception", "call_id": i, "func": "f",
                                                                      "type_name": "ValueError", "message": "x"}, _ret(i, 1))])
    text = render_summary(events)
    assert "1,500 calls · 1,500 exceptions" in text
    sessions = text.split("Sessions", 1)[1].split("\n\n", 1)[0]
    assert "1,500" in sessions and " 1500" not in sessions


def test_chrome_names_threads_from_session_end() -> None:
    out = io.BytesIO()
    writer = ChromeTraceWriter(out)
    events = _session(_call(1, "f"), _ret(1, 5))
    events[-1]["threads"] = {"1": "worker"}
    for e in events:
        writer.add(e)
    writer.close()
    names = [e["args"]["name"] for e in json.loads(out.getvalue())["traceEvents"] if e["name"] == "thread_name"]
    assert names[-1] == "worker"


CLOSE_PROGRAM = """
    def gen():
        yield 1
        yield 2

    def gen_try():
        try:
            yield 1
        finally:
            pass

    def gen_cleanup():
        try:
            yield 1
        finally:
            len("C calls in the finally")  # PY310/PY311: they left the close unrecognised

    def main():
        for _ in range(5):
            g = gen(); next(g); g.close()
            g = gen_try(); next(g); g.close()
            g = gen_cleanup(); next(g); g.close()
        for _ in range(3):
            for _ in gen():
                pass

    main()
    """


@pytest.mark.engine_dependent  # handit runs in a child process
def test_generator_close_is_a_close(tmp_path: Path) -> None:
    """PY310/PY311: g.close() counted "abandoned" (issue 11.7); every Python and engine agree now."""
    (tmp_path / "p.py").write_text(textwrap.dedent(CLOSE_PROGRAM))
    r = _handit("run", "-o", "g.jsonl", "p.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in (tmp_path / "g.jsonl").read_text().splitlines()]
    closes = [(e["func"], e["type_name"]) for e in events if e["type"] == "exception"]
    abandoned = [e for e in events if e.get("abandoned")]
    assert "· 0 exceptions ·" in r.stderr
    if sys.version_info >= (3, 13):
        # PY313+: CPython closes a generator suspended outside any try block without running
        # its frame (gen_close), so no event says so: those 5 still show as never resumed
        # (not fixed; see the views report)
        assert sorted(closes) == [("gen_cleanup", "GeneratorExit")] * 5 + [("gen_try", "GeneratorExit")] * 5
        assert len(abandoned) == 5
        return
    assert not abandoned
    assert sorted(closes) == [(f, "GeneratorExit") for f in ("gen", "gen_cleanup", "gen_try") for _ in range(5)]
    assert "15 StopIteration/GeneratorExit (iteration's control flow, not errors)" in r.stderr
    assert "abandoned" not in r.stderr
