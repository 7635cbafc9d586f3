"""A small "agent" to try handit on: ``handit run examples/agent.py``, then ``handit show <trace>``.

It starts a fake LLM/tool API on 127.0.0.1 (an http.server in a thread), asks
it for a plan, runs the tools the plan names (a recursive helper, a search call
that fails for one query, a generator of steps), sends the results back and
prints the answer. Standard library only; the API key is fake, and handit
redacts it because the argument is named ``api_key``.
"""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Iterator

FAKE_API_KEY = "sk-demo-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"  # not a real key

FACTS = {"speed of light": "299792458 m/s", "boiling point of water": "100 C"}


class FakeAPI(BaseHTTPRequestHandler):
    """The "LLM" and its tools: JSON in, JSON out, behind a bearer token."""

    def do_POST(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {FAKE_API_KEY}":
            return self.reply(401, {"error": "bad api key"})
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        if self.path == "/v1/chat":
            return self.reply(200, plan_or_answer(body["messages"]))
        if self.path == "/v1/tools/search":
            fact = FACTS.get(body["query"])
            return self.reply(200, {"result": fact}) if fact else self.reply(404, {"error": "no result"})
        self.reply(404, {"error": f"no route {self.path}"})

    def reply(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # keep the program's output clean
        pass


def plan_or_answer(messages: list[dict[str, str]]) -> dict[str, Any]:
    """The fake model: first a plan of tool calls, then an answer from the tool results."""
    results = [m for m in messages if m["role"] == "tool"]
    if not results:
        return {"tool_calls": [
            {"tool": "fibonacci", "arg": "12"},
            {"tool": "search", "arg": "speed of light"},
            {"tool": "search", "arg": "colour of the number seven"},
        ]}
    found = "; ".join(m["content"] for m in results)
    return {"content": f"Here is what I found: {found}."}


def call_api(base_url: str, path: str, payload: dict[str, Any], api_key: str) -> dict[str, Any]:
    """POST JSON to the API with the key in the Authorization header."""
    request = urllib.request.Request(
        base_url + path, data=json.dumps(payload).encode(), method="POST",
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def fibonacci(n: int) -> int:
    """The slow recursive way, so the call tree has something to fold."""
    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)


def parse_number(text: str) -> float:
    """The leading number of a text like ``299792458 m/s``."""
    return float(text.split()[0])


class Agent:
    """Plans with the model, runs the tools, answers."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.messages: list[dict[str, str]] = []

    def ask(self, question: str) -> str:
        self.messages.append({"role": "user", "content": question})
        plan = self.think()
        for tool, arg in self.steps(plan):
            self.messages.append({"role": "tool", "content": self.use_tool(tool, arg)})
        return str(self.think()["content"])

    def think(self) -> dict[str, Any]:
        return call_api(self.base_url, "/v1/chat", {"messages": self.messages}, api_key=self.api_key)

    def steps(self, plan: dict[str, Any]) -> Iterator[tuple[str, str]]:
        for call in plan.get("tool_calls", []):
            yield call["tool"], call["arg"]

    def use_tool(self, tool: str, arg: str) -> str:
        if tool == "fibonacci":
            return f"fibonacci({arg}) = {fibonacci(int(arg))}"
        try:
            result = call_api(self.base_url, "/v1/tools/search", {"query": arg}, api_key=self.api_key)["result"]
        except urllib.error.HTTPError as exc:
            return f"no answer for {arg!r} (HTTP {exc.code})"
        try:
            return f"{arg} is {parse_number(result):,.0f} ({result})"
        except ValueError:
            return f"{arg} is {result}"


def main() -> None:
    server = HTTPServer(("127.0.0.1", 0), FakeAPI)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-api", daemon=True)
    thread.start()
    try:
        agent = Agent(f"http://127.0.0.1:{server.server_address[1]}", api_key=FAKE_API_KEY)
        print(agent.ask("What is the 12th Fibonacci number, and how fast is light?"))
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()
