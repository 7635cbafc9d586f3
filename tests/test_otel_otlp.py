"""OpenTelemetry export over OTLP/HTTP to a real receiver on loopback that decodes the protobuf
(``opentelemetry-proto``): traced programs run as child processes with HANDIT_OTEL=1 and
OTEL_EXPORTER_OTLP_ENDPOINT. Spans arrive; a receiver that is down, hangs or answers 503 does not
hurt the program; spans retried after a 503 are stored once; an application's own provider is used,
never replaced."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from conftest import child_env
from http_servers import refused_port
from otlp_receiver import Receiver

pytestmark = pytest.mark.engine_dependent  # traced child processes, in both passes

PROGRAM = """
import handit

def step(i):
    return i * 2

def work(n):
    return sum(step(i) for i in range(n))

with handit.session("otlp-child", attrs={"run": "1"}):
    total = work(5)
print("done", total, flush=True)
"""


def run(tmp_path: Path, endpoint: str | None, program: str = PROGRAM, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``program`` as a child process with HANDIT_OTEL=1 (and the OTLP endpoint, if any)."""
    script = tmp_path / "traced.py"
    script.write_text(textwrap.dedent(program))
    extra = {"HANDIT_OTEL": "1", "OTEL_BSP_SCHEDULE_DELAY": "50", **env}
    if endpoint:
        extra["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    environ = child_env(**extra)
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        environ.pop(name, None)
    if not endpoint:
        environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    # the timeout only keeps a hung child from hanging the suite; nothing here measures time
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=60)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def test_spans_arrive_with_their_tree(tmp_path: Path, receiver: Receiver) -> None:
    done = run(tmp_path, receiver.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done 20\n" and done.stderr == ""
    names = sorted(s["name"] for s in receiver.accepted)
    assert names == ["otlp-child", "step", "step", "step", "step", "step", "work"]
    by_name = {s["name"]: s for s in receiver.accepted}
    root, work = by_name["otlp-child"], by_name["work"]
    assert root["parent"] == "" and work["parent"] == root["span_id"] and root["scope"] == "handit"
    assert [s["parent"] for s in receiver.accepted if s["name"] == "step"] == [work["span_id"]] * 5
    assert root["attrs"]["run"].string_value == "1" and root["attrs"]["handit.calls"].int_value == 6
    assert work["attrs"]["code.function.name"].string_value == "__main__.work"
    assert len({s["trace_id"] for s in receiver.accepted}) == 1
    assert receiver.resources[0]["service.name"] == "traced.py"


def test_spans_retried_after_503_are_stored_once(tmp_path: Path) -> None:
    with Receiver(fail_first=2) as receiver:
        done = run(tmp_path, receiver.url, HANDIT_EXIT_TIMEOUT="20")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done 20\n"
    assert receiver.attempts >= 3
    ids = [s["span_id"] for s in receiver.accepted]
    assert len(ids) == 7 and len(set(ids)) == 7  # the session, work and 5 steps, each once


def test_receiver_down_does_not_hurt_the_program(tmp_path: Path) -> None:
    done = run(tmp_path, f"http://127.0.0.1:{refused_port()}", HANDIT_EXIT_TIMEOUT="1")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done 20\n"


def test_hanging_receiver_does_not_hold_the_exit(tmp_path: Path) -> None:
    with Receiver(hang=True) as receiver:
        done = run(tmp_path, receiver.url, HANDIT_EXIT_TIMEOUT="1")
        assert receiver.attempts >= 1
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done 20\n"
    assert "HANDIT_EXIT_TIMEOUT=1s" in done.stderr  # what was not exported in time is said


def test_application_provider_is_used_not_replaced(tmp_path: Path, receiver: Receiver) -> None:
    program = """
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    import handit

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(provider)

    def work():
        return 1

    with handit.session("app-provider"):
        work()
    from handit.otel.export import exporter
    assert exporter(handit.get_config()).flush(10)
    assert trace.get_tracer_provider() is provider
    print(sorted(s.name for s in memory.get_finished_spans()), flush=True)
    """
    done = run(tmp_path, receiver.url, program)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "['app-provider', 'work']\n"
    assert receiver.attempts == 0  # handit set up no exporter of its own


def test_no_provider_and_no_endpoint_is_said(tmp_path: Path) -> None:
    done = run(tmp_path, None)
    assert done.returncode == 0 and done.stdout == "done 20\n"
    assert done.stderr.count("OTEL_EXPORTER_OTLP_ENDPOINT is not set") == 1


def test_opentelemetry_missing_is_said_and_harmless(tmp_path: Path) -> None:
    program = "import sys\nsys.modules['opentelemetry'] = None  # as if not installed\n" + PROGRAM
    done = run(tmp_path, None, program)
    assert done.returncode == 0 and done.stdout == "done 20\n"
    assert "pip install 'handit[otel]'" in done.stderr


def test_failing_provider_does_not_hurt_the_program(tmp_path: Path) -> None:
    program = """
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    import handit

    class Broken(TracerProvider):
        def get_tracer(self, *args, **kwargs):
            raise RuntimeError("no tracer today")

    trace.set_tracer_provider(Broken())

    def work(i):
        return i + 1

    for i in range(3):
        with handit.session("broken"):
            work(i)
    print("done", flush=True)
    """
    done = run(tmp_path, None, program)
    assert done.returncode == 0 and done.stdout == "done\n"
    assert done.stderr.count("SessionWarning: handit could not export session") == 1  # three sessions, said once
    assert "no tracer today" in done.stderr
