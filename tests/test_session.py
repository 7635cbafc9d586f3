"""Sessions: the API, propagation, configuration, trace files and the HTTP exporter wiring."""
from __future__ import annotations

import asyncio
import gzip
import importlib
import inspect
import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest

import handit
from conftest import calls_of
from corpus import rec

session_mod = importlib.import_module("handit.sessions")


def test_public_api_is_sorted_and_documented():
    assert handit.__all__ == sorted(handit.__all__)
    for name in handit.__all__:
        assert getattr(handit, name).__doc__, name


def test_nested_sessions_record_their_parent(engine):
    with handit.session("outer") as outer:
        rec(1)
        with handit.session("inner") as inner:
            rec(2)
        rec(1)
    assert inner.parent is outer
    assert inner.events[0]["parent_session_id"] == outer.id
    assert len(calls_of(inner.events, "rec")) == 3
    assert len(calls_of(outer.events, "rec")) == 4


def test_start_stop_and_aliases(engine):
    s = handit.start("a")
    rec(1)
    assert handit.current() is s
    handit.stop(s)
    assert handit.current() is None
    s2 = handit.start_tracing(agent="b")
    rec(0)
    assert handit.end_tracing() is s2
    assert len(calls_of(s.events, "rec")) == 2 and len(calls_of(s2.events, "rec")) == 1
    assert (s.engine, s.source) == engine
    assert f"engine={engine[0]} source={engine[1]}" in repr(s)


def test_decorator_keeps_signature_and_annotations(engine):
    @handit.trace("job")
    def job(x: int, *, name: str = "n") -> str:
        return f"{name}{rec(x)}"

    @handit.tracing(agent="ajob")
    async def ajob(x: int) -> int:
        await asyncio.sleep(0)
        return rec(x)

    assert inspect.signature(job) == inspect.signature(job.__wrapped__)
    assert job.__annotations__ == {"x": "int", "name": "str", "return": "str"}
    assert inspect.iscoroutinefunction(ajob)
    assert job(2) == "n2"
    assert asyncio.run(ajob(1)) == 1
    assert handit.entrypoint("e")(job)(1) == "n1"


def test_threads_and_executors_inherit(engine):
    with handit.session("pool") as s, ThreadPoolExecutor(3) as pool:
        assert list(pool.map(rec, [1, 2, 3])) == [1, 2, 3]
    assert len(calls_of(s.events, "rec")) == 2 + 3 + 4


def test_traceparent(engine):
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with handit.session("t", traceparent=tp) as s:
        pass
    assert (s.trace_id, s.parent_span_id) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    with pytest.warns(session_mod.SessionWarning, match="not a valid W3C traceparent"):
        with handit.session("t", traceparent="00-zz-bad") as bad:
            pass
    assert len(bad.trace_id) == 32 and bad.parent_span_id is None


def test_session_sample_rate_follows_trace_id(engine):
    keep = "00-00000000000000000000000000000001-00f067aa0ba902b7-01"
    drop = "00-0000000000000000ffffffffffffffff-00f067aa0ba902b7-01"
    handit.configure(session_sample_rate=0.5)
    with handit.session("k", traceparent=keep) as s1:
        rec(1)
    with handit.session("d", traceparent=drop) as s2:
        rec(1)
    assert calls_of(s1.events) and not calls_of(s2.events)


@pytest.mark.parametrize("name", ["t.handit", "t.jsonl"])
def test_output_file_round_trip(engine, tmp_path, name):
    from handit.tracefile import read_trace

    path = tmp_path / name
    handit.configure(output_file=str(path))
    with handit.session("file") as s:
        rec(3)
        try:
            rec(None)  # TypeError inside
        except TypeError:
            pass
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    from_file = [e for e in read_trace(str(path)) if e["type"] not in ("session_start", "session_end")]
    in_memory = [e for e in s.events if e["type"] not in ("session_start", "session_end")]
    assert from_file == in_memory
    end = [e for e in read_trace(str(path)) if e["type"] == "session_end"][0]
    assert end["stats"]["calls"] == len(calls_of(in_memory)) == 5


def test_unwritable_output_file_warns_and_keeps_memory(engine, tmp_path):
    handit.configure(output_file=str(tmp_path / "missing-dir" / "t.jsonl"))
    with pytest.warns(session_mod.SessionWarning, match="cannot be written"):
        with handit.session("x") as s:
            rec(1)
    assert len(calls_of(s.events)) == 2


def test_lowlevel_api_lands_in_the_session(engine):
    sid = handit.start_session("low", {"k": "v"})
    handit.on_call_with_args(sid, "f", "m", "m.py", 3, 1, json.dumps({"password": "hunter2", "q": "x"}))
    handit.on_return_with_preview(sid, "f", 2, 1, {"return": "ok"})
    handit.on_exception(sid, "f", 3, "ValueError", "token sk-abcdefghijklmnopqrstuvwxyz123456 leaked")
    handit.on_http_request(sid, "GET", "https://u:pw@api.example.com/v1?api_key=SECRET123&q=1", 4, {"Authorization": "Bearer abcdefghijkl"}, 0, None)
    handit.on_http_response(sid, 200, 5, 1, {"Set-Cookie": "sid=1"}, 10, None, '{"token": "zzz", "n": 1}')
    handit.suppress_profiler_enter()
    rec(2)
    handit.suppress_profiler_exit()
    s = handit.current()
    handit.end_session(sid)
    text = json.dumps(s.events)
    for secret in ("hunter2", "sk-abcdefghij", "SECRET123", "abcdefghijkl", "zzz", ":pw@"):
        assert secret not in text
    assert not calls_of(s.events, "rec")
    with pytest.warns(handit.lowlevel.LowLevelWarning):
        handit.on_call("no-such-session", "f", "m", "f.py", 1, 1)


def test_webhook_receives_every_event(engine, tmp_path):
    from ingest_server import IngestServer

    with IngestServer() as server:
        handit.configure(endpoint=server.url, api_key="k-123", spool_dir=str(tmp_path / "spool"))
        with handit.session("hook") as s:
            rec(5)
        sinks = importlib.import_module("handit.sinks")
        exporter = sinks._exporters[server.url]
        exporter.flush(10)
        got = server.wait_for_events(len(s.events))
        exporter.close()
        sinks._exporters.pop(server.url)
    sent = [e for e in got if e["session_id"] == s.id]
    assert [e["type"] for e in sent] == [e["type"] for e in s.events]


def test_config_errors_name_the_setting():
    for settings, name in (
        ({"include": "("}, "HANDIT_INCLUDE"),
        ({"sample_rate": 2}, "HANDIT_SAMPLE_RATE"),
        ({"max_locals": "x"}, "HANDIT_MAX_LOCALS"),
        ({"HANDIT_NOPE": 1}, "HANDIT_NOPE"),
    ):
        with pytest.raises(handit.ConfigError, match=name):
            handit.configure(**settings)


def test_long_session_spills_to_disk(engine):
    handit.configure(max_session_memory=4096, capture="timing")
    with handit.session("long") as s:
        for _ in range(200):
            rec(20)
    assert s._spill is not None and s._mem <= 4096
    assert len(calls_of(s.events, "rec")) == 200 * 21
    assert s.stats["calls"] == 200 * 21


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_spill_file_is_private_and_nameless(engine, tmp_path, monkeypatch):
    """With no file sink, a session past HANDIT_MAX_SESSION_MEMORY spills to a temporary file:
    created 0600 whatever the umask, with no name left in the directory (docs/sessions.md)."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    handit.configure(max_session_memory=4096, capture="args")
    old = os.umask(0)
    try:
        with handit.session("long") as s:
            for _ in range(100):
                rec(20)
        assert s._spill is not None and not s._sinks
        assert stat.S_IMODE(os.fstat(s._spill.fileno()).st_mode) == 0o600
        assert os.listdir(tmp_path) == []
    finally:
        os.umask(old)
    assert len(calls_of(s.events, "rec")) == 100 * 21


def test_summary_names_the_busiest_function(engine):
    with handit.session("sum") as s:
        rec(10)
    assert "rec" in s.summary()
