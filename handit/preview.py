"""Preview stage: Python values -> bounded, redacted preview strings.

Safe by default: exact builtin types (str, bytes, int, float, bool, None, complex, list,
tuple, dict, set, frozenset) are formatted here without running any user code; every
other object, subclasses of builtins included, is shown as ``<TypeName>``. The type is
read with ``type(obj)`` (never ``obj.__class__``) and types are compared and looked up by
identity, so no user ``__repr__``, ``__str__``, ``__len__``, ``__eq__``, ``__hash__``,
``__class__`` or metaclass method ever runs. ``mode="repr"`` and the preview registry are
the opt-in exceptions.

Strings are redacted (:mod:`handit.redact`) before they are cut to ``max_str``, so a
secret that straddles the cut is still replaced; every result encodes to UTF-8 strictly.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime
import decimal
import enum
import math
import threading
import types
import uuid
from collections.abc import Callable, Sequence
from itertools import islice
from typing import Any

from handit.errors import ConfigError
from handit.exception_text import stdlib_str_is_safe
from handit.redact import REDACTED, Redactor

__all__ = ["Previewer", "is_scalar", "register_preview", "unregister_preview"]

ELLIPSIS = "\u2026"
_MARGIN = 1024  # characters redacted past the cut, so a secret straddling it is caught
_SMALL_INT = 10**12  # smaller ints cannot be card numbers: no redaction needed
_STR_INT_BITS = 2000  # ~602 digits: below any sys.set_int_max_str_digits() limit (>= 640)
_CACHE_MAX = 4096

# Exact types only, looked up by id(): hashing a user type could run a metaclass __hash__.
_SCALAR_IDS = frozenset(id(t) for t in (str, bytes, int, float, bool, type(None), complex))
_TYPE_QUALNAME = type.__dict__["__qualname__"].__get__
_TYPE_MRO = type.__dict__["__mro__"].__get__
_TYPE_DICT = type.__dict__["__dict__"].__get__  # a class's own namespace, no metaclass code
_FUNC_QUALNAME = types.FunctionType.__dict__["__qualname__"].__get__
_BUILTIN_QUALNAME = types.BuiltinFunctionType.__dict__["__qualname__"].__get__
_EXC_ARGS = BaseException.__dict__["args"].__get__
_BUILTIN_EXC_IDS = frozenset(
    id(t) for t in vars(builtins).values() if isinstance(t, type) and issubclass(t, BaseException)
)
# Builtin exceptions whose __str__ reads attributes besides args: (family, attributes).
_EXC_STR_ATTRS: tuple[tuple[type, tuple[str, ...]], ...] = (
    (OSError, ("errno", "strerror", "filename", "filename2")),
    (SyntaxError, ("msg", "filename", "lineno")),
    (ImportError, ("msg",)),
    (UnicodeError, ("encoding", "object", "reason", "start", "end")),
)
_GROUP = getattr(builtins, "BaseExceptionGroup", None)  # PY311+

_type_names: dict[int, tuple[type, str]] = {}
_records: dict[int, tuple[type, str | None, tuple[str, ...]]] = {}
_registry: dict[int, tuple[type, Callable[[Any], str]]] = {}
_resolved: dict[int, tuple[type, Callable[[Any], str] | None]] = {}
_registry_lock = threading.Lock()
_guard = threading.local()  # .active: a repr() or registered preview is running


def _type_name(tp: type) -> str:
    """Return ``tp.__qualname__`` read from the type slot (no metaclass code runs)."""
    hit = _type_names.get(id(tp))
    if hit is not None and hit[0] is tp:
        return hit[1]
    try:
        name = _utf8(_TYPE_QUALNAME(tp))
    except RecursionError:  # at the recursion limit: not a fact about the type, so not kept
        raise
    except Exception:  # a broken extension type: keep going
        name = "?"
    if len(_type_names) >= _CACHE_MAX:
        _type_names.clear()
    _type_names[id(tp)] = (tp, name)
    return name


def _utf8(s: str) -> str:
    """Return ``s`` with lone surrogates escaped (``\\udc80``) so it encodes to UTF-8."""
    if s.isascii():
        return s
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")
    return s


def is_scalar(obj: Any) -> bool:
    """Tell whether ``obj`` is an exact immutable scalar, safe to keep and preview later.

    Args:
        obj: Any value.

    Returns:
        True for exact ``str``, ``bytes``, ``int``, ``float``, ``bool``, ``None`` and
        ``complex`` (not their subclasses).
    """
    return id(type(obj)) in _SCALAR_IDS


def register_preview(tp: type, fn: Callable[[Any], str]) -> None:
    """Register a preview function for a domain type (shared by every Previewer).

    The function gets the object and returns a string, e.g. a numpy array's shape and
    dtype. It is used for ``tp`` and its subclasses (the nearest registered class in the
    MRO wins), never for the exact builtin types previewed natively. Its exceptions become
    ``<unrepr: ErrorType>``; its result is redacted and bounded like any other text.

    Args:
        tp: The class.
        fn: ``fn(obj) -> str``.

    Raises:
        TypeError: ``tp`` is not a class or ``fn`` is not callable.
    """
    if not isinstance(tp, type):
        raise TypeError(f"register_preview: expected a class, got {type(tp).__name__}")
    if not callable(fn):
        raise TypeError(f"register_preview: fn must be callable, got {type(fn).__name__}")
    with _registry_lock:
        _registry[id(tp)] = (tp, fn)
        _resolved.clear()


def unregister_preview(tp: type) -> None:
    """Remove the preview function registered for exactly ``tp`` (no error if none).

    Args:
        tp: The class passed to :func:`register_preview`.
    """
    with _registry_lock:
        _registry.pop(id(tp), None)
        _resolved.clear()


def _lookup(tp: type) -> Callable[[Any], str] | None:
    """Return the registered function for ``tp`` or its nearest registered base class."""
    hit = _resolved.get(id(tp))
    if hit is not None and hit[0] is tp:
        return hit[1]
    fn = None
    for base in _TYPE_MRO(tp):
        entry = _registry.get(id(base))
        if entry is not None and entry[0] is base:
            fn = entry[1]
            break
    if len(_resolved) >= _CACHE_MAX:
        _resolved.clear()
    _resolved[id(tp)] = (tp, fn)
    return fn


def _uuid_text(u: uuid.UUID) -> str:
    h = "%032x" % uuid.UUID.__dict__["int"].__get__(u)
    return f"UUID('{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}')"


def _clock_text(v: datetime.datetime | datetime.time) -> str:
    """isoformat() of a datetime or time; a tzinfo other than ``timezone`` may be user code."""
    kind = type(v)
    tz = kind.tzinfo.__get__(v)  # type: ignore[attr-defined]
    if tz is None or type(tz) is datetime.timezone:
        return f"{kind.__name__}({kind.isoformat(v)})"
    naive = kind.replace(v, tzinfo=None)
    return f"{kind.__name__}({kind.isoformat(naive)} <{_type_name(type(tz))}>)"


def _class_attr(tp: type, name: str) -> Any:
    """``name`` from the first class of ``tp``'s MRO that defines it, read from the class
    namespaces (no descriptor, ``__getattr__`` or metaclass code runs); None when absent."""
    for base in _TYPE_MRO(tp):
        ns = _TYPE_DICT(base)
        if name in ns:
            return ns[name]
    return None


def _record_kind(tp: type) -> tuple[str | None, tuple[str, ...]]:
    """``("enum", ())``, ``("dataclass", fields)``, ``("namedtuple", fields)`` or
    ``(None, ())``: how instances of ``tp`` are previewed by their fields (decided once per type)."""
    hit = _records.get(id(tp))
    if hit is not None and hit[0] is tp:
        return hit[1], hit[2]
    kind: str | None = None
    fields: tuple[str, ...] = ()
    mro = _TYPE_MRO(tp)
    if any(base is enum.Enum for base in mro):
        kind = "enum"
    elif any(base is tuple for base in mro):
        names = _class_attr(tp, "_fields")
        if type(names) is tuple and all(type(f) is str for f in names):
            kind, fields = "namedtuple", names
    else:
        spec = _class_attr(tp, "__dataclass_fields__")
        if type(spec) is dict:
            kind = "dataclass"
            fields = tuple(
                name for name, f in spec.items()
                if type(name) is str and type(f) is dataclasses.Field
                and f._field_type is dataclasses._FIELD and f.repr  # type: ignore[attr-defined]
            )
    if len(_records) >= _CACHE_MAX:
        _records.clear()
    _records[id(tp)] = (tp, kind, fields)
    return kind, fields


def _field_value(obj: Any, tp: type, name: str) -> tuple[bool, Any]:
    """A dataclass field's value without user code: the instance ``__dict__`` (when the
    class's ``__dict__`` is the interpreter's own descriptor) or a ``__slots__`` member."""
    descr = _class_attr(tp, name)
    if type(descr) is types.MemberDescriptorType:
        try:
            return True, descr.__get__(obj, tp)
        except AttributeError:  # a slot not set yet
            return False, None
    if descr is not None and _class_attr(type(descr), "__get__") is not None:
        return False, None  # a property or another descriptor: user code
    attrs = _class_attr(tp, "__dict__")
    if type(attrs) is not types.GetSetDescriptorType:
        return False, None
    namespace = attrs.__get__(obj, tp)
    if type(namespace) is not dict or name not in namespace:
        return False, None
    return True, namespace[name]


def _type_text(tp: type) -> str | None:
    """Return ``"<TypeName>"`` when every instance of ``tp`` previews so in safe mode with
    no registered previews, else None (its values are formatted: builtins, standard-library
    values, classes, functions, dataclasses, named tuples, enum members). The compiled
    engine asks this once per type.

    Args:
        tp: A type.

    Returns:
        The preview text, or None.
    """
    if id(tp) in _DISPATCH or id(tp) in _SCALAR_IDS or id(tp) in _STDLIB:
        return None
    if tp is type or issubclass(tp, type) or tp is types.FunctionType or tp is types.BuiltinFunctionType:
        return None
    if _record_kind(tp)[0] is not None:
        return None
    return f"<{_type_name(tp)}>"


# Exact standard-library value types with a safe, C-implemented or slot-reading format.
_STDLIB: dict[int, Callable[[Any], str]] = {
    id(datetime.datetime): _clock_text,
    id(datetime.date): lambda v: f"date({datetime.date.isoformat(v)})",
    id(datetime.time): _clock_text,
    id(datetime.timedelta): lambda v: f"timedelta({datetime.timedelta.__str__(v)})",
    id(decimal.Decimal): lambda v: f"Decimal('{decimal.Decimal.__str__(v)}')",
    id(uuid.UUID): _uuid_text,
}


class Previewer:
    """Turns values into bounded, redacted preview strings.

    A Previewer is immutable after construction and safe to share between threads.
    """

    __slots__ = ("max_str", "max_items", "max_depth", "mode", "redactor", "_redact", "_repr_mode")

    def __init__(
        self,
        max_str: int = 256,
        max_items: int = 8,
        max_depth: int = 3,
        mode: str = "safe",
        redactor: Redactor | None = None,
    ) -> None:
        """Configure the limits.

        Args:
            max_str: Characters kept from one string, and the bound of a whole preview
                (a truncated preview adds at most ``…``, closing brackets and a
                ``(len=N)`` suffix).
            max_items: Items shown per container.
            max_depth: Container nesting shown; deeper containers become ``[...]``.
            mode: ``"safe"`` (other objects as ``<TypeName>``) or ``"repr"`` (bounded,
                guarded ``repr()``).
            redactor: The redaction rules; a default :class:`Redactor` when None.

        Raises:
            ConfigError: A limit is not an int in range (``max_str`` >= 1, the others
                >= 0) or ``mode`` is unknown.
        """
        for setting, value, least in (
            ("HANDIT_MAX_STR", max_str, 1),
            ("HANDIT_MAX_ITEMS", max_items, 0),
            ("HANDIT_MAX_DEPTH", max_depth, 0),
        ):
            if type(value) is not int or value < least:
                raise ConfigError(setting, value, f"is not an integer >= {least}")
        if mode not in ("safe", "repr"):
            raise ConfigError("HANDIT_PREVIEW", mode, "is not 'safe' or 'repr'")
        self.max_str = max_str
        self.max_items = max_items
        self.max_depth = max_depth
        self.mode = mode
        self.redactor = redactor if redactor is not None else Redactor()
        self._redact = self.redactor.redact_text
        self._repr_mode = mode == "repr"

    def __repr__(self) -> str:
        return (
            f"Previewer(max_str={self.max_str}, max_items={self.max_items}, "
            f"max_depth={self.max_depth}, mode={self.mode!r})"
        )

    is_scalar = staticmethod(is_scalar)

    def preview(self, obj: Any) -> str:
        """Return a bounded, redacted preview of ``obj``.

        Args:
            obj: Any value.

        Returns:
            A string of at most about ``max_str`` characters plus a short suffix, valid
            UTF-8. It never raises an ``Exception``: a value that cannot be previewed
            becomes ``<unpreviewable: ErrorType>``.
        """
        tp = type(obj)
        if tp is str:
            return self._str(obj, self.max_str)
        if tp is int and -_SMALL_INT < obj < _SMALL_INT:
            return repr(obj)
        if tp is float or tp is bool or obj is None:
            return repr(obj)
        try:
            return self._any(obj, 0, self.max_str, [])
        except Exception as exc:  # mutation by another thread, MemoryError, ...
            return f"<unpreviewable: {_type_name(type(exc))}>"

    def preview_args(
        self, names: Sequence[str], values: Sequence[Any], secret_mask: Sequence[bool]
    ) -> dict[str, str]:
        """Preview call arguments by name.

        Args:
            names: Argument names.
            values: Their values, in the same order.
            secret_mask: True where the name is secret (decided once per code object).

        Returns:
            ``{name: preview}``; masked names map to ``<redacted>`` and their values are
            not looked at.
        """
        pv = self.preview
        return {
            name: REDACTED if secret else pv(value)
            for name, value, secret in zip(names, values, secret_mask)
        }

    def exception_message(self, exc: BaseException) -> str:
        """Return the bounded, redacted message of an exception.

        Safe mode never runs a user ``__str__``: builtin exception types whose message is
        made of scalars use ``str(exc)``, and so do the standard library's exception
        classes whose ``__str__`` reads only plain values (:mod:`handit.exception_text`,
        e.g. ``HTTP Error 404: Not Found``); every other exception is formatted from its
        ``args`` the way ``BaseException.__str__`` would, with non-scalar arguments
        previewed. Repr mode calls ``str(exc)``, guarded, and falls back to the safe form.

        Args:
            exc: The exception.

        Returns:
            The message (``""`` when there is none).
        """
        try:
            ok = False
            if self._repr_mode:
                ok, msg = _call_user(str, exc)
            if not ok:
                msg = self._safe_message(exc)
            return self._text(msg, self.max_str)
        except Exception as err:
            return f"<unpreviewable: {_type_name(type(err))}>"

    # -- internals ---------------------------------------------------------------------

    def _safe_message(self, exc: BaseException) -> str:
        tp = type(exc)
        if id(tp) in _BUILTIN_EXC_IDS and _builtin_str_is_safe(exc, tp):
            return str(exc)
        if stdlib_str_is_safe(exc, _builtin_str_is_safe):  # HTTPError and others whose __str__ reads attributes
            ok, msg = _call_user(str, exc)
            if ok:
                return msg
        args = _EXC_ARGS(exc)
        if not args:
            return ""
        if len(args) == 1:
            a = args[0]
            return a if type(a) is str else self._any(a, 0, self.max_str, [])
        return self._any(args, 0, self.max_str, [])

    def _any(self, obj: Any, depth: int, limit: int, seen: list[int]) -> str:
        tp = type(obj)
        if tp is str:
            return self._str(obj, limit)
        if tp is int and -_SMALL_INT < obj < _SMALL_INT:
            return repr(obj)
        fmt = _DISPATCH.get(id(tp))
        if fmt is not None:
            return fmt(self, obj, depth, limit, seen)
        return self._other(obj, tp, limit, depth, seen)

    # Container and scalar formatters: one signature, looked up in _DISPATCH by exact type.

    def _repr_item(self, obj: Any, depth: int, limit: int, seen: list[int]) -> str:
        return repr(obj)  # builtin repr of bool, None, float, complex: at most ~50 characters

    def _int_item(self, obj: int, depth: int, limit: int, seen: list[int]) -> str:
        return self._int(obj, limit)

    def _bytes_item(self, obj: bytes, depth: int, limit: int, seen: list[int]) -> str:
        return self._bytes(obj, limit)

    def _bytearray(self, obj: bytearray, depth: int, limit: int, seen: list[int]) -> str:
        return "bytearray(" + self._bytes(bytes(obj[: limit + _MARGIN]), limit, len(obj)) + ")"

    def _list(self, obj: list[Any], depth: int, limit: int, seen: list[int]) -> str:
        return self._seq(obj, depth, limit, seen, "[", "]", len(obj))

    def _tuple(self, obj: tuple[Any, ...], depth: int, limit: int, seen: list[int]) -> str:
        return self._seq(obj, depth, limit, seen, "(", ")", len(obj))

    def _set(self, obj: Any, depth: int, limit: int, seen: list[int]) -> str:
        n = len(obj)
        if type(obj) is set:
            return self._seq(obj, depth, limit, seen, "{", "}", n) if n else "set()"
        if not n:
            return "frozenset()"
        return "frozenset(" + self._seq(obj, depth, limit, seen, "{", "}", n) + ")"

    def _other(self, obj: Any, tp: type, limit: int, depth: int, seen: list[int]) -> str:
        if _registry:
            fn = _lookup(tp)
            if fn is not None:
                return self._text(_call_user(fn, obj)[1], limit)
        if self._repr_mode:
            return self._text(_call_user(repr, obj)[1], limit)
        fmt = _STDLIB.get(id(tp))
        if fmt is not None:
            return self._text(fmt(obj), limit)
        if tp is type or issubclass(tp, type):  # a class (issubclass reads the MRO only)
            return f"<class {_type_name(obj)}>"
        if tp is types.FunctionType:
            return f"<function {_utf8(_FUNC_QUALNAME(obj))}>"
        if tp is types.BuiltinFunctionType:
            return f"<built-in function {_utf8(_BUILTIN_QUALNAME(obj))}>"
        kind, fields = _record_kind(tp)
        if kind is not None:
            return self._record(obj, tp, kind, fields, depth, limit, seen)
        return f"<{_type_name(tp)}>"

    def _record(
        self, obj: Any, tp: type, kind: str, fields: tuple[str, ...], depth: int, limit: int, seen: list[int]
    ) -> str:
        """An enum member as ``Color.RED``; a dataclass or named tuple as ``Point(x=1, y=2)``
        (fields previewed like a container's items, within ``limit``)."""
        name = _type_name(tp)
        if kind == "enum":
            ok, member = _field_value(obj, tp, "_name_")
            return f"{name}.{_utf8(member)}" if ok and type(member) is str else f"<{name}>"
        if depth >= self.max_depth or id(obj) in seen:
            return f"{name}(...)"
        values = tuple.__getitem__(obj, slice(0, len(fields))) if kind == "namedtuple" else None
        parts: list[str] = []
        used = len(name) + 2
        seen.append(id(obj))
        try:
            for i, field in enumerate(fields[: self.max_items]):
                if used >= limit:
                    break
                if values is not None:
                    ok, value = i < len(values), values[i] if i < len(values) else None
                else:
                    ok, value = _field_value(obj, tp, field)
                if self.redactor.is_secret_name(field):
                    p = f"{field}={REDACTED}"
                elif ok:
                    p = f"{field}={self._any(value, depth + 1, max(1, limit - used - len(field) - 1), seen)}"
                else:
                    p = f"{field}=?"
                parts.append(p)
                used += len(p) + 2
        finally:
            seen.pop()
        return _join(parts, len(fields), limit - len(name), name + "(", ")", False)

    def _text(self, s: str, limit: int) -> str:
        """Redact, bound and UTF-8-clean a free-form string (no quotes added)."""
        window = s if len(s) <= limit + _MARGIN else s[: limit + _MARGIN]
        red = self._redact(window)
        if len(red) > limit:
            red = red[:limit] + ELLIPSIS
        elif window is not s:
            red += ELLIPSIS
        return _utf8(red)

    def _str(self, s: str, limit: int) -> str:
        n = len(s)
        if n <= limit:
            red = self._redact(s)
            if len(red) <= limit:
                q = repr(red)
                if len(q) <= limit + 2:
                    return q
        window = s if n <= limit + _MARGIN else s[: limit + _MARGIN]
        red = self._redact(window)
        cut = len(red) > limit or window is not s
        q = repr(red[:limit])
        while len(q) > limit + 2:  # escapes made it longer: drop characters, not escapes
            red = red[: max(0, min(len(red), limit) - (len(q) - limit - 2))]
            q = repr(red)
            cut = True
        if not cut:
            return q
        return f"{q[:-1]}{ELLIPSIS}{q[-1]} (len={n})"

    def _bytes(self, b: bytes, limit: int, n: int = -1) -> str:
        if n < 0:
            n = len(b)
        window = b if len(b) <= limit + _MARGIN else b[: limit + _MARGIN]
        text = window.decode("latin-1")  # one char per byte: ASCII secrets keep their shape
        red = self._redact(text)
        raw = window if red is text else red.encode("latin-1")
        cut = len(raw) > limit or n > len(window)
        q = repr(raw[:limit])
        while len(q) > limit + 3:  # escapes made it longer: drop bytes, not escapes
            raw = raw[: max(0, min(len(raw), limit) - (len(q) - limit - 3))]
            q = repr(raw)
            cut = True
        if not cut:
            return q
        return f"{q[:-1]}{ELLIPSIS}{q[-1]} (len={n})"

    def _int(self, n: int, limit: int) -> str:
        if -_SMALL_INT < n < _SMALL_INT:
            return repr(n)
        if n.bit_length() > _STR_INT_BITS:
            return _approx_int(n)
        text = self._redact(repr(n))  # a card number passed as an int
        if len(text) > limit:
            return f"{text[:limit]}{ELLIPSIS} ({len(text)} digits)"
        return text

    def _seq(
        self, obj: Any, depth: int, limit: int, seen: list[int], open_: str, close: str, n: int
    ) -> str:
        if n == 0:
            return open_ + close
        oid = id(obj)
        if depth >= self.max_depth or oid in seen:
            return open_ + "..." + close
        items = obj[: self.max_items] if open_ != "{" else list(islice(obj, self.max_items))
        parts: list[str] = []
        used = 2
        seen.append(oid)
        try:
            for item in items:
                if used >= limit:
                    break
                p = self._any(item, depth + 1, limit - used, seen)
                parts.append(p)
                used += len(p) + 2
        finally:
            seen.pop()
        return _join(parts, n, limit, open_, close, open_ == "(")

    def _dict(self, obj: dict[Any, Any], depth: int, limit: int, seen: list[int]) -> str:
        n = len(obj)
        if n == 0:
            return "{}"
        oid = id(obj)
        if depth >= self.max_depth or oid in seen:
            return "{...}"
        items = list(islice(dict.items(obj), self.max_items))
        secret = self.redactor.is_secret_name
        parts: list[str] = []
        used = 2
        seen.append(oid)
        try:
            for key, value in items:
                if used >= limit:
                    break
                kp = self._any(key, depth + 1, limit - used, seen)
                tk = type(key)
                if (tk is str and secret(key)) or (
                    tk is not str and issubclass(tk, str) and secret(str.__str__(key))
                ):
                    vp = REDACTED
                else:
                    vp = self._any(value, depth + 1, max(1, limit - used - len(kp) - 2), seen)
                p = f"{kp}: {vp}"
                parts.append(p)
                used += len(p) + 2
        finally:
            seen.pop()
        return _join(parts, n, limit, "{", "}", False)


_DISPATCH: dict[int, Callable[[Previewer, Any, int, int, list[int]], str]] = {
    id(int): Previewer._int_item,
    id(bool): Previewer._repr_item,
    id(type(None)): Previewer._repr_item,
    id(float): Previewer._repr_item,
    id(complex): Previewer._repr_item,
    id(bytes): Previewer._bytes_item,
    id(bytearray): Previewer._bytearray,
    id(list): Previewer._list,
    id(tuple): Previewer._tuple,
    id(dict): Previewer._dict,
    id(set): Previewer._set,
    id(frozenset): Previewer._set,
}


def _call_user(fn: Callable[[Any], Any], obj: Any) -> tuple[bool, str]:
    """Run user code ``fn(obj)`` (a repr, str or registered preview) under the guard.

    Returns:
        ``(True, text)`` on success, else ``(False, marker)``: ``<...>`` when a call is
        already running on this thread (a repr that re-enters preview),
        ``<unrepr: ErrorType>`` when it raised anything (``SystemExit`` and other
        ``BaseException`` included), ``<unrepr: TypeError>`` for a non-str.

    Raises:
        KeyboardInterrupt: raised by the user code on the main thread (a Ctrl-C).
    """
    if getattr(_guard, "active", False):
        return False, "<...>"
    _guard.active = True
    try:
        out = fn(obj)
    except KeyboardInterrupt:
        # Ctrl-C arrives in the main thread: it must still interrupt the program (the
        # compiled engine re-delivers it, the pure one lets it propagate); elsewhere it can
        # only be the user code's own raise, which the untraced program never runs.
        if threading.get_ident() == threading.main_thread().ident:
            raise
        return False, "<unrepr: KeyboardInterrupt>"
    except BaseException as exc:  # SystemExit, GeneratorExit, RecursionError, ...: contained
        return False, f"<unrepr: {_type_name(type(exc))}>"
    finally:
        _guard.active = False
    if type(out) is str:
        return True, out
    if issubclass(type(out), str):
        return True, str.__str__(out)  # an exact copy: the subclass's methods never run
    return False, "<unrepr: TypeError>"


def _join(parts: list[str], n: int, limit: int, open_: str, close: str, tuple_: bool) -> str:
    """Assemble a container preview; add ``…`` and ``(len=N)`` when it was cut."""
    body = ", ".join(parts)
    cut = len(parts) < n
    if len(body) > limit - 2:
        body = body[: max(0, limit - 2)]
        cut = True
    if not cut:
        return f"{open_}{body},{close}" if tuple_ and n == 1 else f"{open_}{body}{close}"
    return f"{open_}{body}{', ' if body else ''}{ELLIPSIS}{close} (len={n})"


def _approx_int(n: int) -> str:
    """Format a huge int as ``~1.234568e+5000 (5001 digits)`` without ``str(n)``."""
    lg = math.log10(abs(n))
    exp = int(lg)
    mant = 10 ** (lg - exp)
    if mant >= 10:
        mant /= 10
        exp += 1
    sign = "-" if n < 0 else ""
    return f"~{sign}{mant:.6f}e+{exp} ({exp + 1} digits)"


def _builtin_str_is_safe(exc: BaseException, tp: type) -> bool:
    """Tell whether ``str(exc)`` of a builtin exception type reads only scalars."""
    if _GROUP is not None and issubclass(tp, _GROUP):  # PY311+: "message (N sub-exceptions)"
        return type(getattr(exc, "message", None)) is str
    for a in _EXC_ARGS(exc):
        if id(type(a)) not in _SCALAR_IDS and not (
            type(a) is tuple and all(id(type(b)) in _SCALAR_IDS for b in a)
        ):
            return False
    for family, attrs in _EXC_STR_ATTRS:
        if issubclass(tp, family):
            for attr in attrs:
                # exact builtin type: its member descriptors win over the instance dict
                v = getattr(exc, attr, None)
                if v is not None and id(type(v)) not in _SCALAR_IDS:
                    return False
    return True
