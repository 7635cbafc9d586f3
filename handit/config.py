"""Settings stage: HANDIT_* environment variables and configure() keyword arguments -> one validated, frozen Config."""
from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import re
import sys
import sysconfig
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import FrameType, MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError, HanditConfigWarning, _safe_value, _shown

__all__ = [
    "Config", "DEFAULT_EXCLUDE", "DEFAULT_EXCLUDE_FILES", "ENV_NAMES",
    "configure", "get_config", "on_change", "reset_config",
]

# Modules never traced by default: import machinery, handit itself, the HTTP stack
# (instrumented separately) and hot stdlib helpers. A name covers its submodules;
# the original's `json.*` also swallowed user modules such as `json_utils`.
_EXCLUDED_MODULES = (
    "_frozen_importlib", "_frozen_importlib_external", "importlib", "handit",
    "requests", "urllib3", "httpx", "httpcore", "ssl", "socket", "threading",
    "json", "logging", "re", "typing", "collections", "contextlib", "inspect",
    "abc", "functools", "itertools", "dataclasses", "pydantic", "pydantic_core",
)
# Matched at the end of the qualname, so `f.<locals>.<lambda>` is excluded too. The
# comprehension names only occur before 3.12 (PEP 709 inlines them); <genexpr> stays.
_EXCLUDED_FUNCTIONS = ("<lambda>", "<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>")

DEFAULT_EXCLUDE = (
    r"^(?:" + "|".join(map(re.escape, _EXCLUDED_MODULES)) + r")(?:\.[^:]*)?::"
    r"|(?:::|\.)(?:" + "|".join(map(re.escape, _EXCLUDED_FUNCTIONS)) + r")$"
)
"""Default HANDIT_EXCLUDE, a regex over ``module::qualname``."""


def _default_exclude_files() -> str:
    """Build DEFAULT_EXCLUDE_FILES: frozen/exec'd code, installed packages, the stdlib.

    The original's ``lib/python`` also matched user projects under such a path;
    here only the running interpreter's own stdlib directories are excluded, as
    sysconfig and the loaded ``os`` module see them (symlinks resolved too).
    """
    paths = sysconfig.get_paths()
    dirs: set[str] = set()
    for path in (paths.get("stdlib"), paths.get("platstdlib"), os.path.dirname(os.__file__)):
        for variant in (path, os.path.realpath(path)) if path else ():
            norm = os.path.normpath(variant)
            if os.path.dirname(norm) != norm:  # never a filesystem root: that would match everything
                # Either separator: code objects on Windows may carry both.
                dirs.add(r"[\\/]".join(re.escape(part) for part in re.split(r"[\\/]+", norm)))
    stdlib = "|".join(sorted(dirs))
    if os.name == "nt":
        stdlib = f"(?i:{stdlib})"
    parts = [r"^<frozen ", r"^<string>$", r"[\\/](?:site|dist)-packages[\\/]"]
    if stdlib:
        parts.append(rf"^(?:{stdlib})[\\/]")
    return "|".join(parts)


DEFAULT_EXCLUDE_FILES = _default_exclude_files()
"""Default HANDIT_EXCLUDE_FILES, a regex over the code's file name."""

# HANDIT_* variables handit sets itself that are not settings (handit.propagation's link)
_NOT_SETTINGS = frozenset({"HANDIT_PARENT_SESSION"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@functools.lru_cache(maxsize=64)
def _compile(pattern: str) -> re.Pattern[str]:
    """Compile ``pattern`` once; every Config sharing the string shares the object."""
    return re.compile(pattern)


class _Invalid(Exception):
    """A value failed its check; ``args[0]`` is the reason, phrased to follow the value."""


class _Kind:
    """How one setting is parsed from the environment and checked as a Python value."""

    secret = False

    def parse(self, text: str) -> Any:
        """Convert an environment string, then check it. Raises _Invalid."""
        return self.check(text.strip())

    def check(self, value: Any) -> Any:
        """Return ``value`` normalized, or raise _Invalid."""
        raise NotImplementedError


def _not_a(value: object, expected: str) -> _Invalid:
    name = type(value).__name__
    return _Invalid(f"is {'an' if name[0] in 'aeiouAEIOU' else 'a'} {name}, not {expected}")


class _Regex(_Kind):
    def __init__(self, optional: bool = False) -> None:
        self.optional = optional

    def parse(self, text: str) -> Any:
        return self.check(text)  # whitespace can be part of a pattern

    def check(self, value: Any) -> Any:
        if value is None and self.optional:
            return None
        if not isinstance(value, str):
            raise _not_a(value, "a regular expression string")
        try:
            _compile(value)
        except (re.error, OverflowError, RecursionError) as exc:
            raise _Invalid(f"is not a valid regular expression ({exc})") from None
        return None if value == "" and self.optional else value


class _Bool(_Kind):
    def parse(self, text: str) -> Any:
        word = text.strip().lower()
        if word not in _TRUE and word not in _FALSE:
            raise _Invalid("is not a boolean (use 1/0, true/false, yes/no or on/off)")
        return word in _TRUE

    def check(self, value: Any) -> Any:
        if not isinstance(value, bool):
            raise _not_a(value, "a bool")
        return value


class _Number(_Kind):
    """An int (never a bool) or a float (an int is accepted) in [low, high], or above low."""

    def __init__(self, kind: type[int] | type[float], low: float, high: float | None = None,
                 *, above: bool = False) -> None:
        self.kind, self.low, self.high, self.above = kind, low, high, above
        if kind is int:
            self.wanted = f"an integer >= {low}"
        elif high is None:
            self.wanted = f"a number {'>' if above else '>='} {low:g}"
        else:
            self.wanted = f"a number between {low:g} and {high:g}"

    def parse(self, text: str) -> Any:
        try:
            number = self.kind(text.strip())
        except ValueError:
            raise _Invalid(f"is not {self.wanted}") from None
        return self.check(number)

    def check(self, value: Any) -> Any:
        # bool is an int subclass, but True is no limit.
        if isinstance(value, bool) or not isinstance(value, (int,) if self.kind is int else (int, float)):
            raise _not_a(value, "an int" if self.kind is int else "a number")
        number = self.kind(value)
        ok = self.low <= number and (self.high is None or number <= self.high)  # False for NaN
        if self.above:
            ok = ok and number > self.low
        if self.kind is float:
            ok = ok and math.isfinite(number)
        if not ok:
            raise _Invalid(f"is not {self.wanted}")
        return number


class _Choice(_Kind):
    def __init__(self, *choices: str) -> None:
        self.choices = choices

    def parse(self, text: str) -> Any:
        return self.check(text.strip().lower())

    def check(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise _not_a(value, "a str")
        if value not in self.choices:
            raise _Invalid(f"is not one of: {', '.join(self.choices)}")
        return value


class _Text(_Kind):
    def __init__(self, optional: bool = False, path: bool = False, url: bool = False,
                 secret: bool = False) -> None:
        self.optional, self.path, self.url, self.secret = optional, path, url, secret

    def check(self, value: Any) -> Any:
        if value is None and self.optional:
            return None
        if self.path and isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str):
            raise _not_a(value, "a path" if self.path else "a str")
        if value == "":
            if self.optional:
                return None
            raise _Invalid("is empty")
        if self.url:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise _Invalid("is not an http:// or https:// URL")
        return value


class _Names(_Kind):
    def parse(self, text: str) -> Any:
        return self.check(tuple(name.strip() for name in text.split(",") if name.strip()))

    def check(self, value: Any) -> Any:
        if not isinstance(value, (tuple, list, frozenset, set)):
            raise _not_a(value, "a tuple of names")
        if not all(isinstance(name, str) and name for name in value):
            raise _Invalid("is not a collection of non-empty str names")
        return tuple(dict.fromkeys(sorted(value) if isinstance(value, (set, frozenset)) else value))


_BOOL = _Bool()
_RATE = _Number(float, 0.0, 1.0)


def _setting(default: Any, kind: _Kind, **options: Any) -> Any:
    """A dataclass field whose validation rule travels with it, in its metadata."""
    return field(default=default, metadata={"kind": kind}, **options)


@dataclass(frozen=True)
class Config:
    """Every handit setting, validated. Build one with :meth:`from_env` or :meth:`replace`.

    Each field is read from the environment variable ``HANDIT_`` + its name in
    upper case (see :data:`ENV_NAMES`). Constructing a Config validates every
    field and raises :class:`~handit.errors.ConfigError` for a bad value.
    """

    include: str | None = _setting(None, _Regex(optional=True))
    """Regex over ``module::qualname``: only matches are traced. None: everything not excluded."""
    exclude: str = _setting(DEFAULT_EXCLUDE, _Regex())
    """Regex over ``module::qualname``, checked before ``include``. Empty: exclude nothing."""
    exclude_files: str = _setting(DEFAULT_EXCLUDE_FILES, _Regex())
    """Regex over the code's file name. The default skips frozen/exec'd code, installed packages and the stdlib."""
    capture_only_cwd: bool = _setting(False, _BOOL)
    """Trace only code whose file lies under the working directory."""
    sample_rate: float = _setting(1.0, _RATE)
    """Fraction of functions traced, chosen by a hash of ``module::qualname`` (stable across runs)."""
    max_str: int = _setting(256, _Number(int, 16))
    """Characters kept per preview string (at least 16; there is no "no cap")."""
    max_locals: int = _setting(50, _Number(int, 0))
    """Most arguments/locals previewed per call."""
    max_items: int = _setting(8, _Number(int, 0))
    """Items shown per container in a preview."""
    max_depth: int = _setting(3, _Number(int, 0))
    """Levels of nested containers expanded in a preview."""
    redact: str | None = _setting(None, _Regex(optional=True))
    """Extra regex over argument/key names whose values are redacted; extends the built-in rules."""
    redact_replace: bool = _setting(False, _BOOL)
    """If true, ``redact`` replaces the built-in name rules instead of extending them."""
    safe_keys: tuple[str, ...] = _setting((), _Names())
    """Names exempt from name redaction (HANDIT_SAFE_KEYS is comma-separated)."""
    capture: str = _setting("args", _Choice("timing", "args", "full"))
    """What a call records: ``timing`` only, or ``args`` previews; ``full`` is ``args`` for now (reserved for locals at return)."""
    preview: str = _setting("safe", _Choice("safe", "repr"))
    """How values are previewed: ``safe`` never runs user ``__repr__``; ``repr`` does."""
    output_file: str | None = _setting(None, _Text(optional=True, path=True))
    """File that finished sessions are written to. None: no file."""
    output_format: str = _setting("auto", _Choice("auto", "handit", "jsonl"))
    """Format of ``output_file``; ``auto`` picks from the file name (see :attr:`resolved_output_format`)."""
    endpoint: str | None = _setting(None, _Text(optional=True, url=True))
    """HTTP ingest URL for batches of events. None: no HTTP export."""
    api_key: str | None = _setting(None, _Text(optional=True, secret=True), repr=False)
    """Bearer token sent to ``endpoint``; never shown in repr or error messages."""
    allow_insecure_http: bool = _setting(False, _BOOL)
    """Allow a plain ``http://`` endpoint (the API key would travel in clear text)."""
    flush_every_events: int = _setting(200, _Number(int, 1))
    """Flush exporters after this many events."""
    flush_every_ms: int = _setting(1000, _Number(int, 1))
    """Flush exporters at least this often, in milliseconds."""
    max_buffer_events: int = _setting(10_000, _Number(int, 1))
    """Most events an exporter holds before sending."""
    max_buffer_bytes: int = _setting(8 * 1024 * 1024, _Number(int, 1))
    """Most encoded bytes an exporter holds before sending."""
    spool_dir: str = _setting("./handit_spool", _Text(path=True))
    """Directory where batches the endpoint did not accept wait for a retry."""
    max_spool_bytes: int = _setting(256 * 1024 * 1024, _Number(int, 0))
    """Most bytes kept in ``spool_dir``; 0: nothing is spooled."""
    http_timeout: float = _setting(30.0, _Number(float, 0.0, above=True))
    """Seconds an HTTP export request may take."""
    exit_timeout: float = _setting(2.0, _Number(float, 0.0))
    """Most seconds the program's exit waits for the HTTP exporter; what is not sent by then is spooled."""
    session_sample_rate: float = _setting(1.0, _RATE)
    """Fraction of sessions recorded at all."""
    engine: str = _setting("auto", _Choice("auto", "compiled", "fallback"))
    """Capture engine: the ``compiled`` extension, the pure-Python ``fallback``, or ``auto``."""
    source: str = _setting("auto", _Choice("auto", "sysmon", "setprofile"))
    """Event source: ``sysmon`` (sys.monitoring, 3.12+), ``setprofile``, or ``auto``."""
    require_compiled: bool = _setting(False, _BOOL)
    """Make a missing compiled extension an error instead of a fallback."""
    fast_tstate: bool = _setting(True, _BOOL)
    """Compiled engine, 3.12+ on x86-64 Linux: read CPython's thread state from its TLS slot where proven valid per thread; False: always the exported getter."""
    bounded_memory: bool = _setting(False, _BOOL)
    """Let ring buffers drop records (counted) instead of growing when the drain falls behind."""
    max_session_memory: int = _setting(16 * 1024 * 1024, _Number(int, 0))
    """Bytes of encoded trace a session keeps in memory; past it they are read back from its trace file
    (or spilled to a temporary file when it writes none)."""
    children: bool = _setting(True, _BOOL)
    """Continue open sessions into the Python processes they start (fork, multiprocessing, subprocess)."""
    # -- HTTP instrumentation (handit/instrument/, docs/http.md) --
    instrument_http: bool = _setting(True, _BOOL)
    """Record HTTP client calls (requests, httpx, urllib3, aiohttp, urllib) made inside sessions."""
    redact_headers: tuple[str, ...] = _setting((), _Names())
    """Extra header names whose values are redacted, besides the built-in ones (comma-separated)."""
    max_body: int = _setting(4096, _Number(int, 0))
    """Bytes of a text or JSON HTTP body recorded (request and response); 0: no bodies."""
    # -- OpenTelemetry (handit/otel/, docs/otel.md) --
    otel: bool = _setting(False, _BOOL)
    """Export each finished session as an OpenTelemetry trace (needs ``pip install 'handit[otel]'``)."""
    otel_min_duration: float = _setting(0.0, _Number(float, 0.0))
    """Seconds: calls shorter than this become no span of their own; they are counted on the span they ran in."""
    otel_max_spans: int = _setting(1000, _Number(int, 1))
    """Most spans one session exports (its root span included); the shortest calls past it are cut, counted on the root."""

    def __repr__(self) -> str:
        # Not the generated repr: an endpoint URL may carry a token in its path or query.
        shown = (f"{f.name}={_safe_value(getattr(self, f.name))!r}" for f in dataclasses.fields(self) if f.repr)
        return f"Config({', '.join(shown)})"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            kind: _Kind = f.metadata["kind"]
            value = getattr(self, f.name)
            try:
                checked = kind.check(value)
            except _Invalid as exc:
                raise ConfigError(ENV_NAMES[f.name], value, exc.args[0], secret=kind.secret) from None
            if checked is not value:
                object.__setattr__(self, f.name, checked)  # e.g. int -> float, list -> tuple

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Read every ``HANDIT_*`` variable.

        The environment never raises: a bad value or an unknown ``HANDIT_*`` name
        gives a :class:`~handit.errors.HanditConfigWarning` and the default is
        used. An empty variable counts as unset, except for the regex settings,
        where it means "no pattern" (so ``HANDIT_EXCLUDE=`` excludes nothing).

        Args:
            environ: the variables to read; ``os.environ`` if None.
        Returns:
            the validated Config.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in sorted(key for key in env if key.startswith("HANDIT_")):
            text = env[name]
            field_name = _FIELD_BY_ENV.get(name)
            if field_name is None and name in _NOT_SETTINGS:
                continue
            if field_name is None:
                _warn(f"{name} is not a handit setting; ignored{_did_you_mean(name)}")
                continue
            f = _FIELDS[field_name]
            kind: _Kind = f.metadata["kind"]
            if not text.strip() and not isinstance(kind, _Regex):
                continue
            try:
                values[field_name] = kind.parse(text)
            except _Invalid as exc:
                reason = exc.args[0].removeprefix("is ")
                _warn(f"{name}={_shown(text, secret=kind.secret)} ignored: {reason}; "
                      f"using default {_shown(f.default)}")
        return cls(**values)

    def replace(self, **settings: Any) -> Config:
        """Return a copy with some settings changed.

        Args:
            **settings: field names (``sample_rate=0.5``) or environment names
                (``HANDIT_SAMPLE_RATE=0.5``). Values must have the field's type
                (an int is accepted for a float); strings are not parsed.
        Returns:
            the new, validated Config.
        Raises:
            ConfigError: an unknown name, a name given twice, or a bad value;
                the message names the setting and the value.
        """
        changes: dict[str, Any] = {}
        for name, value in settings.items():
            field_name = _resolve(name, value)
            if field_name in changes:
                raise ConfigError(name, value, "", message=(
                    f"{name}={_shown(value)}: {field_name} is already given in this call"))
            changes[field_name] = value
        return dataclasses.replace(self, **changes)

    def compiled(self, field: str) -> re.Pattern[str] | None:
        """Return a regex setting compiled (cached per pattern string).

        Args:
            field: ``include``, ``exclude``, ``exclude_files`` or ``redact``
                (or its ``HANDIT_*`` name).
        Returns:
            the compiled pattern, or None when the setting has no pattern.
        Raises:
            ValueError: ``field`` is not a regex setting.
        """
        field_name = _FIELD_BY_ENV.get(field, field)
        if field_name not in _FIELDS or not isinstance(_FIELDS[field_name].metadata["kind"], _Regex):
            raise ValueError(f"{field!r} is not a regex setting")
        pattern: str | None = getattr(self, field_name)
        return _compile(pattern) if pattern else None

    @property
    def resolved_output_format(self) -> str:
        """``output_format`` with ``auto`` decided: ``jsonl`` for a ``*.jsonl`` file, else ``handit``."""
        if self.output_format != "auto":
            return self.output_format
        return "jsonl" if (self.output_file or "").endswith(".jsonl") else "handit"


_FIELDS: Mapping[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(Config)}
ENV_NAMES: Mapping[str, str] = MappingProxyType({name: "HANDIT_" + name.upper() for name in _FIELDS})
"""Config field name -> environment variable name; the one table of both spellings."""
_FIELD_BY_ENV: Mapping[str, str] = {env: name for name, env in ENV_NAMES.items()}


def _did_you_mean(name: str) -> str:
    """``"; did you mean X?"`` in the spelling ``name`` uses, or ``""``."""
    pool = ENV_NAMES.values() if name.upper().startswith("HANDIT_") else ENV_NAMES.keys()
    by_upper = {candidate.upper(): candidate for candidate in pool}
    close = difflib.get_close_matches(name.upper(), by_upper, n=1)
    return f"; did you mean {by_upper[close[0]]}?" if close else ""


def _resolve(name: str, value: object) -> str:
    """Map a field or ``HANDIT_*`` name to the field name; ConfigError if unknown."""
    if name in _FIELDS:
        return name
    if name in _FIELD_BY_ENV:
        return _FIELD_BY_ENV[name]
    raise ConfigError(name, value, "", message=(
        f"{name}={_shown(value)}: unknown setting{_did_you_mean(name)}"))


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _warn(message: str) -> None:
    # Attributed to the first frame outside handit: the user's line that made handit read
    # the environment, not handit's own (`…/handit/config.py:466: … _current = Config.from_env()`).
    # `handit run` prints it as one line of its own (cli.py).
    level = 1
    frame: FrameType | None = sys._getframe()
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, HanditConfigWarning, stacklevel=level)


_lock = threading.RLock()  # reentrant: a listener may call get_config() or configure()
_current: Config | None = None
_listeners: list[Callable[[Config], None]] = []


def get_config() -> Config:
    """Return the current Config, reading the environment on first use.

    Returns:
        the current Config.
    """
    global _current
    config = _current
    if config is None:
        with _lock:
            if _current is None:
                _current = Config.from_env()
            config = _current
    return config


def configure(**settings: Any) -> Config:
    """Change settings for everything that starts from now on.

    Settings accumulate: each call starts from the current Config.

    Args:
        **settings: as for :meth:`Config.replace`.
    Returns:
        the new current Config.
    Raises:
        ConfigError: a bad name or value; the current Config is left unchanged.
    """
    with _lock:
        return _install(get_config().replace(**settings))


def reset_config() -> Config:
    """Discard :func:`configure` changes and read the environment again.

    Returns:
        the new current Config.
    """
    with _lock:
        return _install(Config.from_env())


def on_change(listener: Callable[[Config], None]) -> Callable[[Config], None]:
    """Register ``listener`` to be called with the new Config after each change.

    Usable as a decorator. Listeners run in registration order, under the
    settings lock; an exception from one propagates to the caller of
    :func:`configure`/:func:`reset_config` (the new Config stays in place).

    Args:
        listener: called with the new Config.
    Returns:
        ``listener`` unchanged.
    """
    _listeners.append(listener)
    return listener


def _install(config: Config) -> Config:
    """Make ``config`` current and tell the listeners; the caller holds ``_lock``."""
    global _current
    _current = config
    for listener in list(_listeners):
        listener(config)
    return config
