"""End to end against a real OpenTelemetry backend: Arize Phoenix, started by the test on loopback with a
temporary working directory. A traced program (calls, an HTTP call, an LLM call to the fake
OpenAI-compatible server of ``http_servers``) exports over OTLP/HTTP; its spans are read back through
Phoenix's REST API with their names, parents and attributes.

Runs where E2E_TESTS=1 (not a HANDIT_ name: handit warns about unknown HANDIT_* variables, an error
under ``filterwarnings = error``), with ``phoenix`` on PATH or its path in E2E_PHOENIX (``.ci/run``
installs arize-phoenix into a venv of its own and runs this once).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import child_env
from http_servers import Handler, Server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.engine_dependent,  # a traced child process
    pytest.mark.skipif(os.environ.get("E2E_TESTS") != "1", reason="end to end: set E2E_TESTS=1 (and have phoenix installed)"),
]

PROGRAM = """
import sys

import requests

import handit

BASE = sys.argv[1]


def ask_model(question):
    answer = requests.post(BASE + "/v1/chat/completions", json={"model": "gpt-x", "max_tokens": 20,
                           "messages": [{"role": "user", "content": question}]}).json()
    return answer["choices"][0]["message"]["content"]


def fetch_profile(user):
    return requests.get(BASE + "/json", params={"user": user}).json()["n"]


def plan(user):
    n = fetch_profile(user)
    return ask_model("hello " + user) + "/" + str(n)


def fails():
    raise KeyError("missing")


with handit.session("e2e-agent", attrs={"user": "7"}):
    print(plan("ada"), flush=True)
    try:
        fails()
    except KeyError:
        pass
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``phoenix serve`` on 127.0.0.1 with a temporary working directory; yields its base URL."""
    binary = os.environ.get("E2E_PHOENIX") or shutil.which("phoenix")
    assert binary, "E2E_TESTS=1 but no phoenix: pip install arize-phoenix, or set E2E_PHOENIX to its path"
    work = tmp_path_factory.mktemp("phoenix")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "OTEL_", "HANDIT_"))}
    env.update(PHOENIX_HOST="127.0.0.1", PHOENIX_PORT=str(port), PHOENIX_GRPC_PORT=str(_free_port()),
               PHOENIX_WORKING_DIR=str(work))
    log = open(work / "phoenix.log", "wb")
    proc = subprocess.Popen([binary, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # up to ~3 min: it answers after ~22 s on an idle machine
            assert proc.poll() is None, (work / "phoenix.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail("phoenix did not answer /healthz")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _spans(base: str, project: str, want: int) -> list[dict[str, Any]]:
    """The project's spans once ``want`` of them have arrived (Phoenix stores them asynchronously)."""
    spans: list[dict[str, Any]] = []
    for _ in range(150):
        try:
            spans = _get(f"{base}/v1/projects/{project}/spans?limit=100")["data"]
        except OSError:  # the project exists once its first span is stored
            spans = []
        if len(spans) >= want:
            return spans
        time.sleep(0.2)
    return spans


def test_traced_program_read_back_from_phoenix(phoenix: str, tmp_path: Path) -> None:
    project = f"handit-e2e-{uuid.uuid4().hex[:8]}"
    script = tmp_path / "agent.py"
    script.write_text(textwrap.dedent(PROGRAM))
    Handler.seen.clear()
    with Server() as server:
        env = child_env(HANDIT_OTEL="1", OTEL_EXPORTER_OTLP_ENDPOINT=phoenix,
                        OTEL_RESOURCE_ATTRIBUTES=f"openinference.project.name={project}")
        done = subprocess.run([sys.executable, str(script), server.base], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Hello there/1\n" and done.stderr == ""

    spans = _spans(phoenix, project, want=7)
    by_name = {s["name"]: s for s in spans}
    assert sorted(by_name) == ["GET", "ask_model", "chat gpt-x", "e2e-agent", "fails", "fetch_profile", "plan"]
    assert len(spans) == 7 and len({s["context"]["trace_id"] for s in spans}) == 1
    span_id = {name: s["context"]["span_id"] for name, s in by_name.items()}
    parents = {name: s["parent_id"] for name, s in by_name.items()}
    assert parents == {
        "e2e-agent": None, "plan": span_id["e2e-agent"], "fails": span_id["e2e-agent"],
        "fetch_profile": span_id["plan"], "ask_model": span_id["plan"],
        "GET": span_id["fetch_profile"], "chat gpt-x": span_id["ask_model"],
    }
    root = by_name["e2e-agent"]
    assert root["attributes"]["user"] == "7" and root["attributes"]["handit.calls"] == 4
    assert by_name["plan"]["attributes"]["code.function.name"] == "__main__.plan"
    assert by_name["plan"]["attributes"]["handit.args.user"] == "'ada'"
    assert by_name["fails"]["status_code"] == "ERROR"
    assert [e["name"] for e in by_name["fails"]["events"]] == ["exception"]

    llm = by_name["chat gpt-x"]
    assert llm["span_kind"] == "LLM"
    a = llm["attributes"]
    assert a["llm.model_name"] == "gpt-x-0613" and a["gen_ai.request.model"] == "gpt-x"
    assert (a["llm.token_count.prompt"], a["llm.token_count.completion"], a["llm.token_count.total"]) == (12, 2, 14)
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (12, 2)
    assert json.loads(a["input.value"])["messages"][0]["content"] == "hello ada"
    assert by_name["GET"]["attributes"]["http.response.status_code"] == 200

    # the fake LLM server received the traceparent of the span Phoenix holds for that call
    (seen,) = [s for s in Handler.seen if s["path"].endswith("/chat/completions")]
    sent = {k.lower(): v for k, v in seen["headers"].items()}["traceparent"]
    assert sent == f"00-{llm['context']['trace_id']}-{llm['context']['span_id']}-01"
