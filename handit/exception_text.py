"""Exception messages, preview side: which standard-library ``__str__`` can run safely.

Many standard-library exception classes keep their message in attributes and format it in
their own ``__str__`` (``urllib.error.HTTPError`` leaves ``args`` empty and prints
``HTTP Error 404: Not Found``). Formatting from ``args`` shows them blank. Their ``__str__``
is the standard library's code, not the user's; what could run user code is a value it
formats. So ``str(exc)`` is allowed when every class of the exception's type is the
standard library's or a builtin, and every instance attribute that ``__str__`` names, and
every argument, is a plain value (scalars, flat tuples or lists of scalars, or another such
exception). The decision per type is made once and cached.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import types
from collections.abc import Callable
from typing import Any

__all__ = ["stdlib_str_is_safe"]

_SCALAR_IDS = frozenset(id(t) for t in (str, bytes, int, float, bool, type(None), complex))
_TYPE_MODULE = type.__dict__["__module__"].__get__
_TYPE_MRO = type.__dict__["__mro__"].__get__
_TYPE_DICT = type.__dict__["__dict__"].__get__
_EXC_ARGS = BaseException.__dict__["args"].__get__
_EXC_DICT = BaseException.__dict__["__dict__"].__get__
_CACHE_MAX = 4096

# What a type's own __str__ reads: None when str(exc) must not run for it, else the
# attribute names its __str__ code uses (empty for a C __str__ of a builtin module).
_str_names: dict[int, tuple[type, frozenset[str] | None]] = {}
_BUILTIN = frozenset(["<builtin>"])
_stdlib_dirs: tuple[str, ...] | None = None


def _std_dirs() -> tuple[str, ...]:
    global _stdlib_dirs
    if _stdlib_dirs is None:
        paths = sysconfig.get_paths()
        _stdlib_dirs = tuple(
            {os.path.realpath(paths[k]) + os.sep for k in ("stdlib", "platstdlib") if k in paths}
        )
    return _stdlib_dirs


def _is_stdlib_class(tp: type) -> bool:
    """Tell whether ``tp`` is defined by a builtin or standard-library module."""
    try:
        modname = _TYPE_MODULE(tp)
    except Exception:
        return False
    if type(modname) is not str:
        return False
    top = modname.partition(".")[0]
    if top == "builtins":
        return True
    if top not in sys.stdlib_module_names and top.lstrip("_") not in sys.stdlib_module_names:
        return False
    module = sys.modules.get(modname)
    if module is None:
        return False
    file = getattr(module, "__file__", None)
    if file is None:  # compiled into the interpreter
        return True
    path = os.path.realpath(file)
    if "site-packages" in path or "dist-packages" in path:  # a user module shadowing one
        return False
    return path.startswith(_std_dirs())


def _decide(tp: type) -> frozenset[str] | None:
    mro = _TYPE_MRO(tp)
    if not all(_is_stdlib_class(c) for c in mro):
        return None
    for cls in mro:
        fn = _TYPE_DICT(cls).get("__str__")
        if fn is None:
            continue
        if type(fn) is types.FunctionType:
            return frozenset(fn.__code__.co_names)
        if _TYPE_MODULE(cls) == "builtins":
            return _BUILTIN  # OSError's and others': the caller knows what they read
        return frozenset()  # a C __str__ of a standard-library extension type: reads args
    return None


def _plain(value: Any, depth: int, builtin_safe: Callable[[BaseException, type], bool]) -> bool:
    tp = type(value)
    if id(tp) in _SCALAR_IDS:
        return True
    if tp is tuple or tp is list:
        return len(value) <= 64 and all(id(type(v)) in _SCALAR_IDS for v in value)
    if depth > 0 and issubclass(tp, BaseException):  # (isinstance would read value.__class__)
        return stdlib_str_is_safe(value, builtin_safe, depth - 1)
    return False


def stdlib_str_is_safe(exc: BaseException, builtin_safe: Callable[[BaseException, type], bool], depth: int = 2) -> bool:
    """Tell whether ``str(exc)`` runs only standard-library code on plain values.

    Args:
        exc: The exception.
        builtin_safe: ``(exc, type) -> bool``, whether a builtin exception class's C
            ``__str__`` (inherited by ``exc``'s type) reads only plain values.
        depth: How many levels of exceptions held by ``exc`` may be looked into.

    Returns:
        True when ``exc``'s type and all its bases are builtin or standard-library classes,
        and the arguments and the instance attributes that its ``__str__`` names are plain
        values.
    """
    tp = type(exc)
    hit = _str_names.get(id(tp))
    if hit is None or hit[0] is not tp:
        if len(_str_names) >= _CACHE_MAX:
            _str_names.clear()
        hit = (tp, _decide(tp))
        _str_names[id(tp)] = hit
    names = hit[1]
    if names is None:
        return False
    if names is _BUILTIN:
        return builtin_safe(exc, tp)
    if not all(_plain(a, depth, builtin_safe) for a in _EXC_ARGS(exc)):
        return False
    attrs = _EXC_DICT(exc)
    return all(_plain(attrs[n], depth, builtin_safe) for n in names if n in attrs)
