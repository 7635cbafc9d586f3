"""``handit view`` pages in a real browser: headless Chromium driven through the DevTools protocol.

Run where ``BROWSER_TESTS=1`` (CI runs them once, on one Python) and a Chromium is
installed (``apt-get install chromium``). Screenshots go to ``$VIEWER_ARTIFACTS``
when set, else to pytest's temporary directory; the 1M-call test also writes its
page size and load time there (``million.json``).
"""
from __future__ import annotations

import json
import os
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest

from handit.tracefile import read_trace

from chromium import Browser, find_chromium
from test_viewer import AGENT, HOSTILE, PROGRAM, run_handit, trace_of

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.engine_dependent,  # the pages are made from traces `handit run` records
    pytest.mark.skipif(os.environ.get("BROWSER_TESTS") != "1",
                       reason="browser tests run where BROWSER_TESTS=1 (CI runs them once, on one Python)"),
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)"),
]
READY = "window.handitViewer && (handitViewer.ready || handitViewer.error)"

ASYNC_PROGRAM = textwrap.dedent("""
    import asyncio

    async def fetch(i):
        await asyncio.sleep(0.001 * i)
        return parse(i)

    def parse(i):
        return i * 2

    async def worker(name, n):
        return sum([await fetch(i) for i in range(n)])

    async def main():
        return await asyncio.gather(worker("a", 3), worker("b", 4), worker("c", 2))

    print(asyncio.run(main()))
""")

LLM_PROGRAM = textwrap.dedent("""
    import json, threading, urllib.error, urllib.request
    from http.server import BaseHTTPRequestHandler, HTTPServer
    import handit

    class API(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != "/v1/chat/completions":
                return self.reply(404, {"error": "no route"})
            self.reply(200, {"id": "c1", "object": "chat.completion", "model": body["model"] + "-0613",
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                          "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}})

        def reply(self, status, payload):
            data = json.dumps(payload).encode()
            self.send_response(status)
            for name, value in (("Content-Type", "application/json"), ("Content-Length", str(len(data)))):
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    def post(base, path, payload):
        request = urllib.request.Request(base + path, data=json.dumps(payload).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            exc.read()
            return None

    def chat(base, question):
        return post(base, "/v1/chat/completions", {"model": "gpt-test", "messages": [{"role": "user", "content": question}]})

    server = HTTPServer(("127.0.0.1", 0), API)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    handit.instrument("urllib.request")
    base = f"http://127.0.0.1:{server.server_port}"
    chat(base, "hello?")
    post(base, "/v1/missing", {})
    server.shutdown()
""")

MILLION_PROGRAM = textwrap.dedent("""
    def leaf(i):
        return i + 1

    def mid(i):
        return leaf(i) + leaf(i + 1)

    def outer(n):
        total = 0
        for i in range(n):
            total += mid(i)
        return total

    for _ in range(10):
        outer(33_333)
""")
MILLION_CALLS = 10 * 33_333 * 3 + 10 + 1  # leaf, mid and leaf per step, the outer calls and <module>


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM is not None
    b = Browser(CHROMIUM)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("VIEWER_ARTIFACTS")
    if chosen:
        Path(chosen).mkdir(parents=True, exist_ok=True)
        return Path(chosen)
    return tmp_path_factory.mktemp("viewer-screens")


def open_page(browser: Browser, tmp_path: Path, trace: Path, *extra: str) -> float:
    """Make the page of ``trace`` with ``handit view`` and open it; returns the seconds until it was ready."""
    done = run_handit("view", "--no-open", "-o", "page.html", *extra, str(trace), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    browser.events.clear()
    seconds = browser.open((tmp_path / "page.html").as_uri(), READY, timeout=240)
    assert browser.evaluate("handitViewer.error") is None
    return seconds


def expected_tracks(events: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """Calls per track, straight from the events: a task's calls on its task, the others on their thread."""
    return Counter(("task", str(e["task_id"])) if e.get("task_id") is not None else ("thread", str(e["thread"]))
                   for e in events if e["type"] == "call")


def page_tracks(browser: Browser) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for t in browser.evaluate("handitViewer.tracks()"):
        if t["calls"]:
            out[(t["kind"], str(t["task"]) if t["kind"] == "task" else t["thread"])] += t["calls"]
    return out


def click_call(browser: Browser, func: str, nth: int = 0, where: str = "true") -> str:
    """Click the ``nth`` call of ``func`` (in order of start) for which the JavaScript ``where`` holds
    (``c`` is the call) where the timeline draws it; returns the details panel's text."""
    index = browser.evaluate(f"handitViewer.findCalls({json.dumps(func)}).filter((i) => {{ const c = handitViewer.call(i); return {where}; }})"
                             f".sort((a, b) => handitViewer.call(a).t0 - handitViewer.call(b).t0).at({nth})")
    assert index is not None, f"no call of {func}"
    browser.evaluate(f"handitViewer.zoomTo(handitViewer.call({index}).t0, handitViewer.call({index}).t0 + handitViewer.call({index}).dur)")
    where = browser.evaluate(f"handitViewer.locate({index})")
    browser.click(where["x"], where["y"])
    assert browser.evaluate("handitViewer.view().selected") == index
    return str(browser.evaluate("document.getElementById('details').innerText"))


def test_agent_page(browser: Browser, tmp_path: Path, artifacts: Path) -> None:
    done = run_handit("run", "--no-summary", "-o", "agent.handit", str(AGENT), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    trace = tmp_path / "agent.handit"
    open_page(browser, tmp_path, trace)
    events = read_trace(str(trace))
    assert page_tracks(browser) == expected_tracks(events)
    frame = browser.evaluate("handitViewer.frame()")
    assert sum(frame["rects"]) + sum(frame["aggregated"]) > 0
    text = click_call(browser, "Agent.ask")
    assert "question" in text and "What is the 12th Fibonacci number" in text
    assert "Callers" in text.title() and "main" in text
    text = click_call(browser, "call_api", where="c.flags & 1")  # the search the fake API answers with 404
    (raised,) = [e for e in events if e["type"] == "exception" and e["func"] == "call_api"]
    assert "RAISED" in text.upper() and raised["type_name"] in text  # HTTPError where the engine knows the type
    n_fib = sum(1 for e in events if e["type"] == "call" and e["func"] == "fibonacci")
    assert browser.evaluate("handitViewer.search('fibonacci')") == n_fib > 0
    assert "1 function" in browser.evaluate("document.getElementById('matches').textContent")
    found = browser.evaluate("handitViewer.nextMatch(1)")
    assert browser.evaluate(f"handitViewer.call({found}).func") == "fibonacci"
    browser.evaluate("handitViewer.showTab('top')")
    assert "fibonacci" in browser.evaluate("document.getElementById('pane-top').innerText")
    browser.screenshot(str(artifacts / "agent.png"))
    browser.evaluate("handitViewer.setTheme('dark')")
    browser.screenshot(str(artifacts / "agent-dark.png"))
    browser.evaluate("handitViewer.setTheme('light')")
    assert browser.console_errors() == []


def test_asyncio_page(browser: Browser, tmp_path: Path, artifacts: Path) -> None:
    trace = trace_of(tmp_path, ASYNC_PROGRAM, name="agents.py")
    open_page(browser, tmp_path, trace)
    events = read_trace(str(trace))
    assert page_tracks(browser) == expected_tracks(events)
    assert browser.evaluate("handitViewer.calls") == sum(1 for e in events if e["type"] == "call") == 23
    text = click_call(browser, "worker", where="JSON.stringify(c.args).includes(\"'b'\")")
    assert "name" in text and "'b'" in text and "generator / coroutine" in text
    assert browser.evaluate("handitViewer.search('^parse$')") == 9
    browser.screenshot(str(artifacts / "asyncio.png"))
    assert browser.console_errors() == []


def test_http_and_llm_calls_and_keyboard(browser: Browser, tmp_path: Path, artifacts: Path) -> None:
    trace = trace_of(tmp_path, LLM_PROGRAM, name="llm.py")
    open_page(browser, tmp_path, trace)
    tracks = browser.evaluate("handitViewer.tracks()")
    assert sum(t["http"] for t in tracks) == 2
    browser.evaluate("handitViewer.showTab('http')")
    table = browser.evaluate("document.getElementById('pane-http').innerText")
    assert "gpt-test" in table and "12 → 2" in table and "404" in table
    browser.evaluate("document.querySelector('#pane-http tbody tr').click()")
    details = browser.evaluate("document.getElementById('details').innerText")
    assert "LLM call" in details and "gpt-test-0613" in details and "Input tokens" in details and "chat" in details
    # the keyboard alone: focus the timeline, take a call, go to its caller and back
    text = click_call(browser, "chat")
    assert "'hello?'" in text
    browser.evaluate("document.getElementById('canvas').focus()")
    chat = browser.evaluate("handitViewer.view().selected")
    browser.key("ArrowUp", "ArrowUp")
    parent = browser.evaluate("handitViewer.view().selected")
    assert parent == browser.evaluate(f"handitViewer.call({chat}).parent") != chat
    browser.key("ArrowDown", "ArrowDown")
    assert browser.evaluate(f"handitViewer.call(handitViewer.view().selected).parent") == parent
    span = browser.evaluate("handitViewer.view().t1 - handitViewer.view().t0")
    browser.key("w", "KeyW", "w")
    assert browser.evaluate("handitViewer.view().t1 - handitViewer.view().t0") < span
    browser.key("/", "Slash", "/")
    assert browser.evaluate("document.activeElement.id") == "search"
    browser.screenshot(str(artifacts / "http-llm.png"))
    assert browser.console_errors() == []


def test_hostile_previews_and_the_session_picker(browser: Browser, tmp_path: Path, artifacts: Path) -> None:
    trace = trace_of(tmp_path, PROGRAM)
    open_page(browser, tmp_path, trace)
    assert browser.evaluate("document.title") != "pwned"
    text = click_call(browser, "hostile")
    assert HOSTILE in text
    assert browser.evaluate("document.title") != "pwned"
    # the picker: only the chosen session's tracks are drawn, and its tree
    tracks = browser.evaluate("handitViewer.tracks()")
    inner = next(s for s in browser.evaluate("JSON.parse(document.getElementById('meta').textContent).sessions")
                 if s["tag"] == "inner")
    browser.evaluate(f"document.getElementById('session').value = {json.dumps(inner['id'])}; "
                     "document.getElementById('session').dispatchEvent(new Event('change'))")
    frame = browser.evaluate("handitViewer.frame()")
    drawn = {t["session"]: 0 for t in tracks}
    for t, rects, blocks in zip(tracks, frame["rects"], frame["aggregated"]):
        drawn[t["session"]] += rects + blocks
    assert drawn[inner["id"]] == 3 and sum(drawn.values()) == 3
    tree = browser.evaluate("document.getElementById('pane-tree').innerText")
    assert "inner" in tree and "prog.py" not in tree
    browser.screenshot(str(artifacts / "session-picker.png"))
    assert browser.console_errors() == []


CHILD_PROGRAM = textwrap.dedent("""
    import os

    def child_work(n):
        return sum(square(i) for i in range(n))

    def square(i):
        return i * i

    def spawn():
        pid = os.fork()
        if pid == 0:
            child_work(5)
            os._exit(0)
        os.waitpid(pid, 0)

    spawn()
    square(3)
""")


def test_each_process_is_a_group_of_its_own(browser: Browser, tmp_path: Path, artifacts: Path) -> None:
    trace = trace_of(tmp_path, CHILD_PROGRAM, name="family.py")
    open_page(browser, tmp_path, trace)
    events = read_trace(str(trace))
    pids = {e["session_id"]: e["pid"] for e in events if e["type"] == "session_start"}
    parent_pid, child_pid = sorted(set(pids.values()), key=lambda pid: min(
        e["ts_ns"] for e in events if e["type"] == "session_start" and e["pid"] == pid))
    groups = browser.evaluate("handitViewer.processes()")
    assert [g["pid"] for g in groups] == sorted([parent_pid, child_pid])
    child = next(g for g in groups if g["pid"] == child_pid)
    assert f"process {child_pid}" in child["label"] and f"child of {parent_pid}" in child["label"]
    assert "6 calls" in child["label"]  # child_work and five squares
    # folding the child's process hides its tracks; revealing one of its calls unfolds it
    before = browser.evaluate("handitViewer.frame()")
    tracks = browser.evaluate("handitViewer.tracks()")
    in_child = [i for i, t in enumerate(tracks) if pids.get(t["session"]) == child_pid]
    assert in_child and sum(before["rects"][i] + before["aggregated"][i] for i in in_child) > 0
    browser.evaluate(f"handitViewer.toggleProcess({child_pid})")
    folded = browser.evaluate("handitViewer.frame()")
    assert sum(folded["rects"][i] + folded["aggregated"][i] for i in in_child) == 0
    assert next(g for g in browser.evaluate("handitViewer.processes()") if g["pid"] == child_pid)["collapsed"]
    text = click_call(browser, "child_work")
    assert "n\n5" in text or "n 5" in text
    assert not next(g for g in browser.evaluate("handitViewer.processes()") if g["pid"] == child_pid)["collapsed"]
    browser.screenshot(str(artifacts / "processes.png"))
    assert browser.console_errors() == []


def test_million_calls(browser: Browser, tmp_path: Path, artifacts: Path) -> None:
    trace = trace_of(tmp_path, MILLION_PROGRAM, name="million.py")
    seconds = open_page(browser, tmp_path, trace)
    page = tmp_path / "page.html"
    (track,) = browser.evaluate("handitViewer.tracks()")
    assert track["calls"] == browser.evaluate("handitViewer.calls") == MILLION_CALLS
    assert track["depth"] == 4
    # all of it in view: slices narrower than a pixel are drawn as one block a pixel, so a frame
    # draws at most about one rectangle per pixel per row, not a million
    view = browser.evaluate("handitViewer.view()")
    frame = browser.evaluate("handitViewer.frame()")
    drawn = frame["rects"][0] + frame["aggregated"][0]
    assert frame["aggregated"][0] > 0 and drawn <= 2 * track["depth"] * (view["width"] + 2)
    # zoomed in on one step, its calls are slices of their own
    index = browser.evaluate("handitViewer.findCalls('mid')[1000]")
    call = browser.evaluate(f"handitViewer.call({index})")
    browser.evaluate(f"handitViewer.zoomTo({call['t0']}, {call['t0'] + call['dur']})")
    frame = browser.evaluate("handitViewer.frame()")
    assert frame["aggregated"][0] < frame["rects"][0]
    text = click_call(browser, "mid", 1000)
    assert "i\n1000" in text or "i 1000" in text
    pan_ms = browser.evaluate("""(() => { const v = handitViewer.view(), span = v.t1 - v.t0;
        handitViewer.fit(); const w = handitViewer.view(), t = performance.now();
        for (let k = 0; k < 20; k++) handitViewer.zoomTo(w.t0 + k * (w.t1 - w.t0) / 40, w.t0 + k * (w.t1 - w.t0) / 40 + (w.t1 - w.t0) / 2);
        return (performance.now() - t) / 20; })()""")
    browser.evaluate("handitViewer.fit()")
    browser.screenshot(str(artifacts / "million.png"))
    figures = {"calls": MILLION_CALLS, "trace_bytes": trace.stat().st_size, "page_bytes": page.stat().st_size,
               "load_s": round(seconds, 3), "in_page_load_ms": round(browser.evaluate("handitViewer.loadMs")),
               "frame_ms_half_view": round(pan_ms, 2)}
    (artifacts / "million.json").write_text(json.dumps(figures, indent=1))
    print("handit view, 1M calls:", figures)
    assert browser.console_errors() == []
