"""The compiled drain's fast path gives the previewer's output byte for byte, and no secret fits it."""
from __future__ import annotations

import pytest

from handit.preview import Previewer
from handit.redact import Redactor
from secrets_corpus import SECRETS

FAST = [None, True, False, 0, 5, -3, 10**12 - 1, -(10**12) + 1, 2.5, -0.0, 1e-300, 999999999999.5, float("nan"), "", "x", "abc def", "it's", '"q"', "tab", "GET", "~!@#$%^"]


@pytest.mark.parametrize("value", FAST, ids=repr)
def test_fast_values_preview_as_repr(value):
    assert Previewer().preview(value) == repr(value)


def test_no_secret_fits_in_seven_ascii_characters():
    redactor = Redactor()
    for _, secret in SECRETS:
        for i in range(max(1, len(secret) - 6)):
            window = secret[i : i + 7]
            if "=" in window or ":" in window:
                continue  # the fast path leaves these to the previewer
            assert redactor.redact_text(window) == window


def test_compiled_drain_previews_like_the_fallback():
    import handit

    pytest.importorskip("handit._tracer")

    def f(a, b, c):
        return c

    runs = []
    for engine in ("compiled", "fallback"):
        handit.configure(engine=engine, capture="args")
        with handit.session("p") as s:
            for v in FAST + [10**13, 1e13, "a longer string", "é", "sk-" + "a" * 40, {"k": [1, "two"]}, (1,), object()]:
                f(v, v, v)
        runs.append([(e.get("args_preview"), e.get("locals_preview")) for e in s.events if e["type"] in ("call", "return")])
        handit.reset_config()
    assert runs[0] == runs[1]
