"""Qualified names for code objects before Python 3.11 (no ``co_qualname``): found from the module.

A 3.10 code object knows only its bare name, so ``It.__next__`` and ``Other.__next__`` would
merge into one ``__next__`` and ``HANDIT_INCLUDE=Class\\.method`` could not match. The module
holds the answer: its functions and classes, and inside their code objects the nested ones,
named the way the compiler names them (``outer.<locals>.inner``, ``Class.method``). The map
is built once per module and rebuilt only when a code object is missing and the module has
grown since (a class defined later).
"""
from __future__ import annotations

import sys
import types
from typing import Any

__all__ = ["qualname_of"]

_CODE = types.CodeType
# module name -> (its namespace, number of globals when built, {id(code): (code, qualname)})
_maps: dict[str, tuple[dict[str, Any], int, dict[int, tuple[Any, str]]]] = {}


def qualname_of(code: Any, module: str) -> str:
    """The qualified name of ``code`` defined in ``module`` (``co_qualname`` where Python has it).

    Never raises: a code object the module does not reach keeps its bare name.
    """
    qualname = getattr(code, "co_qualname", None)  # PY311+
    if qualname is not None:
        return qualname
    try:
        return _lookup(code, module) or code.co_name
    except Exception:
        return code.co_name


def _lookup(code: Any, module: str) -> str | None:
    mod = sys.modules.get(module)
    namespace = getattr(mod, "__dict__", None)
    if not isinstance(namespace, dict):
        return None
    built = _maps.get(module)
    if built is None or built[0] is not namespace or (id(code) not in built[2] and built[1] != len(namespace)):
        built = (namespace, len(namespace), _build(namespace, module))
        _maps[module] = built
    hit = built[2].get(id(code))
    return hit[1] if hit is not None and hit[0] is code else None


def _build(namespace: dict[str, Any], module: str) -> dict[int, tuple[Any, str]]:
    found: dict[int, tuple[Any, str]] = {}
    seen: set[int] = set()
    for value in list(namespace.values()):
        if isinstance(value, type) and getattr(value, "__module__", None) == module:
            _add_class(value, value.__qualname__, found, seen)
        else:
            code = getattr(value, "__code__", None)
            if isinstance(code, _CODE) and getattr(value, "__module__", None) == module:
                _add_code(code, getattr(value, "__qualname__", code.co_name), found)
    return found


def _add_class(cls: type, qualname: str, found: dict[int, tuple[Any, str]], seen: set[int]) -> None:
    if id(cls) in seen:
        return
    seen.add(id(cls))
    for name, member in list(vars(cls).items()):
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if isinstance(member, property):
            for accessor in (member.fget, member.fset, member.fdel):
                code = getattr(accessor, "__code__", None)
                if isinstance(code, _CODE):
                    _add_code(code, f"{qualname}.{code.co_name}", found)
            continue
        if isinstance(member, type) and member.__qualname__.startswith(qualname + "."):
            _add_class(member, member.__qualname__, found, seen)
            continue
        code = getattr(member, "__code__", None)
        if isinstance(code, _CODE):
            _add_code(code, f"{qualname}.{name}" if code.co_name == name else f"{qualname}.{code.co_name}", found)


def _add_code(code: Any, qualname: str, found: dict[int, tuple[Any, str]]) -> None:
    """``code`` and every code object compiled inside it, named as the compiler names them."""
    stack = [(code, qualname)]
    while stack:
        code, qualname = stack.pop()
        if id(code) in found:
            continue
        found[id(code)] = (code, qualname)
        is_function = bool(code.co_flags & 0x02)  # CO_NEWLOCALS: a function, not a class body
        for const in code.co_consts:
            if isinstance(const, _CODE):
                prefix = f"{qualname}.<locals>." if is_function else f"{qualname}."
                stack.append((const, prefix + const.co_name))
