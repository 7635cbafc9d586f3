"""Each documented preview and redaction setting, and the session helpers, in a live session on both engines."""
from __future__ import annotations

import asyncio
import json
import os
import stat
import warnings
from pathlib import Path

import handit
from conftest import calls_of

REDACTED = "<redacted>"


def login(password, monkey, token_count, user):
    return user


def nested(data):
    return data


def many(a, b, c, d, e):
    return a


class Shouty:
    def __repr__(self) -> str:
        return "Shouty!"


def takes(obj):
    return obj


def _args(events: list[dict], func: str) -> dict:
    (call,) = calls_of(events, func)
    return call["args_preview"]


def test_redact_extends_and_safe_keys_exempt(engine):
    handit.configure(redact=r"monkey", safe_keys=("token_count",))
    with handit.session("redact") as s:
        login("hunter2", "banana", 12, "ann")
    args = _args(s.events, "login")
    assert args["password"] == REDACTED  # built-in rule still on
    assert args["monkey"] == REDACTED  # HANDIT_REDACT adds one
    assert args["token_count"] == "12"  # "token" would match; HANDIT_SAFE_KEYS exempts it
    assert args["user"] == "'ann'"


def test_redact_replace_drops_the_built_in_rules(engine):
    handit.configure(redact=r"monkey", redact_replace=True)
    with handit.session("replace") as s:
        login("hunter2", "banana", 12, "ann")
    args = _args(s.events, "login")
    assert args["monkey"] == REDACTED
    assert args["password"] == "'hunter2'"  # name rules replaced: only HANDIT_REDACT's apply


def test_max_items_and_max_depth(engine):
    handit.configure(max_items=2, max_depth=1)
    with handit.session("bounds") as s:
        nested({"k": [1, 2, 3, 4], "j": 2, "l": 3})
    # two items shown and the rest counted (HANDIT_MAX_ITEMS); the inner list not expanded (HANDIT_MAX_DEPTH)
    assert _args(s.events, "nested")["data"] == "{'k': [...], 'j': 2, …} (len=3)"


def test_max_locals(engine):
    handit.configure(max_locals=2)
    with handit.session("locals") as s:
        many(1, 2, 3, 4, 5)
    assert _args(s.events, "many") == {"a": "1", "b": "2"}


def test_preview_repr_runs_user_repr_and_safe_does_not(engine):
    with handit.session("safe") as s:
        takes(Shouty())
    assert "Shouty!" not in _args(s.events, "takes")["obj"]
    handit.configure(preview="repr")
    with handit.session("repr") as s:
        takes(Shouty())
    assert _args(s.events, "takes")["obj"] == "Shouty!"


def test_async_with_session(engine):
    async def step(n):
        await asyncio.sleep(0)
        return n

    async def main():
        async with handit.session("async") as s:
            await step(1)
        return s

    s = asyncio.run(main())
    assert s.t1_ns is not None and len(calls_of(s.events, "step")) == 1


def test_flush_events_to_file_writes_running_sessions_0600(engine, tmp_path: Path):
    out = tmp_path / "now.jsonl"
    with handit.session("running"):
        takes(1)
        n = handit.flush_events_to_file(str(out))
        takes(2)
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert n == len(events) >= 2
    assert [e["type"] for e in events][0] == "session_start"
    assert len([e for e in events if e["type"] == "call" and e["func"] == "takes"]) == 1  # what had happened so far
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600


def test_a_failing_sink_warns_once_and_keeps_the_session(engine, tmp_path: Path, monkeypatch):
    import importlib

    monkeypatch.setattr(importlib.import_module("handit.sessions"), "_warned", set())  # this process's earlier tests
    out = tmp_path / "t.handit"
    handit.configure(output_file=str(out))

    class Broken:
        def start(self, session):
            pass

        def block(self, session, block):
            raise OSError("disk on fire")

        def events(self, session, events):
            raise OSError("disk on fire")

        def end(self, session):
            pass

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            with handit.session("sink") as s:
                s._sinks.append(Broken())
                for i in range(5):
                    takes(i)
    said = [w for w in caught if "disk on fire" in str(w.message)]
    assert len(said) == 1, [str(w.message) for w in caught]
    assert len(calls_of(s.events, "takes")) == 5  # the in-memory copy is whole
