"""Tests for handit.config: defaults, validation messages, environment parsing, listeners."""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from typing import Any

import pytest

from handit import config as config_mod
from handit.config import (
    DEFAULT_EXCLUDE,
    DEFAULT_EXCLUDE_FILES,
    ENV_NAMES,
    Config,
    configure,
    get_config,
    on_change,
    reset_config,
)
from handit.errors import ConfigError, HanditConfigWarning, HanditError

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

# The table in docs/configuration.md, as Python values.
EXPECTED_DEFAULTS: dict[str, Any] = {
    "include": None,
    "exclude": DEFAULT_EXCLUDE,
    "exclude_files": DEFAULT_EXCLUDE_FILES,
    "capture_only_cwd": False,
    "sample_rate": 1.0,
    "max_str": 256,
    "max_locals": 50,
    "max_items": 8,
    "max_depth": 3,
    "redact": None,
    "redact_replace": False,
    "safe_keys": (),
    "capture": "args",
    "preview": "safe",
    "output_file": None,
    "output_format": "auto",
    "endpoint": None,
    "api_key": None,
    "allow_insecure_http": False,
    "flush_every_events": 200,
    "flush_every_ms": 1000,
    "max_buffer_events": 10_000,
    "max_buffer_bytes": 8 * 1024 * 1024,
    "spool_dir": "./handit_spool",
    "max_spool_bytes": 256 * 1024 * 1024,
    "http_timeout": 30.0,
    "exit_timeout": 2.0,
    "session_sample_rate": 1.0,
    "engine": "auto",
    "source": "auto",
    "require_compiled": False,
    "fast_tstate": True,
    "bounded_memory": False,
    "max_session_memory": 16 * 1024 * 1024,
    "children": True,
    "instrument_http": True,
    "redact_headers": (),
    "max_body": 4096,
    "otel": False,
    "otel_min_duration": 0.0,
    "otel_max_spans": 1000,
}


@pytest.fixture(autouse=True)
def clean_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """No HANDIT_* variable from the caller's shell, no current Config, no listeners."""
    for name in [key for key in os.environ if key.startswith("HANDIT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(config_mod, "_current", None)
    monkeypatch.setattr(config_mod, "_listeners", [])


# --- defaults ---------------------------------------------------------------------------


def test_defaults_match_the_table() -> None:
    config = Config.from_env({})
    assert {f.name: getattr(config, f.name) for f in dataclasses.fields(Config)} == EXPECTED_DEFAULTS
    assert Config() == config


def test_env_names_are_handit_plus_field_name() -> None:
    assert list(ENV_NAMES) == [f.name for f in dataclasses.fields(Config)]
    assert all(env == "HANDIT_" + name.upper() for name, env in ENV_NAMES.items())


def test_docs_list_every_setting() -> None:
    text = DOCS.read_text(encoding="utf-8")
    missing = [env for env in ENV_NAMES.values() if f"`{env}`" not in text]
    assert missing == []
    assert DEFAULT_EXCLUDE in text  # the page shows the pattern verbatim


def test_all_is_sorted() -> None:
    assert config_mod.__all__ == sorted(config_mod.__all__)


@pytest.mark.parametrize("path", [json.__file__, os.__file__, re.__file__], ids=["json", "os", "re"])
def test_default_exclude_files_excludes_the_stdlib(path: str) -> None:
    assert Config().compiled("exclude_files").search(path)  # type: ignore[union-attr]


@pytest.mark.parametrize("path", [
    pytest.__file__,
    "/home/u/.venv/lib/python3.12/site-packages/requests/api.py",
    "/usr/lib/python3/dist-packages/yaml/__init__.py",
    r"C:\Python312\Lib\site-packages\httpx\_client.py",
    "<frozen importlib._bootstrap>",
    "<string>",
])
def test_default_exclude_files_excludes_installed_and_generated_code(path: str) -> None:
    assert Config().compiled("exclude_files").search(path)  # type: ignore[union-attr]


@pytest.mark.parametrize("path", [
    __file__,
    str(pathlib.Path(__file__).parent / "pkg" / "module.py"),
    "/home/u/lib/python-tools/app.py",  # the original's `lib/python` rule excluded this
    "/srv/app/strings.py",
    "<stdin>",
])
def test_default_exclude_files_keeps_user_files(path: str) -> None:
    assert not Config().compiled("exclude_files").search(path)  # type: ignore[union-attr]


@pytest.mark.parametrize(("name", "excluded"), [
    ("json::dumps", True),
    ("json.decoder::JSONDecoder.decode", True),
    ("importlib.metadata::version", True),
    ("_frozen_importlib_external::SourceLoader.exec_module", True),
    ("handit._fallback::profile_call", True),
    ("requests.sessions::Session.request", True),
    ("app::<lambda>", True),
    ("app::main.<locals>.<lambda>", True),
    ("app::<genexpr>", True),
    ("json_utils::load", False),  # the original's `json.*` excluded this user module
    ("handit_demo::run", False),
    ("app::regex_helper", False),
    ("app::lambda_handler", False),
])
def test_default_exclude(name: str, excluded: bool) -> None:
    assert bool(Config().compiled("exclude").search(name)) is excluded  # type: ignore[union-attr]


# --- replace(): validation ----------------------------------------------------------------


@pytest.mark.parametrize(("settings", "setting", "value", "message"), [
    ({"sample_rate": 1.5}, "HANDIT_SAMPLE_RATE", 1.5, "HANDIT_SAMPLE_RATE: 1.5 is not a number between 0 and 1"),
    ({"sample_rate": -0.1}, "HANDIT_SAMPLE_RATE", -0.1, "HANDIT_SAMPLE_RATE: -0.1 is not a number between 0 and 1"),
    ({"sample_rate": float("nan")}, "HANDIT_SAMPLE_RATE", None, "HANDIT_SAMPLE_RATE: nan is not a number between 0 and 1"),
    ({"sample_rate": "0.5"}, "HANDIT_SAMPLE_RATE", "0.5", "HANDIT_SAMPLE_RATE: '0.5' is a str, not a number"),
    ({"session_sample_rate": True}, "HANDIT_SESSION_SAMPLE_RATE", True,
     "HANDIT_SESSION_SAMPLE_RATE: True is a bool, not a number"),
    ({"http_timeout": 0}, "HANDIT_HTTP_TIMEOUT", 0, "HANDIT_HTTP_TIMEOUT: 0 is not a number > 0"),
    ({"http_timeout": float("inf")}, "HANDIT_HTTP_TIMEOUT", float("inf"), "HANDIT_HTTP_TIMEOUT: inf is not a number > 0"),
    ({"max_str": 0}, "HANDIT_MAX_STR", 0, "HANDIT_MAX_STR: 0 is not an integer >= 16"),
    ({"max_str": 15}, "HANDIT_MAX_STR", 15, "HANDIT_MAX_STR: 15 is not an integer >= 16"),
    ({"max_locals": -1}, "HANDIT_MAX_LOCALS", -1, "HANDIT_MAX_LOCALS: -1 is not an integer >= 0"),
    ({"max_items": 2.0}, "HANDIT_MAX_ITEMS", 2.0, "HANDIT_MAX_ITEMS: 2.0 is a float, not an int"),
    ({"max_depth": True}, "HANDIT_MAX_DEPTH", True, "HANDIT_MAX_DEPTH: True is a bool, not an int"),
    ({"flush_every_events": 0}, "HANDIT_FLUSH_EVERY_EVENTS", 0, "HANDIT_FLUSH_EVERY_EVENTS: 0 is not an integer >= 1"),
    ({"max_buffer_bytes": "8MiB"}, "HANDIT_MAX_BUFFER_BYTES", "8MiB",
     "HANDIT_MAX_BUFFER_BYTES: '8MiB' is a str, not an int"),
    ({"include": "("}, "HANDIT_INCLUDE", "(",
     "HANDIT_INCLUDE: '(' is not a valid regular expression (missing ), unterminated subpattern at position 0)"),
    ({"exclude": "[a"}, "HANDIT_EXCLUDE", "[a",
     "HANDIT_EXCLUDE: '[a' is not a valid regular expression (unterminated character set at position 0)"),
    ({"exclude_files": ["site-packages"]}, "HANDIT_EXCLUDE_FILES", ["site-packages"],
     "HANDIT_EXCLUDE_FILES: ['site-packages'] is a list, not a regular expression string"),
    ({"redact": re.compile("x")}, "HANDIT_REDACT", None, "HANDIT_REDACT: re.compile('x') is a Pattern, not a regular"),
    ({"exclude": None}, "HANDIT_EXCLUDE", None, "HANDIT_EXCLUDE: None is a NoneType, not a regular expression string"),
    ({"capture_only_cwd": 1}, "HANDIT_CAPTURE_ONLY_CWD", 1, "HANDIT_CAPTURE_ONLY_CWD: 1 is an int, not a bool"),
    ({"redact_replace": "yes"}, "HANDIT_REDACT_REPLACE", "yes", "HANDIT_REDACT_REPLACE: 'yes' is a str, not a bool"),
    ({"capture": "none"}, "HANDIT_CAPTURE", "none", "HANDIT_CAPTURE: 'none' is not one of: timing, args, full"),
    ({"preview": "str"}, "HANDIT_PREVIEW", "str", "HANDIT_PREVIEW: 'str' is not one of: safe, repr"),
    ({"output_format": "csv"}, "HANDIT_OUTPUT_FORMAT", "csv",
     "HANDIT_OUTPUT_FORMAT: 'csv' is not one of: auto, handit, jsonl"),
    ({"engine": "cython"}, "HANDIT_ENGINE", "cython", "HANDIT_ENGINE: 'cython' is not one of: auto, compiled, fallback"),
    ({"source": "SYSMON"}, "HANDIT_SOURCE", "SYSMON", "HANDIT_SOURCE: 'SYSMON' is not one of: auto, sysmon, setprofile"),
    ({"safe_keys": "user,id"}, "HANDIT_SAFE_KEYS", "user,id", "HANDIT_SAFE_KEYS: 'user,id' is a str, not a tuple of names"),
    ({"safe_keys": ("ok", "")}, "HANDIT_SAFE_KEYS", ("ok", ""),
     "HANDIT_SAFE_KEYS: ('ok', '') is not a collection of non-empty str names"),
    ({"output_file": 3}, "HANDIT_OUTPUT_FILE", 3, "HANDIT_OUTPUT_FILE: 3 is an int, not a path"),
    ({"spool_dir": ""}, "HANDIT_SPOOL_DIR", "", "HANDIT_SPOOL_DIR: '' is empty"),
    ({"endpoint": "ingest.example.com"}, "HANDIT_ENDPOINT", "ingest.example.com",
     "HANDIT_ENDPOINT: 'ingest.example.com' is not an http:// or https:// URL"),
    ({"endpoint": "ftp://example.com/x"}, "HANDIT_ENDPOINT", "ftp://example.com/x",
     "HANDIT_ENDPOINT: 'ftp://example.com/x' is not an http:// or https:// URL"),
    ({"HANDIT_SAMPLE_RATE": 2}, "HANDIT_SAMPLE_RATE", 2, "HANDIT_SAMPLE_RATE: 2 is not a number between 0 and 1"),
    ({"sampel_rate": 0.5}, "sampel_rate", 0.5, "sampel_rate=0.5: unknown setting; did you mean sample_rate?"),
    ({"HANDIT_SAMPLERATE": 0.5}, "HANDIT_SAMPLERATE", 0.5,
     "HANDIT_SAMPLERATE=0.5: unknown setting; did you mean HANDIT_SAMPLE_RATE?"),
    ({"zzz": 1}, "zzz", 1, "zzz=1: unknown setting"),
    ({"sample_rate": 0.5, "HANDIT_SAMPLE_RATE": 0.25}, "HANDIT_SAMPLE_RATE", 0.25,
     "HANDIT_SAMPLE_RATE=0.25: sample_rate is already given in this call"),
], ids=lambda param: None if not isinstance(param, dict) else ",".join(param))
def test_replace_rejects(settings: dict[str, Any], setting: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config().replace(**settings)
    error = info.value
    assert str(error).startswith(message)
    assert error.setting == setting
    if value is not None:
        assert error.value == value


def test_config_error_is_a_value_error_and_a_handit_error() -> None:
    with pytest.raises(ConfigError) as info:
        Config(max_locals=-5)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, HanditError)
    assert (info.value.setting, info.value.value) == ("HANDIT_MAX_LOCALS", -5)


def test_api_key_never_shown() -> None:
    secret = b"sk-live-0123456789"
    with pytest.raises(ConfigError) as info:
        Config(api_key=secret)  # type: ignore[arg-type]
    assert "sk-live" not in str(info.value)
    assert "HANDIT_API_KEY: <redacted> is a bytes, not a str" == str(info.value)
    assert info.value.value == "<redacted>"  # the exception carries no secret either
    assert "sk-live" not in repr(Config(api_key="sk-live-0123456789"))


def test_long_values_are_shortened_in_messages() -> None:
    with pytest.raises(ConfigError) as info:
        Config().replace(exclude=["x" * 10_000])
    assert len(str(info.value)) < 250


def test_replace_accepts_both_spellings_and_normalizes() -> None:
    base = Config()
    config = base.replace(
        sample_rate=1, HANDIT_MAX_STR=64, safe_keys=["user_id", "token_count", "user_id"],
        spool_dir=pathlib.Path("spool"), output_file=pathlib.Path("out.jsonl"), include="",
    )
    assert config.sample_rate == 1.0 and isinstance(config.sample_rate, float)
    assert config.max_str == 64
    assert config.safe_keys == ("user_id", "token_count")
    assert config.spool_dir == "spool" and config.output_file == "out.jsonl"
    assert config.include is None
    assert base == Config()  # unchanged
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_str = 1  # type: ignore[misc]


def test_config_is_hashable() -> None:
    assert hash(Config()) == hash(Config())


@pytest.mark.parametrize(("output_file", "output_format", "resolved"), [
    (None, "auto", "handit"),
    ("trace.handit", "auto", "handit"),
    ("trace.jsonl", "auto", "jsonl"),
    ("trace.jsonl", "handit", "handit"),
    ("trace.out", "jsonl", "jsonl"),
])
def test_resolved_output_format(output_file: str | None, output_format: str, resolved: str) -> None:
    assert Config(output_file=output_file, output_format=output_format).resolved_output_format == resolved


# --- compiled() ----------------------------------------------------------------------------


def test_compiled_is_cached_per_pattern() -> None:
    first = Config(include=r"^app\.").compiled("include")
    assert first is not None and first.pattern == r"^app\."
    assert Config(include=r"^app\.", max_str=99).compiled("HANDIT_INCLUDE") is first


def test_compiled_none_without_pattern() -> None:
    config = Config(exclude="", exclude_files="")
    assert config.compiled("include") is None
    assert config.compiled("redact") is None
    assert config.compiled("exclude") is None
    assert config.compiled("exclude_files") is None


@pytest.mark.parametrize("name", ["max_str", "nope"])
def test_compiled_rejects_non_regex_settings(name: str) -> None:
    with pytest.raises(ValueError, match="is not a regex setting"):
        Config().compiled(name)


# --- from_env() ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["1", "true", "TRUE", "True", "yes", "Yes", "on", "ON", " 1 ", "true\n"])
def test_bool_true(text: str) -> None:
    assert Config.from_env({"HANDIT_CAPTURE_ONLY_CWD": text}).capture_only_cwd is True


@pytest.mark.parametrize("text", ["0", "false", "FALSE", "no", "No", "off", "OFF", " 0 "])
def test_bool_false(text: str) -> None:
    config = Config.from_env({"HANDIT_REQUIRE_COMPILED": text, "HANDIT_BOUNDED_MEMORY": text})
    assert config.require_compiled is False and config.bounded_memory is False


@pytest.mark.parametrize("text", ["2", "y", "n", "enabled", "-1", "tru"])
def test_bool_invalid_warns_and_uses_default(text: str) -> None:
    with pytest.warns(HanditConfigWarning) as record:
        config = Config.from_env({"HANDIT_ALLOW_INSECURE_HTTP": text})
    assert config.allow_insecure_http is False
    assert str(record[0].message) == (
        f"HANDIT_ALLOW_INSECURE_HTTP={text!r} ignored: not a boolean "
        "(use 1/0, true/false, yes/no or on/off); using default False"
    )


def test_from_env_converts_every_kind() -> None:
    config = Config.from_env({
        "HANDIT_INCLUDE": r"^myapp(\.|::)",
        "HANDIT_SAMPLE_RATE": "0.25",
        "HANDIT_SESSION_SAMPLE_RATE": "1",
        "HANDIT_MAX_STR": " 1024 ",
        "HANDIT_MAX_SPOOL_BYTES": "0",
        "HANDIT_HTTP_TIMEOUT": "2.5",
        "HANDIT_SAFE_KEYS": " user_id, token_count ,,",
        "HANDIT_CAPTURE": "FULL",
        "HANDIT_ENGINE": "Fallback",
        "HANDIT_SOURCE": "setprofile",
        "HANDIT_OUTPUT_FILE": "trace.jsonl",
        "HANDIT_ENDPOINT": "https://ingest.example.com/v1/events",
        "HANDIT_API_KEY": "sk-test",
        "HANDIT_REDACT_REPLACE": "on",
        "PATH": "/usr/bin",  # not ours: ignored silently
    })
    assert config.include == r"^myapp(\.|::)"
    assert config.sample_rate == 0.25 and config.session_sample_rate == 1.0
    assert config.max_str == 1024 and config.max_spool_bytes == 0
    assert config.http_timeout == 2.5
    assert config.safe_keys == ("user_id", "token_count")
    assert (config.capture, config.engine, config.source) == ("full", "fallback", "setprofile")
    assert config.output_file == "trace.jsonl" and config.resolved_output_format == "jsonl"
    assert config.endpoint == "https://ingest.example.com/v1/events"
    assert config.api_key == "sk-test"
    assert config.redact_replace is True


def test_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDIT_MAX_LOCALS", "7")
    assert Config.from_env().max_locals == 7


@pytest.mark.parametrize(("name", "text", "message"), [
    ("HANDIT_SAMPLE_RATE", "1.5", "HANDIT_SAMPLE_RATE='1.5' ignored: not a number between 0 and 1; using default 1.0"),
    ("HANDIT_SAMPLE_RATE", "half", "HANDIT_SAMPLE_RATE='half' ignored: not a number between 0 and 1; using default 1.0"),
    ("HANDIT_SAMPLE_RATE", "nan", "HANDIT_SAMPLE_RATE='nan' ignored: not a number between 0 and 1; using default 1.0"),
    ("HANDIT_MAX_STR", "0", "HANDIT_MAX_STR='0' ignored: not an integer >= 16; using default 256"),
    ("HANDIT_MAX_LOCALS", "1.5", "HANDIT_MAX_LOCALS='1.5' ignored: not an integer >= 0; using default 50"),
    ("HANDIT_MAX_BUFFER_BYTES", "8MiB",
     "HANDIT_MAX_BUFFER_BYTES='8MiB' ignored: not an integer >= 1; using default 8388608"),
    ("HANDIT_HTTP_TIMEOUT", "-3", "HANDIT_HTTP_TIMEOUT='-3' ignored: not a number > 0; using default 30.0"),
    ("HANDIT_CAPTURE", "everything",
     "HANDIT_CAPTURE='everything' ignored: not one of: timing, args, full; using default 'args'"),
    ("HANDIT_INCLUDE", "app(",
     "HANDIT_INCLUDE='app(' ignored: not a valid regular expression (missing ), unterminated subpattern "
     "at position 3); using default None"),
    ("HANDIT_ENDPOINT", "localhost:8080",
     "HANDIT_ENDPOINT='localhost:8080' ignored: not an http:// or https:// URL; using default None"),
])
def test_env_bad_value_warns_and_uses_default(name: str, text: str, message: str) -> None:
    with pytest.warns(HanditConfigWarning) as record:
        config = Config.from_env({name: text})
    assert [str(w.message) for w in record] == [message]
    field_name = name.removeprefix("HANDIT_").lower()
    assert getattr(config, field_name) == EXPECTED_DEFAULTS[field_name]


def test_env_bad_regex_default_is_shortened() -> None:
    with pytest.warns(HanditConfigWarning, match=r"^HANDIT_EXCLUDE='\(' ignored: .*; using default '\^") as record:
        Config.from_env({"HANDIT_EXCLUDE": "("})
    assert len(str(record[0].message)) < 300


@pytest.mark.parametrize(("name", "message"), [
    ("HANDIT_SAMPLERATE", "HANDIT_SAMPLERATE is not a handit setting; ignored; did you mean HANDIT_SAMPLE_RATE?"),
    ("HANDIT_MAX_STRING", "HANDIT_MAX_STRING is not a handit setting; ignored; did you mean HANDIT_MAX_STR?"),
    ("HANDIT_QQQQQQQQQ", "HANDIT_QQQQQQQQQ is not a handit setting; ignored"),
])
def test_env_unknown_name_warns(name: str, message: str) -> None:
    with pytest.warns(HanditConfigWarning) as record:
        config = Config.from_env({name: "1"})
    assert [str(w.message) for w in record] == [message]
    assert config == Config()


def test_env_warnings_all_reported_good_values_kept() -> None:
    with pytest.warns(HanditConfigWarning) as record:
        config = Config.from_env({"HANDIT_MAX_STR": "x", "HANDIT_MAX_DEPTH": "5", "HANDIT_INCLDUE": ".*"})
    assert len(record) == 2
    assert config.max_depth == 5 and config.max_str == 256


def test_env_empty_counts_as_unset() -> None:
    config = Config.from_env({
        "HANDIT_MAX_STR": "", "HANDIT_SAMPLE_RATE": " ", "HANDIT_SPOOL_DIR": "",
        "HANDIT_OUTPUT_FILE": "", "HANDIT_CAPTURE_ONLY_CWD": "", "HANDIT_INCLUDE": "", "HANDIT_REDACT": "",
    })
    assert config == Config()


def test_env_empty_exclude_means_exclude_nothing() -> None:
    config = Config.from_env({"HANDIT_EXCLUDE": "", "HANDIT_EXCLUDE_FILES": ""})
    assert config.exclude == "" and config.compiled("exclude") is None
    assert config.exclude_files == "" and config.compiled("exclude_files") is None


def test_env_api_key_not_echoed_in_warnings() -> None:
    # An API key is any non-empty string, so it never warns; nothing else echoes it.
    with pytest.warns(HanditConfigWarning) as record:
        Config.from_env({"HANDIT_API_KEY": "sk-live-123", "HANDIT_API_KEYS": "sk-live-456"})
    assert all("sk-live" not in str(w.message) for w in record)


def test_env_api_key_typo_is_named_without_value() -> None:
    with pytest.warns(HanditConfigWarning, match="did you mean HANDIT_API_KEY"):
        Config.from_env({"HANDIT_APIKEY": "sk-live-789"})


# --- module-level current config --------------------------------------------------------------


def test_get_config_reads_environment_lazily_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDIT_MAX_DEPTH", "6")
    first = get_config()
    assert first.max_depth == 6
    monkeypatch.setenv("HANDIT_MAX_DEPTH", "1")
    assert get_config() is first


def test_configure_accumulates_and_notifies() -> None:
    seen: list[Config] = []
    on_change(seen.append)
    first = configure(sample_rate=0.5)
    second = configure(HANDIT_MAX_STR=100)
    assert (second.sample_rate, second.max_str) == (0.5, 100)
    assert get_config() is second
    assert seen == [first, second]


def test_on_change_is_a_decorator() -> None:
    seen: list[float] = []

    @on_change
    def listener(config: Config) -> None:
        seen.append(config.sample_rate)

    assert callable(listener)
    configure(sample_rate=0.1)
    assert seen == [0.1]


def test_failed_configure_changes_nothing() -> None:
    seen: list[Config] = []
    on_change(seen.append)
    before = configure(max_items=4)
    with pytest.raises(ConfigError, match="HANDIT_MAX_ITEMS: -4"):
        configure(max_items=-4)
    with pytest.raises(ConfigError, match="unknown setting"):
        configure(max_itmes=4)
    assert get_config() is before
    assert seen == [before]


def test_reset_config_rereads_environment_and_notifies(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Config] = []
    on_change(seen.append)
    configure(max_locals=3, capture="timing")
    monkeypatch.setenv("HANDIT_CAPTURE", "full")
    config = reset_config()
    assert (config.max_locals, config.capture) == (50, "full")
    assert get_config() is config
    assert seen[-1] is config and len(seen) == 2


def test_reset_config_warns_on_bad_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDIT_SAMPLE_RATE", "2")
    with pytest.warns(HanditConfigWarning, match="HANDIT_SAMPLE_RATE='2' ignored"):
        config = reset_config()
    assert config.sample_rate == 1.0


def test_listener_may_read_the_new_config() -> None:
    seen: list[bool] = []
    on_change(lambda config: seen.append(get_config() is config))
    configure(max_depth=2)
    assert seen == [True]
