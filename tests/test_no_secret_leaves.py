"""Secrets traced through every exporter: none appears in any output byte; look-alikes stay visible."""
from __future__ import annotations

import gzip
import importlib
import io
import json
import sys
import warnings
from urllib.parse import quote

import pytest

import handit
from conftest import calls_of
from handit.config import Config
from handit.errors import ConfigError
from handit.exporters.webhook import HanditExportWarning, WebhookExporter
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


# Session attributes: each secret under a secret name and inside free text, plus harmless ones.
SECRET_ATTRS = {"model": "gpt-4o-mini", "user": "alice"}
for _i, (_, _secret) in enumerate(SECRETS):
    SECRET_ATTRS[f"api_key_{_i}"] = _secret
    SECRET_ATTRS[f"note_{_i}"] = f"deployed with {_secret} today"


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
            with handit.session("secrets", attrs=SECRET_ATTRS) as s:
                workload()
            assert "model" in s.attrs and s.attrs["model"] == "gpt-4o-mini"  # look-alikes stay
            outputs.append(strings(s.attrs))
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
        assert [e["attrs"]["user"] for e in server.events if e["type"] == "session_start"] == ["alice"]
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


# -- configuration errors, warnings and reprs ---------------------------------------------

SECRET_IDS = [f"{fmt}-{i}" for i, (fmt, _) in enumerate(SECRETS)]


def no_leak(secret: str, *texts: object) -> None:
    for text in texts:
        piece = leaked(str(text), secret)
        assert piece is None, f"{secret[:6]}… leaked as {piece!r} in {str(text)[:200]!r}"


def bad_urls(secret: str) -> list[str]:
    """Endpoints that are refused (ftp://) and carry ``secret`` in every part of a URL."""
    token = quote(secret, safe="")
    return [
        f"ftp://deploy:{token}@ingest.example.com/v1",
        f"ftp://ingest.example.com/hooks/{token}",
        f"ftp://ingest.example.com/hooks/{secret}",
        f"ftp://ingest.example.com/v1?page=2&sig={token}",
        f"ftp://ingest.example.com/v1?api_key={token}",
        f"ftp://ingest.example.com/v1#access_token={token}",
    ]


@pytest.mark.parametrize("secret", [s for _, s in SECRETS], ids=SECRET_IDS)
def test_config_errors_never_carry_a_secret(secret: str) -> None:
    attempts = [dict(api_key=secret.encode()), dict(api_key=[secret]), dict(max_str=secret),
                dict(HANDIT_SAMPLE_RATE=secret), dict(output_format=secret), dict(capture=secret),
                dict(safe_keys=secret), dict(apikey=secret)]
    attempts += [dict(endpoint=url) for url in bad_urls(secret)]
    for settings in attempts:
        with pytest.raises(ConfigError) as info:
            handit.get_config().replace(**settings)
        error = info.value
        no_leak(secret, str(error), repr(error), repr(error.value), error.args)
    with pytest.raises(ConfigError) as info:
        WebhookExporter("https://ingest.example.com/", "bad\r\n" + secret)
    no_leak(secret, str(info.value), repr(info.value), repr(info.value.value))


@pytest.mark.parametrize("secret", [s for _, s in SECRETS], ids=SECRET_IDS)
def test_config_warnings_never_carry_a_secret(secret: str) -> None:
    environ = {"HANDIT_OUTPUT_FORMAT": secret, "HANDIT_PREVIEW": secret, "HANDIT_CAPTURE": secret}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        Config.from_env(environ)
        for url in bad_urls(secret):
            Config.from_env({"HANDIT_ENDPOINT": url})
    assert len(record) == 3 + len(bad_urls(secret))
    no_leak(secret, *(w.message for w in record))


@pytest.mark.parametrize("secret", [s for _, s in SECRETS], ids=SECRET_IDS)
def test_exporter_repr_and_warnings_never_carry_a_secret(secret: str, tmp_path) -> None:
    token = quote(secret, safe="")
    for url in (f"http://127.0.0.1:9/hooks/{token}", f"http://127.0.0.1:9/v1?sig={token}",
                f"http://127.0.0.1:9/v1?api_key={token}"):
        exporter = WebhookExporter(url, spool_dir=str(tmp_path / "spool"), max_retries=0, timeout=2.0)
        with pytest.warns(HanditExportWarning) as record:
            exporter.write_events([{"type": "call", "seq": 1}])
            exporter.flush(5)
        exporter.close()
        config = handit.get_config().replace(endpoint=url)
        no_leak(secret, repr(exporter), repr(config), *(w.message for w in record))
    if "://" in secret:  # a URL secret as the endpoint itself (a webhook URL, credentials)
        try:
            exporter = WebhookExporter(secret, spool_dir=str(tmp_path / "spool"))
        except ConfigError as error:
            no_leak(secret, str(error), repr(error), repr(error.value))
        else:
            exporter.close()
            no_leak(secret, repr(exporter))


def test_secret_free_config_errors_keep_their_value() -> None:
    with pytest.raises(ConfigError) as info:
        handit.get_config().replace(endpoint="ftp://ingest.example.com/v1/events?page=2")
    assert info.value.value == "ftp://ingest.example.com/v1/events?page=2"
    assert "'ftp://ingest.example.com/v1/events?page=2'" in str(info.value)
    with pytest.raises(ConfigError) as info:
        handit.get_config().replace(max_str=3)
    assert info.value.value == 3
