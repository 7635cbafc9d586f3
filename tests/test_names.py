"""Names people recognise: qualified names on every Python, class bodies and imported module bodies not calls."""
from __future__ import annotations

import importlib
import sys

import handit
from conftest import calls_of

EXPECTED = {
    "everything", "It.__next__", "Other.__next__", "It.prop", "It.static", "It.klass", "It.Inner.method",
    "outer", "outer.<locals>.inner", "outer.<locals>.Local.method",
}


def _fresh_sample():
    sys.modules.pop("names_sample", None)
    return importlib.import_module("names_sample")


def test_qualified_names_are_the_same_on_every_python(engine):
    sample = _fresh_sample()
    with handit.session("names") as s:
        sample.everything()
    assert {e["func"] for e in calls_of(s.events)} == EXPECTED  # no class body (Local), no bare __next__


def test_filters_match_class_qualified_names(engine):
    sample = _fresh_sample()
    handit.configure(include=r"::Other\.__next__$")
    with handit.session("filtered") as s:
        sample.everything()
    assert [e["func"] for e in calls_of(s.events)] == ["Other.__next__"]


def test_class_bodies_and_imported_module_bodies_are_not_calls(engine):
    with handit.session("import") as s:
        sample = _fresh_sample()  # runs the module body and two class bodies
        sample.It()
    assert [e["func"] for e in calls_of(s.events) if e["module"] == "names_sample"] == []
