"""Tests for handit.preview: bounded, redacted previews that never run user code in safe mode."""

from __future__ import annotations

import collections
import datetime
import decimal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from handit import preview as preview_mod
from handit.errors import ConfigError
from handit.preview import Previewer, is_scalar, register_preview, unregister_preview
from handit.redact import REDACTED, Redactor

try:
    from tests.secrets_corpus import HARMLESS, HARMLESS_NAMES, SECRETS, leaked
except ImportError:  # tests/ itself is on sys.path (pytest rootdir insertion)
    from secrets_corpus import HARMLESS, HARMLESS_NAMES, SECRETS, leaked

P = Previewer()
PR = Previewer(mode="repr")
SECRET_IDS = [f"{i}-{fmt}" for i, (fmt, _) in enumerate(SECRETS)]
SECRET_VALUES = [value for _, value in SECRETS]
SUFFIX = 40  # "…", closing brackets and " (len=N)" on top of max_str


def assert_no_leak(output: str, value: str) -> None:
    piece = leaked(output, value)
    assert piece is None, f"secret piece {piece!r} found in {output[:300]!r}"


def assert_clean(output: str, max_str: int = 256) -> None:
    assert type(output) is str
    output.encode("utf-8")  # strict: no lone surrogates
    assert len(output) <= max_str + SUFFIX, output


@pytest.fixture
def registry() -> Iterator[list[type]]:
    """Types registered by a test; unregistered afterwards."""
    registered: list[type] = []
    yield registered
    for tp in registered:
        unregister_preview(tp)


def test_all_is_sorted_and_public() -> None:
    assert preview_mod.__all__ == sorted(preview_mod.__all__)
    assert set(preview_mod.__all__) == {
        "Previewer", "is_scalar", "register_preview", "unregister_preview"
    }


# -- scalars -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["", "hello", "it's", 'say "hi"', "both ' and \"", "tab\tnew\nline", "ünïcødé ✓ 🐍", "\x00\x7f"],
)
def test_short_strings_look_like_repr(value: str) -> None:
    assert P.preview(value) == repr(value)


@pytest.mark.parametrize(
    "value", [0, 1, -1, 42, 10**11, True, False, None, 1.5, -0.0, float("nan"), 1e308, 1 + 2j]
)
def test_scalars_look_like_repr(value: Any) -> None:
    assert P.preview(value) == repr(value)


def test_bytes() -> None:
    assert P.preview(b"abc") == "b'abc'"
    assert P.preview(bytearray(b"ab")) == "bytearray(b'ab')"
    out = P.preview(b"\xff\xfe\x00abc\x80")  # invalid UTF-8
    assert out == repr(b"\xff\xfe\x00abc\x80")
    assert_clean(out)


def test_long_string_is_cut_with_length() -> None:
    out = Previewer(max_str=20).preview("x" * 1000)
    assert out == "'" + "x" * 20 + "\u2026' (len=1000)"


def test_long_bytes_and_escapes_are_bounded() -> None:
    pv = Previewer(max_str=32)
    for value in ("\x01" * 500, "é\n" * 250, "\U0001f40d" * 500, b"\xff" * 500, bytearray(500)):
        out = pv.preview(value)
        assert_clean(out, 32)
        assert "\u2026" in out and "(len=500)" in out


def test_cut_never_splits_an_escape() -> None:
    for n in range(1, 40):
        out = Previewer(max_str=n).preview("\x01" * 100)
        body = out[1 : out.index("\u2026")]
        assert body == "\\x01" * (len(body) // 4)


def test_huge_ints_are_bounded() -> None:
    out = P.preview(10**5000)
    assert out == "~1.000000e+5000 (5001 digits)"
    assert P.preview(-(10**5000)).startswith("~-1.0")
    digits = str(2**1999)
    assert P.preview(2**1999) == digits[:256] + f"\u2026 ({len(digits)} digits)"
    assert Previewer(max_str=1000).preview(10**100) == str(10**100)


@pytest.mark.skipif(not hasattr(sys, "set_int_max_str_digits"), reason="PY311+")
def test_huge_ints_under_the_int_str_limit() -> None:
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)
    try:
        for n in (10**639, 10**640, 10**700, 10**100_000):
            assert_clean(P.preview(n))
    finally:
        sys.set_int_max_str_digits(old)


def test_is_scalar() -> None:
    for value in ("s", b"b", 1, 1.0, True, None, 1j):
        assert is_scalar(value) and P.is_scalar(value)
    for value in ([], (), {}, set(), bytearray(), object(), type("S", (str,), {})("x")):
        assert not is_scalar(value)


def test_stdlib_values() -> None:
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert P.preview(u) == f"UUID('{u}')"
    assert P.preview(datetime.date(2024, 5, 17)) == "date(2024-05-17)"
    assert P.preview(datetime.datetime(2024, 5, 17, 1, 2, 3)) == "datetime(2024-05-17T01:02:03)"
    assert P.preview(datetime.timedelta(seconds=90)) == "timedelta(0:01:30)"
    assert P.preview(decimal.Decimal("1.50")) == "Decimal('1.50')"
    assert P.preview(datetime.time(1, 2, tzinfo=datetime.timezone.utc)) == "time(01:02:00+00:00)"

    class UserTZ(datetime.tzinfo):
        def utcoffset(self, dt: datetime.datetime | None) -> datetime.timedelta:
            raise AssertionError("user tzinfo called")

    out = P.preview(datetime.datetime(2024, 5, 17, tzinfo=UserTZ()))
    assert out == "datetime(2024-05-17T00:00:00 <test_stdlib_values.<locals>.UserTZ>)"
    assert P.preview(int) == "<class int>"
    assert P.preview(len) == "<built-in function len>"
    assert P.preview(test_stdlib_values) == "<function test_stdlib_values>"


# -- containers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [[], [1, "a", None], (), (1,), (1, 2.5), {}, {"a": 1, 2: [3]}, set(), {1}, frozenset(),
     frozenset({"x"}), [[1, [2, (3,)]]][0], {"k": {"j": {}}}],
)
def test_small_containers_look_like_repr(value: Any) -> None:
    assert P.preview(value) == repr(value)


def test_truncated_containers_show_type_and_length() -> None:
    assert P.preview(list(range(100))) == "[0, 1, 2, 3, 4, 5, 6, 7, \u2026] (len=100)"
    assert P.preview(tuple(range(9))) == "(0, 1, 2, 3, 4, 5, 6, 7, \u2026) (len=9)"
    assert P.preview({i: i for i in range(10)}).endswith("7: 7, \u2026} (len=10)")
    assert P.preview(frozenset(range(20))).startswith("frozenset({")
    assert Previewer(max_items=0).preview([1, 2]) == "[\u2026] (len=2)"


def test_depth_limit() -> None:
    assert P.preview([[[[[1]]]]]) == "[[[[...]]]]"
    assert P.preview({"a": {"b": {"c": {"d": 1}}}}) == "{'a': {'b': {'c': {...}}}}"
    assert Previewer(max_depth=0).preview([1]) == "[...]"
    assert Previewer(max_depth=0).preview([]) == "[]"


def test_self_referential_containers() -> None:
    lst: list[Any] = [1]
    lst.append(lst)
    assert P.preview(lst) == "[1, [...]]"
    d: dict[str, Any] = {"a": 1}
    d["self"] = d
    assert P.preview(d) == "{'a': 1, 'self': {...}}"
    a: list[Any] = []
    b: list[Any] = [a]
    a.append(b)
    assert P.preview(a) == "[[[...]]]"


def _with_steps(fn: Any, *args: Any) -> tuple[Any, int]:
    """``fn(*args)`` and the number of Python and C function calls it made: work counted, not timed."""
    steps = [0]

    def count(frame: Any, event: str, arg: Any) -> None:
        steps[0] += 1

    previous = sys.getprofile()
    sys.setprofile(count)
    try:
        result = fn(*args)
    finally:
        sys.setprofile(previous)
    return result, steps[0]


def test_huge_containers_are_bounded_and_fast() -> None:
    big = list(range(1_000_000))
    values = [
        big, tuple(big), set(big), {i: str(i) for i in range(100_000)},
        ["x" * 10_000] * 1000, [[["y" * 5000] * 100] * 100] * 100, {"k" * 5000: "v" * 5000},
    ]
    for max_str in (16, 64, 256):
        pv = Previewer(max_str=max_str)
        for value in values:
            out, steps = _with_steps(pv.preview, value)
            assert steps < 1000  # bounded work: a handful of calls, whatever the size (a walk would take millions)
            assert_clean(out, max_str)


def test_mutation_during_preview_never_raises() -> None:
    d = {i: i for i in range(1000)}
    stop = threading.Event()

    def mutate() -> None:
        i = 1000
        while not stop.is_set():
            d[i] = i
            d.pop(i - 1000, None)
            i += 1

    t = threading.Thread(target=mutate)
    t.start()
    try:
        for _ in range(2000):
            assert_clean(P.preview(d))
    finally:
        stop.set()
        t.join()


# -- secrets -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", SECRET_VALUES, ids=SECRET_IDS)
def test_secret_in_every_position(value: str) -> None:
    outputs = [
        P.preview(value),
        P.preview(value.encode()),
        P.preview(f"the key is {value} ok"),
        P.preview({"data": value, "n": 1}),
        P.preview([1, value, "x"]),
        P.preview((value,)),
        P.preview({value}),
        P.preview({value: 1}),
        P.preview("https://api.example.com/v1?q=" + value),
        P.exception_message(ValueError(f"request failed: {value}")),
        P.exception_message(RuntimeError("bad", value)),
        PR.exception_message(KeyError(value)),
    ]
    for out in outputs:
        assert_clean(out)
        assert_no_leak(out, value)


@pytest.mark.parametrize("max_str", [16, 40, 64, 256])
@pytest.mark.parametrize("value", SECRET_VALUES, ids=SECRET_IDS)
def test_secret_cut_by_max_str(value: str, max_str: int) -> None:
    pv = Previewer(max_str=max_str)
    filler = "lorem ipsum " * 200
    for text in (
        value + " " + filler,  # at the start, longer than max_str
        filler + " " + value,  # at the end: cut away
        "." * (max_str - 5) + " " + value + " tail",  # straddles the cut
        "." * (max_str - 1) + " " + value,
        "." * (max_str + 3) + " " + value,
    ):
        for out in (pv.preview(text), pv.preview(text.encode()), pv.preview([text])):
            assert_clean(out, max_str)
            assert_no_leak(out, value)
        assert_no_leak(pv.exception_message(ValueError(text)), value)


def test_long_secret_cut_at_max_str_is_redacted() -> None:
    pem = next(v for fmt, v in SECRETS if fmt == "pem_private_key")
    out = Previewer(max_str=32).preview(pem)
    assert out.startswith("'<redacted>")
    assert_no_leak(out, pem)


@pytest.mark.parametrize("text", HARMLESS)
def test_harmless_values_stay_visible(text: str) -> None:
    pv = Previewer(max_str=1000)
    assert pv.preview(text) == repr(text)
    assert REDACTED not in pv.preview({"note": text})


@pytest.mark.parametrize("name", HARMLESS_NAMES)
def test_harmless_keys_stay_visible(name: str) -> None:
    assert P.preview({name: "v1"}) == repr({name: "v1"})


def test_secret_keys_hide_values() -> None:
    value = {"password": "hunter22", "user": "bob", "nested": {"api_key": [1, 2]}, "token": None}
    assert P.preview(value) == (
        "{'password': <redacted>, 'user': 'bob', 'nested': {'api_key': <redacted>}, "
        "'token': <redacted>}"
    )
    assert Previewer(redactor=Redactor(safe_keys=["token"])).preview({"token": 1}) == "{'token': 1}"


def test_card_number_as_int() -> None:
    assert P.preview(4111111111111111) == REDACTED
    assert P.preview(4111111111111112) == "4111111111111112"


def test_preview_args() -> None:
    class Trap:
        def __getattribute__(self, name: str) -> Any:
            raise AssertionError("touched")

    out = P.preview_args(["user", "password", "n"], ["bob", Trap(), 3], [False, True, False])
    assert out == {"user": "'bob'", "password": REDACTED, "n": "3"}


# -- hostile objects -----------------------------------------------------------------------

CALLS: list[str] = []


class Meta(type):
    def __repr__(cls) -> str:
        CALLS.append("meta.__repr__")
        return "M"

    def __hash__(cls) -> int:
        CALLS.append("meta.__hash__")
        return 1

    def __eq__(cls, other: object) -> bool:
        CALLS.append("meta.__eq__")
        return False

    def __getattribute__(cls, name: str) -> Any:
        if not name.startswith("__"):
            CALLS.append(f"meta.{name}")
        return super().__getattribute__(name)

    def __instancecheck__(cls, obj: object) -> bool:
        CALLS.append("meta.__instancecheck__")
        return False

    def __subclasscheck__(cls, sub: type) -> bool:
        CALLS.append("meta.__subclasscheck__")
        return False


class Hostile(metaclass=Meta):
    def __repr__(self) -> str:
        CALLS.append("__repr__")
        time.sleep(5)
        raise ValueError("repr")

    def __str__(self) -> str:
        CALLS.append("__str__")
        return "str"

    def __len__(self) -> int:
        CALLS.append("__len__")
        return 1

    def __iter__(self) -> Iterator[int]:
        CALLS.append("__iter__")
        return iter([1])

    def __eq__(self, other: object) -> bool:
        CALLS.append("__eq__")
        return False

    def __hash__(self) -> int:
        CALLS.append("__hash__")
        return 1

    def __bool__(self) -> bool:
        CALLS.append("__bool__")
        return True

    def __format__(self, spec: str) -> str:
        CALLS.append("__format__")
        return "f"

    def __getattr__(self, name: str) -> Any:
        CALLS.append(f"__getattr__ {name}")
        raise AttributeError(name)

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        CALLS.append("__class__")
        return int


class HostileList(list):  # type: ignore[type-arg]
    def __repr__(self) -> str:
        CALLS.append("list.__repr__")
        return "L"

    def __len__(self) -> int:
        CALLS.append("list.__len__")
        return 0

    def __iter__(self) -> Iterator[Any]:
        CALLS.append("list.__iter__")
        return iter([])

    def __getitem__(self, i: Any) -> Any:
        CALLS.append("list.__getitem__")
        return None


class HostileStr(str):
    def __repr__(self) -> str:
        CALLS.append("str.__repr__")
        return "S"

    def __str__(self) -> str:
        CALLS.append("str.__str__")
        return "S"

    def __len__(self) -> int:
        CALLS.append("str.__len__")
        return 0

    def __eq__(self, other: object) -> bool:
        CALLS.append("str.__eq__")
        return False

    def __hash__(self) -> int:
        CALLS.append("str.__hash__")
        return 1

    def lower(self) -> str:  # type: ignore[override]
        CALLS.append("str.lower")
        return "s"


class HostileError(Exception):
    def __str__(self) -> str:
        CALLS.append("error.__str__")
        return "user str"

    @property
    def args(self) -> Any:  # type: ignore[override]
        CALLS.append("error.args")
        return ("fake",)


def test_hostile_objects_never_touched_in_safe_mode() -> None:
    h = Hostile()
    lst = HostileList([1, 2])
    key = HostileStr("password")
    values: list[Any] = [h, [h], (h, h), {h}, frozenset({h}), {"k": h}, {h: 1}, {key: "v"}, lst,
                         [lst], key, Hostile, [Hostile], {1: [h, {h: [h]}]}]
    err = HostileError("real message", h)
    CALLS.clear()
    outs, steps = _with_steps(lambda: [P.preview(v) for v in values])
    outs.append(P.preview_args(["a", "b"], [h, key], [False, False])["a"])
    outs.append(P.exception_message(err))
    outs.append(P.exception_message(ValueError(h)))
    assert CALLS == []
    assert steps < 100 * len(values)  # no user code ran, and nothing waited or looped
    assert outs[0] == "<Hostile>"
    assert outs[6] == "{<Hostile>: 1}"
    assert outs[7] == "{<HostileStr>: <redacted>}"  # the key's text is checked, not shown
    assert outs[8] == "<HostileList>"
    assert outs[11] == "<class Hostile>"
    assert outs[-2] == "('real message', <Hostile>)"
    assert outs[-1] == "<Hostile>"


def test_registry_lookup_never_touches_hostile_metaclass(registry: list[type]) -> None:
    class Base:
        pass

    register_preview(Base, lambda obj: "base")
    registry.append(Base)
    CALLS.clear()
    assert P.preview(Hostile()) == "<Hostile>"
    assert CALLS == []


def test_repr_mode_errors() -> None:
    class Raises:
        def __repr__(self) -> str:
            raise KeyError("x")

    class NotStr:
        def __repr__(self) -> Any:
            return 42

    class Recurses:
        def __repr__(self) -> str:
            return repr(self)

    class Reenters:
        def __repr__(self) -> str:
            return f"R({PR.preview(self)})"

    class StrSub(str):
        def __len__(self) -> int:
            raise AssertionError("touched")

    class ReturnsStrSub:
        def __repr__(self) -> str:
            return StrSub("sub")

    class Long:
        def __repr__(self) -> str:
            return "L" * 10_000 + " token=abc123"

    class Secret:
        def __repr__(self) -> str:
            return "Secret(password='hunter22', key=sk-proj-Ab1Cd2Ef3Gh4Ij5Kl6Mn7)"

    assert PR.preview(Raises()) == "<unrepr: KeyError>"
    assert PR.preview(NotStr()) == "<unrepr: TypeError>"
    assert PR.preview(Recurses()) == "<unrepr: RecursionError>"
    assert PR.preview(Reenters()) == "R(<...>)"
    assert PR.preview(ReturnsStrSub()) == "sub"
    assert PR.preview(Long()) == "L" * 256 + "\u2026"
    assert PR.preview(Secret()) == "Secret(password='<redacted>', key=<redacted>)"
    assert PR.preview([Raises(), 1]) == "[<unrepr: KeyError>, 1]"
    assert PR.preview(collections.OrderedDict(a=1)) == repr(collections.OrderedDict(a=1))
    assert P.preview(collections.OrderedDict(a=1)) == "<OrderedDict>"
    # the guard is released after every call, including failing ones
    assert PR.preview(Reenters()) == "R(<...>)"


def test_repr_mode_guard_is_per_thread() -> None:
    inside = threading.Event()
    release = threading.Event()

    class Slow:
        def __repr__(self) -> str:
            inside.set()
            release.wait(5)
            return "slow"

    class Fast:
        def __repr__(self) -> str:
            return "fast"

    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(PR.preview(Slow())))
    t.start()
    inside.wait(5)
    try:
        assert PR.preview(Fast()) == "fast"
    finally:
        release.set()
        t.join()
    assert result == ["slow"]


def test_safe_mode_never_calls_sleeping_repr() -> None:
    CALLS.clear()
    _, steps = _with_steps(lambda: [P.preview([Hostile(), {"a": Hostile()}]) for _ in range(100)])
    assert CALLS == []
    assert steps < 100 * 300  # a bounded number of steps a round (two objects made, two previews); no repr ran


# -- exceptions ----------------------------------------------------------------------------


def test_exception_messages() -> None:
    assert P.exception_message(ValueError("bad value")) == "bad value"
    assert P.exception_message(KeyError("k")) == "'k'"
    assert P.exception_message(OSError(2, "No such file", "x.txt")) == "[Errno 2] No such file: 'x.txt'"
    assert P.exception_message(ValueError()) == ""
    assert P.exception_message(ValueError("a", 1)) == "('a', 1)"
    assert P.exception_message(ValueError("token=abc123 was rejected")) == "token=<redacted> was rejected"
    assert P.exception_message(ValueError("x" * 5000)) == "x" * 256 + "\u2026"
    err = OSError(2, "No such file")
    err.filename = Hostile()
    CALLS.clear()
    assert P.exception_message(err) == "(2, 'No such file')"
    assert CALLS == []


def test_user_exceptions_use_args_in_safe_mode() -> None:
    class Custom(Exception):
        def __str__(self) -> str:
            CALLS.append("Custom.__str__")
            return "custom"

    CALLS.clear()
    assert P.exception_message(Custom("from args")) == "from args"
    assert CALLS == []
    assert PR.exception_message(Custom("from args")) == "custom"


def test_repr_mode_falls_back_when_str_raises() -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert PR.exception_message(Broken("from args")) == "from args"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="PY311+: ExceptionGroup")
def test_exception_group_message() -> None:
    group = ExceptionGroup("several", [ValueError("a"), KeyError("b")])  # noqa: F821
    assert P.exception_message(group) == "several (2 sub-exceptions)"
    CALLS.clear()
    hostile = ExceptionGroup(HostileStr("msg"), [ValueError("a")])  # noqa: F821
    assert P.exception_message(hostile) == "(<HostileStr>, [<ValueError>])"
    assert CALLS == []


# -- UTF-8 safety --------------------------------------------------------------------------


def test_lone_surrogates_never_break_utf8(registry: list[type]) -> None:
    class Sur:
        def __repr__(self) -> str:
            return "\udc80repr"

    register_preview(Sur, lambda obj: "\ud800reg")
    registry.append(Sur)
    outs = [
        P.preview("\ud800"),
        P.preview("abc\udcff" * 100),
        P.preview({"\udc80": "\ud800"}),
        P.preview(["\ud800x", b"\xed\xa0\x80"]),
        P.preview(Sur()),
        PR.preview(type("Other", (), {"__repr__": lambda self: "\udc80"})()),
        P.exception_message(ValueError("\ud800 bad")),
        P.exception_message(ValueError("\ud800", "x")),
    ]
    for out in outs:
        out.encode("utf-8")
    assert outs[4] == "\\ud800reg"


# -- registry ------------------------------------------------------------------------------


def test_registry(registry: list[type]) -> None:
    class Point:
        def __init__(self, x: int, y: int) -> None:
            self.x, self.y = x, y

    class Point3(Point):
        pass

    class Point4(Point3):
        pass

    register_preview(Point, lambda p: f"Point({p.x}, {p.y})")
    registry.append(Point)
    assert P.preview(Point(1, 2)) == "Point(1, 2)"
    assert P.preview([Point4(3, 4)]) == "[Point(3, 4)]"  # MRO lookup
    register_preview(Point3, lambda p: "P3")
    registry.append(Point3)
    assert P.preview(Point4(3, 4)) == "P3"  # the nearest registered class wins
    assert P.preview(Point(1, 2)) == "Point(1, 2)"
    unregister_preview(Point3)
    assert P.preview(Point4(3, 4)) == "Point(3, 4)"
    unregister_preview(Point)
    unregister_preview(Point)  # no error when missing
    assert P.preview(Point(1, 2)) == "<test_registry.<locals>.Point>"  # the __qualname__


def test_registry_errors_and_bounds(registry: list[type]) -> None:
    class A:
        pass

    class B:
        pass

    class C:
        pass

    class D:
        pass

    register_preview(A, lambda obj: 1 / 0)
    register_preview(B, lambda obj: 42)
    register_preview(C, lambda obj: "c" * 10_000)
    register_preview(D, lambda obj: "D(api_key=sk-proj-Ab1Cd2Ef3Gh4Ij5Kl6Mn7, " + P.preview(obj) + ")")
    registry.extend([A, B, C, D])
    assert P.preview(A()) == "<unrepr: ZeroDivisionError>"
    assert P.preview(B()) == "<unrepr: TypeError>"
    assert P.preview(C()) == "c" * 256 + "\u2026"
    assert P.preview(D()) == "D(api_key=<redacted>, <...>)"  # re-entry is guarded


def test_registry_does_not_apply_to_exact_builtins(registry: list[type]) -> None:
    class MyInt(int):
        pass

    register_preview(int, lambda obj: "INT")
    registry.append(int)
    assert P.preview(5) == "5"
    assert P.preview([5]) == "[5]"
    assert P.preview(MyInt(5)) == "INT"


def test_register_preview_validates() -> None:
    with pytest.raises(TypeError):
        register_preview("int", str)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        register_preview(int, "not callable")  # type: ignore[arg-type]


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"max_str": 0}, {"max_str": "10"}, {"max_items": -1}, {"max_depth": 1.5}, {"mode": "full"}],
)
def test_invalid_configuration(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Previewer(**kwargs)


def test_repr_of_previewer() -> None:
    assert repr(Previewer(max_str=10)) == "Previewer(max_str=10, max_items=8, max_depth=3, mode='safe')"
