"""A session with a ``.handit`` file and an endpoint sink through fork() and interpreter exit, in a real process (issue 16.5)."""
from __future__ import annotations

import collections
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import child_env
from ingest_server import IngestServer

from handit.tracefile import read_trace

PROGRAM = textwrap.dedent(
    """
    import os, sys, time, warnings
    import handit

    out, url, spool, engine, source = sys.argv[1:6]
    handit.configure(engine=engine, source=source, output_file=out, endpoint=url, spool_dir=spool,
                     exit_timeout=10.0)
    warnings.simplefilter("ignore", DeprecationWarning)  # PY312+: fork() with threads running

    def f(n):
        return n

    handit.start("parent")  # never stopped: the exit writes it, in the parent and in the child
    for i in range(100):
        f(i)
    time.sleep(0.3)  # drained: the calls wait in the file writer's buffer and the exporter's batch
    pid = os.fork()
    if pid == 0:
        for i in range(100, 150):
            f(i)
        sys.exit(0)
    _, status = os.waitpid(pid, 0)
    for i in range(150, 200):
        f(i)
    print("child", os.waitstatus_to_exitcode(status))
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_and_exit_with_file_and_endpoint_sinks(engine: tuple[str, str], tmp_path: Path) -> None:
    """Parent and forked child each write their session to the shared ``.handit`` file and send it
    to the endpoint at exit: every call once, in the right session, the child's linked to the parent's."""
    out, spool = tmp_path / "t.handit", tmp_path / "spool"
    (tmp_path / "prog.py").write_text(PROGRAM)
    with IngestServer() as server:
        r = subprocess.run([sys.executable, "prog.py", str(out), server.url, str(spool), *engine],
                           env=child_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "child 0" in r.stdout, r.stderr[-3000:]
        sent = server.wait_for_events(1)
    assert server.handler_errors == [] and server.duplicates == 0

    def calls_by_session(events: list[dict]) -> dict[str, list[int]]:
        by: dict[str, list[int]] = collections.defaultdict(list)
        for e in events:
            if e["type"] == "call" and e["func"] == "f":
                by[e["session_id"]].append(int(e["args_preview"]["n"]))
        return by

    starts = {e["session_id"]: e for e in read_trace(str(out)) if e["type"] == "session_start"}
    parent = next(e for e in starts.values() if not e.get("parent_session_id"))
    child = next(e for e in starts.values() if e.get("parent_session_id") == parent["session_id"])
    assert child["trace_id"] == parent["trace_id"]
    expected = {parent["session_id"]: list(range(100)) + list(range(150, 200)),
                child["session_id"]: list(range(100, 150))}
    assert calls_by_session(read_trace(str(out))) == expected, "the file holds each session whole, once"
    ends = [e for e in read_trace(str(out)) if e["type"] == "session_end"]
    assert sorted(e["session_id"] for e in ends) == sorted(expected)
    assert {k: sorted(v) for k, v in calls_by_session(sent).items()} == expected, "the endpoint got every call once"
    assert not spool.exists() or os.listdir(spool) == []
