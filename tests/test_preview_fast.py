"""The compiled engine's C previews give the previewer's output byte for byte, and no secret fits them."""
from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import uuid

import pytest

import handit
from handit.preview import Previewer, register_preview, unregister_preview
from handit.redact import Redactor
from secrets_corpus import HARMLESS, SECRETS

pytestmark = pytest.mark.engine_dependent  # its tests run an engine outside the `engine` fixture

FAST = [None, True, False, 0, 5, -3, 10**12 - 1, -(10**12) + 1, 2.5, -0.0, 1e-300, 999999999999.5, float("nan"), "", "x", "abc def", "it's", '"q"', "tab", "GET", "~!@#$%^", "eleven char", "back\\slash"]


class Plain:
    pass


class Color(enum.Enum):
    RED = 1


Point = collections.namedtuple("Point", "x y")


@dataclasses.dataclass
class Row:
    a: int = 1


class MyDict(dict):
    pass


def _values() -> list:
    """Every shape the C previews take or hand back to the previewer."""
    secret = SECRETS[0][1]
    cyclic: list = [1]
    cyclic.append(cyclic)
    return FAST + [
        10**13, -(10**15), 1e13, 10**40, "a longer string", "é", "line\nbreak", "quote ' and \" both",
        "sk-" + "a" * 40, secret, "x" * 255, "y" * 256, "z" * 257, "q'" * 100, "password=hunter22",
        "a:b", "key: value", "token=abc", ("lorem ipsum dolor sit amet " * 8)[:200],
        {}, [], (), set(), frozenset(), {"k": [1, "two"]}, (1,), ("a",), (1, 2), [1, 2.5, None, True],
        list(range(10)), list(range(8)), list(range(9)), tuple(range(20)), {3, 1, 2}, {"a", "b"},
        {"name": "alice", "city": "paris", "role": "admin", "team": "core", "lang": "py"},
        {"password": "hunter22", "user": "bob"}, {"api_key": "x", "n": 1}, {"uncached_token_name": 5},
        {1: "one", 2.5: None, None: True}, {"note": secret}, {"note": "auth: ok"}, {"email": "alice@example.com"},
        {"k" + str(i): i for i in range(12)}, ["s" * 64, "t" * 65], ["é"], ["tab\there"], [[1], [2]], [b"bytes"],
        [secret], ["password=hunter22"], [10**13], [1e13], {"d": {"e": 1}}, cyclic, MyDict(a=1),
        ["x" * 60] * 5, {"x" * 60: "y" * 60, "z" * 60: "w" * 60},
        Plain(), Color.RED, Point(1, 2), Row(), Plain, len, _values, uuid.UUID(int=7),
        # control characters, card numbers (Luhn passing or not), nesting, objects inside containers
        "tab\there\r\n\x00\x7f\x1b", "line\nwith 'quote'", "Another thing\x02qq3936677670287331zz\x03",
        "card 4111 1111 1111 1111 and 4111 1111 1111 1112", "4111 5111 1111 1111 1111 2222", "a=4111111111111111",
        "http_port: 80, year 2024 ---- done\n=====", ("x\x02qq3936677670287331zz\x03", False, 0),
        [Plain(), (1, [2, (3, [4])]), {"k": Plain()}], (Plain(), len, Color.RED), [Point(1, 2), Row()],
        frozenset({1}), [frozenset(), set(), frozenset({"a"})], [[[[1]]]], ("x" * 120, "y" * 120, "z" * 10),
        ["w" * 250], {(1, 2): "tuple key", None: [1]}, [object(), iter([])],
        datetime.date(2024, 5, 17), decimal.Decimal("1.5"), b"raw", bytearray(b"ba"), 1 + 2j, object(),
    ] + HARMLESS[:20]


def _traced_previews(values: list, **settings) -> list[tuple[str, str]]:
    def f(v):
        return v

    handit.configure(engine="compiled", capture="args", **settings)
    with handit.session("p") as s:
        for v in values:
            f(v)
    calls = [e["args_preview"]["v"] for e in s.events if e["type"] == "call"]
    returns = [e["locals_preview"]["return"] for e in s.events if e["type"] == "return"]
    assert len(calls) == len(returns) == len(values)
    return list(zip(calls, returns))


@pytest.mark.parametrize(
    "settings",
    [{}, {"max_items": 2}, {"max_items": 0}, {"max_str": 16}, {"max_str": 40}, {"max_depth": 0}, {"max_str": 5000}, {"preview": "repr"}],
    ids=repr,
)
def test_compiled_previews_equal_the_previewer(settings):
    pytest.importorskip("handit._tracer")
    previewer = Previewer(
        max_str=settings.get("max_str", 256),
        max_items=settings.get("max_items", 8),
        max_depth=settings.get("max_depth", 3),
        mode=settings.get("preview", "safe"),
        redactor=Redactor(),
    )
    values = _values()
    got = _traced_previews(values, **settings)
    for value, (arg, ret) in zip(values, got):
        want = previewer.preview(value)
        assert (arg, ret) == (want, want), f"{value!r:.80}"


def test_registered_previews_apply_in_the_compiled_engine():
    pytest.importorskip("handit._tracer")
    register_preview(Plain, lambda obj: "plain!")
    try:
        got = _traced_previews(_values())
    finally:
        unregister_preview(Plain)
    assert ("plain!", "plain!") in got


@pytest.mark.parametrize("value", FAST, ids=repr)
def test_fast_values_preview_as_repr(value):
    assert Previewer().preview(value) == repr(value)


def test_no_secret_fits_in_eleven_ascii_characters():
    redactor = Redactor()
    for _, secret in SECRETS:
        for i in range(max(1, len(secret) - 10)):
            window = secret[i : i + 11]
            if "=" in window or ":" in window:
                continue  # the C previews leave these to the secret scan
            assert redactor.redact_text(window) == window


def test_compiled_drain_previews_like_the_fallback():
    pytest.importorskip("handit._tracer")

    def f(a, b, c):
        return c

    runs = []
    values = _values()
    for engine in ("compiled", "fallback"):
        handit.configure(engine=engine, capture="args")
        with handit.session("p") as s:
            for v in values:
                f(v, v, v)
        runs.append([(e.get("args_preview"), e.get("locals_preview")) for e in s.events if e["type"] in ("call", "return")])
        handit.reset_config()
    assert runs[0] == runs[1]


def _prefilter_samples() -> list[str]:
    import random

    rng = random.Random(7)
    alphabet = "abBeyJAKISzGgkhlptxoswcdfnmru_-.:=/@0123456789 "
    texts = [v for _, v in SECRETS if v.isascii()] + [t for t in HARMLESS if t.isascii()]
    texts += [f"see {v} now" for _, v in SECRETS if v.isascii()]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(20000)]
    return texts


def test_prefilter_never_hides_a_secret():
    """Whenever the redactor changes a text, the C prefilter lets it through (key/value pairs
    under names the session's redactor has decided are not secret are the only matches it skips)."""
    tracer = pytest.importorskip("handit._tracer")
    from handit.redact import _SCAN

    texts = _prefilter_samples()

    def f(v):
        return v

    handit.configure(engine="compiled", capture="args")
    with handit.session("p"):
        f({"http_port": 1, "a": 2})  # the session's redactor decides (and caches) these names
        redactor = Redactor()
        changed = matched = 0
        for text in texts:
            if redactor.redact_text(text) != text:
                assert tracer._may_hold_secret_text(text), text
                changed += 1
            matched += _SCAN(text) is not None
    assert changed > 100
    assert matched > changed  # harmless key/value pairs, "-----", short digit runs: skipped
    assert not tracer._may_hold_secret_text("The quick brown fox jumps over the lazy dog while the cat sleeps")
    assert not tracer._may_hold_secret_text("Heading\n=======\nhttp_port: 80, year 2024 ---- done")
    assert tracer._may_hold_secret_text("an_uncached_name_for_sure=1")
    assert tracer._may_hold_secret_text("card 4111 1111 1111 1111")


def test_common_shapes_never_reach_the_python_previewer(monkeypatch):
    """Text with line breaks, harmless card-like digits and key/value pairs under decided
    names, containers nesting containers and objects: formatted in C (the previewer's
    preview() is not called); a dataclass, a named tuple, an enum member go to it."""
    pytest.importorskip("handit._tracer")
    import handit.preview as preview_mod

    calls: list[str] = []
    original = preview_mod.Previewer.preview

    def counting(self, obj):
        calls.append(type(obj).__name__)
        return original(self, obj)

    def f(v):
        return v

    c_values = [
        "two\nlines\tand a tab", "Another thing\x02qq3936677670287331zz\x03", "year 2024 ---- done",
        "http_port: 80", ("x\ny", False, 0), [Plain(), (1, [2, (3, [4])]), {"k": Plain()}], [object(), iter([])],
        {"name": "alice", "city": "paris"}, list(range(10)), ("lorem ipsum " * 20)[:200],
    ]
    handit.configure(engine="compiled", capture="args")
    with handit.session("warm"):
        f({"http_port": 1, "k": 2, "name": 3, "city": 4})  # the names decided once, by the previewer
    monkeypatch.setattr(preview_mod.Previewer, "preview", counting)
    with handit.session("p") as s:
        for v in c_values:
            f(v)
    assert calls == []
    with handit.session("p"):
        for v in (Row(), Point(1, 2), Color.RED):
            f(v)
    assert calls == ["Row", "Row", "Point", "Point", "Color", "Color"]
    assert len([e for e in s.events if e["type"] == "call"]) == len(c_values)
