"""Tests for handit.redact: name rules, value formats, URLs, headers and JSON-like values."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

from handit import redact
from handit.errors import ConfigError
from handit.redact import REDACTED, Redactor

try:
    from tests.secrets_corpus import HARMLESS, HARMLESS_NAMES, SECRET_NAMES, SECRETS, leaked
except ImportError:  # tests/ itself is on sys.path (pytest rootdir insertion)
    from secrets_corpus import HARMLESS, HARMLESS_NAMES, SECRET_NAMES, SECRETS, leaked

R = Redactor()
SECRET_IDS = [f"{i}-{fmt}" for i, (fmt, _) in enumerate(SECRETS)]
SECRET_VALUES = [value for _, value in SECRETS]
# A "Name: value" header runs to the end of the line; a PEM block without its END line
# runs on over every character a PEM body can hold (letters and spaces included).
RUNS_ON = ("X-Api-Key: ", "-----BEGIN ENCRYPTED")


def assert_no_leak(output: str, value: str) -> None:
    piece = leaked(output, value)
    assert piece is None, f"secret piece {piece!r} found in {output[:300]!r}"


def test_all_is_sorted_and_public() -> None:
    assert redact.__all__ == sorted(redact.__all__)
    assert set(redact.__all__) == {"REDACTED", "Redactor"}


def test_corpus_size() -> None:
    assert len(SECRETS) >= 60
    assert len({fmt for fmt, _ in SECRETS}) >= 15
    assert len(HARMLESS) >= 60


def test_marker_echoes_nothing() -> None:
    assert REDACTED == "<redacted>"
    assert R.redact_text("password=hunter22") == "password=<redacted>"


# -- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names(name: str) -> None:
    assert R.is_secret_name(name)


@pytest.mark.parametrize("name", HARMLESS_NAMES)
def test_harmless_names(name: str) -> None:
    assert not R.is_secret_name(name)


def test_extra_pattern_extends_builtin_rules() -> None:
    r = Redactor(extra_name_pattern=r"^ssn$|social")
    assert r.is_secret_name("SSN")
    assert r.is_secret_name("social_security")
    assert r.is_secret_name("password")  # built-in rules still apply
    assert not r.is_secret_name("monkey")


def test_extra_pattern_replaces_builtin_rules() -> None:
    r = Redactor(extra_name_pattern=r"^ssn$", replace_names=True)
    assert r.is_secret_name("ssn")
    assert not r.is_secret_name("password")
    assert r.redact_text("password=hunter22") == "password=hunter22"
    assert r.redact_text("ssn=123-45-6789") == "ssn=<redacted>"
    # value formats are never switched off
    key = "sk-proj-" + "Ab1" * 10
    assert r.redact_text(key) == REDACTED


def test_replace_without_pattern_disables_name_rules() -> None:
    assert not Redactor(replace_names=True).is_secret_name("password")


def test_safe_keys_exempt_names_exactly() -> None:
    r = Redactor(safe_keys=["Token", "csrf_token"])
    assert not r.is_secret_name("token")
    assert not r.is_secret_name("CSRF_TOKEN")
    assert r.is_secret_name("access_token")
    assert r.redact_text("token=abc123") == "token=abc123"
    assert r.redact_headers({"Cookie": "a=1"}) == {"Cookie": REDACTED}
    assert Redactor(safe_keys=["cookie"]).redact_headers({"Cookie": "a=1"}) == {"Cookie": "a=1"}


def test_invalid_extra_pattern_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="HANDIT_REDACT"):
        Redactor(extra_name_pattern="(unclosed")


def test_long_strings_are_not_names() -> None:
    assert not R.is_secret_name("password " * 100)


# -- values: the corpus --------------------------------------------------------------------


@pytest.mark.parametrize("value", SECRET_VALUES, ids=SECRET_IDS)
def test_secret_bare(value: str) -> None:
    out = R.redact_text(value)
    assert REDACTED in out
    assert_no_leak(out, value)


@pytest.mark.parametrize("value", SECRET_VALUES, ids=SECRET_IDS)
def test_secret_in_sentence(value: str) -> None:
    out = R.redact_text(f"calling the API with {value} failed (retry 3 of 5)")
    assert out.startswith("calling the API with ")
    if not value.startswith(RUNS_ON):
        assert out.endswith("failed (retry 3 of 5)")
    assert_no_leak(out, value)


@pytest.mark.parametrize("value", SECRET_VALUES, ids=SECRET_IDS)
def test_secret_in_json_text(value: str) -> None:
    text = json.dumps({"note": value, "id": 7, "nested": {"list": ["a", value]}})
    out = R.redact_text(text)
    assert '"id": 7' in out
    assert_no_leak(out, value)


@pytest.mark.parametrize("value", SECRET_VALUES, ids=SECRET_IDS)
def test_secret_in_url_query(value: str) -> None:
    url = "https://api.example.com/v1/search?q=" + quote(value, safe="") + "&page=2"
    out = R.redact_url(url)
    assert out.startswith("https://api.example.com/v1/search?q=")
    assert out.endswith("&page=2")
    assert_no_leak(out, value)


@pytest.mark.parametrize("value", SECRET_VALUES, ids=SECRET_IDS)
def test_secret_in_structures(value: str) -> None:
    body = {"user": "alice", "items": [value, {"deep": (value, 1)}], "raw": value.encode()}
    out = R.redact_mapping(body)
    assert out["user"] == "alice"
    assert_no_leak(repr(out), value)
    headers = R.redact_headers([("X-Debug", value), ("Accept", "application/json")])
    assert headers["Accept"] == "application/json"
    assert_no_leak(json.dumps(headers), value)


@pytest.mark.parametrize("value", SECRET_VALUES, ids=SECRET_IDS)
def test_redaction_is_idempotent(value: str) -> None:
    once = R.redact_text(f"x {value} y")
    assert R.redact_text(once) == once


@pytest.mark.parametrize("text", HARMLESS)
def test_harmless_values_stay_visible(text: str) -> None:
    assert R.redact_text(text) == text
    assert R.redact_mapping({"note": text}) == {"note": text}


def test_harmless_urls_unchanged() -> None:
    for url in (
        "https://example.com/path?page=2&sort=desc#top",
        "http://localhost:8080/api/v1/health?verbose",
        "https://alice@example.com/",
        "/relative/path?key=value&max_tokens=5",
    ):
        assert R.redact_url(url) == url


def test_short_strings_take_the_fast_path() -> None:
    for s in ("", "a", "hello", "user-1234", "monkey"):
        assert R.redact_text(s) is s


# -- values: specific rules ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password=hunter22 user=bob", "password=<redacted> user=bob"),
        ("pwd=x", "pwd=<redacted>"),
        ('{"password": "two words", "user": "x"}', '{"password": "<redacted>", "user": "x"}'),
        ("{'api_key': 'abc', 'n': 1}", "{'api_key': '<redacted>', 'n': 1}"),
        ('{\\"token\\": \\"abc\\"}', '{\\"token\\": \\"<redacted>\\"}'),
        ('{"pwd": "a\\"b", "n": 1}', '{"pwd": "<redacted>", "n": 1}'),
        ('"credentials": {"user": "a", "pass": "b"}, "n": 1', '"credentials": <redacted>, "n": 1'),
        ("Authorization: Bearer abcDEF123456789\r\nHost: x", "Authorization: <redacted>\r\nHost: x"),
        ("auth=Basic dXNlcjpwYXNz&x=1", "auth=<redacted>&x=1"),
        ("Set-Cookie: sid=1; Path=/\nVary: *", "Set-Cookie: <redacted>\nVary: *"),
        ("f(secret_key = 'abc', n=1)", "f(secret_key = '<redacted>', n=1)"),
        ("note: see password=abc", "note: see password=<redacted>"),
        ("token == 'x'", "token == 'x'"),
        ("mod::auth::login", "mod::auth::login"),
        ("postgres://u:p@ss:w@rd@db:5432/x", "postgres://u:<redacted>@db:5432/x"),
        ("see https://x.io/cb#access_token=abc123&state=1", "see https://x.io/cb#access_token=<redacted>&state=1"),
        ("hooks.slack.com/services/T0/B0/abcdefghijkl", "hooks.slack.com/services/<redacted>"),
        ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "Bearer <redacted>"),
        ("bearer abcdefgh12345", "bearer <redacted>"),
    ],
)
def test_rules(text: str, expected: str) -> None:
    assert R.redact_text(text) == expected


def test_cut_secrets_are_still_caught() -> None:
    assert R.redact_text("key: sk-ab1cdefghijklmnopq") == "key: <redacted>"  # 17 chars after sk-
    assert R.redact_text("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA") == REDACTED
    assert R.redact_text('{"password": "hunter2-and-then-cu') == '{"password": "<redacted>'
    assert R.redact_text("id AKIAIOSFODNN7E") == "id <redacted>"
    assert R.redact_text("eyJhbGciOiJIUzI1NiJ9.eyJzdWIi") == REDACTED


def test_cards_need_luhn() -> None:
    assert R.redact_text("card 4111 1111 1111 1111 ok") == "card <redacted> ok"
    assert R.redact_text("card 4111-1111-1111-1111") == "card <redacted>"
    assert R.redact_text("card 4111 1111 1111 1112 ok") == "card 4111 1111 1111 1112 ok"
    assert R.redact_text("ts=1716000000123456789") == "ts=1716000000123456789"
    assert R.redact_text("pi=3.4111111111111111") == "pi=3.4111111111111111"


def test_redact_url_userinfo_and_params() -> None:
    assert (
        R.redact_url("https://bob:hunter2@example.com/a?api_key=xyz&page=2&sig=abc#x")
        == "https://bob:<redacted>@example.com/a?api_key=<redacted>&page=2&sig=<redacted>#x"
    )
    assert R.redact_url("https://x.io/?q=Bearer%20abcDEF123456") == "https://x.io/?q=<redacted>"
    assert (
        R.redact_url("https://s3.example.com/b/k?X-Amz-Credential=AK%2F1&X-Amz-Signature=ff00")
        == "https://s3.example.com/b/k?X-Amz-Credential=<redacted>&X-Amz-Signature=<redacted>"
    )


def test_redact_headers() -> None:
    headers = {
        "Authorization": "Bearer abc",
        "proxy-authorization": "Basic abc",
        "Cookie": "a=1",
        "Set-Cookie": "b=2",
        "X-Api-Key": "k",
        "X-Auth-Token": "t",
        "Content-Type": "application/json",
        "X-Note": "password=abc",
    }
    assert R.redact_headers(headers) == {
        "Authorization": REDACTED,
        "proxy-authorization": REDACTED,
        "Cookie": REDACTED,
        "Set-Cookie": REDACTED,
        "X-Api-Key": REDACTED,
        "X-Auth-Token": REDACTED,
        "Content-Type": "application/json",
        "X-Note": "password=<redacted>",
    }
    pairs = [(b"Accept", b"a"), (b"Accept", b"b"), (b"set-cookie", b"x=1")]
    assert R.redact_headers(pairs) == {"Accept": "a, b", "set-cookie": REDACTED}


def test_redact_mapping() -> None:
    body = {"password": "x", "nested": [{"token": 1, "n": 2}], "t": ("password=y",), 3: "z"}
    assert R.redact_mapping(body) == {
        "password": REDACTED,
        "nested": [{"token": REDACTED, "n": 2}],
        "t": ("password=<redacted>",),
        3: "z",
    }
    cyclic: list[object] = [1]
    cyclic.append(cyclic)
    assert R.redact_mapping(cyclic) == [1, REDACTED]
    deep: list[object] = []
    cur = deep
    for _ in range(100):
        nxt: list[object] = []
        cur.append(nxt)
        cur = nxt
    assert "<redacted>" in repr(R.redact_mapping(deep))
    assert R.redact_mapping(b"password=x") == b"password=<redacted>"
    obj = object()
    assert R.redact_mapping(obj) is obj


def test_long_text_is_scanned_linearly(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan passes over each character a bounded number of times, whatever the text's length
    (the characters the combined pattern searched over, counted, not timed)."""
    scanned = [0]
    search = redact._SCAN

    def counting(s: str, pos: int = 0) -> Any:
        m = search(s, pos)
        scanned[0] += (m.end() if m else len(s)) - pos
        return m

    monkeypatch.setattr(redact, "_SCAN", counting)
    for reps in (300, 3000):
        text = ("lorem ipsum dolor sit amet, a=1 b:2 " * reps) + " password=hunter22"
        scanned[0] = 0
        assert R.redact_text(text).endswith("password=<redacted>")
        assert scanned[0] <= 2 * len(text), (reps, scanned[0], len(text))
    assert R.redact_text("a" * 100_000) == "a" * 100_000
    assert R.redact_text("1" * 100_000) == "1" * 100_000


def test_issue_look_alikes_stay_visible_and_near_misses_do_not() -> None:
    for name in ("password_reset_url", "session_id_prefix"):
        assert not R.is_secret_name(name)
    for text in ("auth: ok", "sk-learn-compatible-estimator-v2", "eyJustKidding.x"):
        assert R.redact_text(text) == text
    # the same shapes holding a secret are still caught
    assert R.is_secret_name("password_reset_token")
    assert R.is_secret_name("session_id")
    assert R.redact_text("auth: okay-but-secret-7") == "auth: <redacted>"
    assert R.redact_text("password: xxxx") == "password: <redacted>"
    assert R.redact_text("sk-learn-Ab3dE7gH9jK1mN") == REDACTED
    assert R.redact_text("eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.") == REDACTED


def test_clean_header_values_and_urls_are_remembered_never_secrets():
    # HTTP recording remembers values and URLs found clean (scanned once); a secret is
    # redacted every time and never kept in those caches
    r = Redactor()
    key = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" * 2
    clean = {"User-Agent": "python-requests/2.32", "Accept": "*/*"}
    for _ in range(3):
        assert r.redact_headers(clean) == clean
        assert r.redact_headers({"X-Note": f"key {key}"}) == {"X-Note": f"key {REDACTED}"}
        assert r.redact_url("http://h/v1/models?limit=5") == "http://h/v1/models?limit=5"
        assert key not in r.redact_url(f"http://h/v1/models?q={key}")
    assert set(clean.values()) <= r._clean_values
    assert not any(key in v for v in r._clean_values | r._clean_urls)
    assert "http://h/v1/models?limit=5" in r._clean_urls
