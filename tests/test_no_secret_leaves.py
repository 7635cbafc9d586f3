"""Secrets traced through every exporter: none appears in any output byte; look-alikes stay visible."""
from __future__ import annotations

import gzip
import importlib
import io
import json
import sys

import pytest

import handit
from conftest import calls_of
from secrets_corpus import HARMLESS, SECRETS, leaked

sinks = importlib.import_module("handit.sinks")


def takes(api_key_value, note, payload):
    return payload


def returns(value):
    return {"result": [value]}


def raises(value):
    raise RuntimeError(f"request failed with {value}")


def long_arg(text):
    return len(text)


def workload():
    for _, secret in SECRETS:
        takes(secret, f"see {secret} here", {"nested": [secret], "auth": {"inner": secret}})
        returns(secret)
        try:
            raises(secret)
        except RuntimeError:
            pass
        long_arg("x" * 300 + secret)  # cut by HANDIT_MAX_STR
        long_arg(secret + "y" * 300)


def strings(value) -> str:
    """Every string inside events (numbers left out: a timestamp may contain any 8 digits)."""
    if isinstance(value, str):
        return value + "\n"
    if isinstance(value, dict):
        return "".join(strings(k) + strings(v) for k, v in value.items())
    if isinstance(value, list):
        return "".join(strings(v) for v in value)
    return ""


def check(blob: str) -> None:
    for _, secret in SECRETS:
        piece = leaked(blob, secret)
        assert piece is None, f"{secret[:6]}… leaked as {piece!r}"


def test_no_secret_in_any_output(engine, tmp_path):
    from ingest_server import IngestServer

    with IngestServer() as server:
        outputs = []
        for name in ("t.handit", "t.jsonl"):
            handit.configure(
                output_file=str(tmp_path / name),
                endpoint=server.url if name == "t.jsonl" else None,
                spool_dir=str(tmp_path / "spool"),
                capture="args",
            )
            with handit.session("secrets") as s:
                workload()
            path = tmp_path / name
            if name.endswith(".jsonl"):
                outputs.append(strings([json.loads(line) for line in path.read_text().splitlines()]))
            else:  # the compact file: its blocks hold previews as UTF-8 text, its JSON frames the rest
                from handit.tracefile import iter_frames, read_trace

                outputs.append(strings(read_trace(str(path))))
                outputs.append("".join(p.decode("utf-8", "replace") for t, _, p in iter_frames(str(path)) if t == b"B"))
            outputs.append(strings(s.events))
            assert len(calls_of(s.events, "takes")) == len(SECRETS)
        exporter = sinks._exporters.pop(server.url)
        exporter.flush(10)
        exporter.close()
        outputs.append(strings(server.events))
        assert server.events
    for blob in outputs:
        check(blob)


@pytest.mark.parametrize("value", HARMLESS)
def test_look_alikes_stay_visible(value):
    from handit._policy import Policy

    previewer = Policy(handit.get_config()).previewer
    assert "<redacted>" not in previewer.preview(value)


class Hostile:
    calls = 0

    def __repr__(self):
        Hostile.calls += 1
        raise RuntimeError("repr must not be called")

    def __str__(self):
        Hostile.calls += 1
        return "x"

    @property  # type: ignore[misc]
    def __class__(self):
        Hostile.calls += 1
        return int


def hostile_program(out):
    rec = [1]
    rec.append(rec)
    d = {}
    d["self"] = d
    values = [Hostile(), rec, d, b"\xff\xfe invalid", "lone \udcff surrogate", list(range(100000)), 10**5000 if sys.version_info < (3, 11) else 7]

    def f(*args, **kwargs):
        return args[0]

    for v in values:
        out.write(type(f(v, key=v)).__name__ + "\n")
    return len(values)


def test_hostile_objects_change_nothing(engine):
    plain = io.StringIO()
    hostile_program(plain)
    traced = io.StringIO()
    Hostile.calls = 0
    with handit.session("hostile") as s:
        hostile_program(traced)
    assert traced.getvalue() == plain.getvalue()
    assert Hostile.calls == 0
    json.dumps(s.events).encode("utf-8")  # every preview is valid UTF-8
    assert len(calls_of(s.events, "f")) == 7
