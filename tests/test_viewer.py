"""``handit view``: the page it writes from real traces, read back without a browser (test_viewer_browser.py opens it)."""
from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
import sys
import textwrap
import zlib
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from handit.tracefile import read_trace

from conftest import child_env

pytestmark = pytest.mark.engine_dependent  # the pages are made from traces `handit run` records

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "examples" / "agent.py"
HOSTILE = "</script><script>document.title='pwned'</script>"

PROGRAM = textwrap.dedent(f"""
    import threading
    import handit

    def leaf(i):
        return i * 2

    def branch(n):
        return [leaf(i) for i in range(n)]

    def fails(x):
        raise ValueError("bad " + x)

    def hostile(text):
        return text

    def work():
        branch(3)

    t = threading.Thread(target=work)
    t.start(); t.join()
    branch(5)
    with handit.session("inner"):
        branch(2)
    hostile({HOSTILE!r})
    try:
        fails("input")
    except ValueError:
        pass
""")


def run_handit(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "handit", *args], cwd=cwd, env=env or child_env(),
                          capture_output=True, text=True, timeout=300)


def trace_of(tmp_path: Path, source: str, name: str = "prog.py", out: str = "trace.handit") -> Path:
    """Run a program under ``handit run`` and return its trace."""
    (tmp_path / name).write_text(source)
    done = run_handit("run", "--no-summary", "-o", out, name, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return tmp_path / out


def read_page(path: Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A page's metadata, its decoded columns and strings, and its text."""
    text = path.read_text(encoding="utf-8")
    meta = json.loads(re.search(r'<script type="application/json" id="meta">(.*?)</script>', text, re.S).group(1))
    blob = zlib.decompress(base64.b64decode(re.search(r'id="blob">(.*?)</script>', text, re.S).group(1)))
    cols: dict[str, Any] = {}
    typecodes = {"i64": "q", "u32": "I", "i32": "i", "u8": "B"}
    for name, (offset, n, kind) in meta["columns"].items():
        column = array(typecodes[kind])
        column.frombytes(blob[offset:offset + n * column.itemsize])
        if sys.byteorder != "little":
            column.byteswap()
        cols[name] = list(column)
    start, size = meta["strings"]
    cols["strings"] = json.loads(blob[start:start + size])
    return meta, cols, text


def calls_by_thread(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(str(e["thread"]) for e in events if e["type"] == "call")


def test_view_writes_one_self_contained_private_page(tmp_path: Path) -> None:
    trace = trace_of(tmp_path, PROGRAM)
    done = run_handit("view", "--no-open", "-o", "page.html", str(trace), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    page = tmp_path / "page.html"
    assert stat.S_IMODE(page.stat().st_mode) == 0o600
    assert "wrote page.html" in done.stderr
    meta, cols, text = read_page(page)
    # nothing to fetch: no URL in an attribute, no external script or style, and a policy that forbids it
    assert not re.search(r'\b(?:src|href)\s*=', text)
    assert "default-src 'none'" in text
    assert text.count("<script") == 3
    # the hostile preview stays data: it appears only escaped in the JSON string table
    assert HOSTILE not in text
    assert any(HOSTILE in s for s in cols["strings"])

    events = read_trace(str(trace))
    calls = [e for e in events if e["type"] == "call"]
    assert meta["calls"] == len(calls) == len(cols["code"])
    per_track = Counter(meta["tracks"][t]["thread"] for t in cols["track"])
    assert per_track == calls_by_thread(events)
    funcs = [meta["codes"][c][0] for c in cols["code"]]
    leafs = [i for i, f in enumerate(funcs) if f == "leaf"]
    assert len(leafs) == 10
    # a session the program opened is a session of its own, with its calls
    inner = next(s for s in meta["sessions"] if s["tag"] == "inner")
    assert inner["calls"] == 3 and inner["parent"] == meta["sessions"][0]["id"]
    # parent rows point at the caller; depth counts the callers on the track
    for i in leafs:
        parent = cols["parent"][i]
        assert funcs[parent] == "branch" and cols["depth"][i] == cols["depth"][parent] + 1
    fails = funcs.index("fails")
    assert cols["flags"][fails] & 1
    (raised,) = [e for e in events if e["type"] == "exception" and e["func"] == "fails"]
    said = f"{raised['type_name']}: {raised['message']}" if raised["message"] else raised["type_name"]
    assert cols["strings"][cols["ret"][fails]] == said  # "ValueError: bad input" where the engine knows the type
    assert cols["strings"][cols["args"][fails]] == "x\x01'input'"
    # times: deltas add up to the calls' starts, durations to their ends
    t0 = 0
    starts = {}
    for i, delta in enumerate(cols["t0"]):
        t0 += delta
        starts[i] = t0 + meta["base_ns"]
    by_id = {(e["func"], e["t0_ns"]) for e in calls}
    assert {(funcs[i], starts[i]) for i in starts} == by_id
    assert all(d >= 0 for d in cols["dur"]) and all(0 <= o <= d for o, d in zip(cols["own"], cols["dur"]))
    # the folded tree of `handit show`: five leaf(i) calls under branch(n=5), none folded (different args)
    roots = meta["tree"][0]["children"]
    module = next(n for n in roots if n["func"] == "<module>")
    # threads by their names, as handit show names them: the session's own thread first and unlabelled
    first = meta["sessions"][0]["id"]
    threads = sorted((t for t in meta["tracks"] if t["session"] == first and t["kind"] == "thread"), key=lambda t: t["order"])
    assert [t["name"] for t in threads] == ["MainThread", "Thread-1 (work)"]
    assert roots[0] is module and "thread" not in module
    assert [n.get("thread") for n in roots if n["func"] == "work"] == ["Thread-1 (work)"]
    branch5 = next(n for n in module["children"] if n["func"] == "branch")
    assert [n["func"] for n in branch5["children"]] == ["leaf"] * 5


def test_view_picks_the_newest_trace_and_opens_the_browser(tmp_path: Path) -> None:
    trace_of(tmp_path, "def f():\n    return 1\nf()\n", out="old.handit")
    os.utime(tmp_path / "old.handit", (1, 1))
    trace_of(tmp_path, "def g():\n    return 2\ng()\n", out="new.handit")
    opened = tmp_path / "opened.txt"
    recorder = tmp_path / "record_browser.py"
    recorder.write_text(f"import sys\nopen({str(opened)!r}, 'w').write(sys.argv[1])\n")
    # webbrowser runs $BROWSER (with %s for the URL) before any browser it knows
    env = child_env(BROWSER=f"{sys.executable} {recorder} %s")
    done = run_handit("view", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "reading new.handit, the newest trace here" in done.stderr
    assert opened.read_text() == (tmp_path / "new.html").resolve().as_uri()
    meta, cols, _ = read_page(tmp_path / "new.html")
    assert {meta["codes"][c][0] for c in cols["code"]} == {"<module>", "g"}


def test_view_of_the_readme_agent_and_a_preview_budget(tmp_path: Path) -> None:
    done = run_handit("run", "--no-summary", "-o", "agent.handit", str(AGENT), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    events = read_trace(str(tmp_path / "agent.handit"))
    done = run_handit("view", "--no-open", "agent.handit", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    meta, cols, _ = read_page(tmp_path / "agent.html")
    assert Counter(meta["tracks"][t]["thread"] for t in cols["track"]) == calls_by_thread(events)
    assert meta["previews_left_out"] == 0
    # a budget of 0 characters: every call keeps its timing, none its previews, and the loss is said
    done = run_handit("view", "--no-open", "--max-previews", "0", "-o", "lean.html", "agent.handit", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lean, lean_cols, _ = read_page(tmp_path / "lean.html")
    with_previews = sum(1 for a, r in zip(cols["args"], cols["ret"]) if a >= 0 or r >= 0)
    assert lean["previews_left_out"] == with_previews > 0
    assert f"previews of {with_previews:,} calls left out" in done.stderr
    assert lean_cols["strings"] == [] and lean["calls"] == meta["calls"]


def test_view_reads_jsonl_with_http_and_llm_calls(tmp_path: Path) -> None:
    sid = "s-1"
    events = [
        {"type": "session_start", "session_id": sid, "tag": "api", "ts_ns": 1_000, "pid": 7},
        {"type": "call", "session_id": sid, "func": "ask", "module": "m", "file": "m.py", "line": 3, "t0_ns": 2_000,
         "args_preview": {"q": "'hi'"}, "call_id": 1, "parent_id": None, "thread": 5},
        {"type": "http_request", "session_id": sid, "request_id": "r1", "method": "POST", "thread": 5,
         "url": "http://127.0.0.1:1/v1/chat/completions", "t0_ns": 3_000},
        {"type": "http_response", "session_id": sid, "request_id": "r1", "status": 200, "t1_ns": 9_000, "dt_ns": 6_000,
         "llm": {"gen_ai.request.model": "gpt-x", "gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 2}},
        {"type": "call", "session_id": sid, "func": "job", "module": "m", "file": "m.py", "line": 9, "t0_ns": 4_000,
         "args_preview": {}, "call_id": 2, "parent_id": 1, "thread": 5, "task_id": 1, "task": "job-1"},
        {"type": "return", "session_id": sid, "func": "job", "t1_ns": 5_000, "dt_ns": 1_000, "suspended_ns": 400,
         "locals_preview": {}, "call_id": 2},
        {"type": "return", "session_id": sid, "func": "ask", "t1_ns": 10_000, "dt_ns": 8_000,
         "locals_preview": {"return": "'answer'"}, "call_id": 1},
        {"type": "session_end", "session_id": sid, "ts_ns": 11_000},
    ]
    (tmp_path / "handit-x.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    done = run_handit("view", "--no-open", "handit-x.jsonl", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    meta, cols, _ = read_page(tmp_path / "handit-x.html")
    assert meta["base_ns"] == 1_000 and cols["t0"] == [3_000, -2_000] and cols["dur"] == [1_000, 8_000]
    # an asyncio task is a track of its own; its first call's parent is the call on the thread that made it
    job, ask = (meta["tracks"][t] for t in cols["track"])
    assert (job["kind"], job["name"], job["task"]) == ("task", "job-1", 1) and ask["kind"] == "thread"
    assert cols["parent"] == [1, -1] and cols["depth"] == [0, 0] and cols["susp"] == [400, 0]
    assert cols["own"][0] == 600 and cols["own"][1] <= 8_000 and cols["flags"][0] & 8  # own time: the call-tree model's
    (http,) = meta["http"]
    assert http["method"] == "POST" and http["status"] == 200 and http["t0"] == 2_000 and http["t1"] == 8_000
    assert http["llm"] == {"model": "gpt-x", "input_tokens": 12, "output_tokens": 2}
    assert meta["tracks"][http["track"]]["thread"] == "5"
    assert meta["sessions"][0]["calls"] == 2 and meta["sessions"][0]["t1"] == 10_000


def test_view_usage_errors(tmp_path: Path) -> None:
    done = run_handit("view", "--no-open", "missing.handit", cwd=tmp_path)
    assert done.returncode == 2 and "missing.handit: no such file" in done.stderr
    done = run_handit("view", "--no-open", cwd=tmp_path)
    assert done.returncode == 2 and "no trace file here" in done.stderr
    trace = trace_of(tmp_path, "def f():\n    return 1\nf()\n")
    done = run_handit("view", "--no-open", "-o", str(trace), str(trace), cwd=tmp_path)
    assert done.returncode == 2 and "is an input file" in done.stderr
    done = run_handit("view", "--no-open", "--tag", "nope", str(trace), cwd=tmp_path)
    assert done.returncode == 1 and "no session" in done.stderr


GATHER = textwrap.dedent("""
    import asyncio

    def parse(i):
        return i * 2

    async def llm(i):
        await asyncio.sleep(0.001 * i)
        return parse(i)

    async def main():
        named = asyncio.create_task(llm(3), name="named-one")
        return await asyncio.gather(llm(1), llm(2)) + [await named]

    asyncio.run(main())
""")


def test_view_of_an_engine_trace_draws_a_track_per_asyncio_task(tmp_path: Path) -> None:
    trace = trace_of(tmp_path, GATHER)
    done = run_handit("view", "--no-open", "-o", "page.html", str(trace), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    meta, cols, _ = read_page(tmp_path / "page.html")
    tasks = [t for t in meta["tracks"] if t["kind"] == "task"]
    # asyncio.run's task for main, the named task and the two gathered ones, each on its thread
    assert len(tasks) == 4 and len({t["task"] for t in tasks}) == 4
    assert "named-one" in {t["name"] for t in tasks} and sum(t["name"].startswith("Task-") for t in tasks) == 3
    llm_tracks = [cols["track"][i] for i, code in enumerate(cols["code"]) if meta["codes"][code][0] == "llm"]
    assert len(llm_tracks) == 3 and len(set(llm_tracks)) == 3  # never one llm inside another on one track
