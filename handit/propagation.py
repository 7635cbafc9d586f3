"""Propagation stage: open sessions -> the Python processes they start, as linked child sessions.

A child process's session has the parent's ``trace_id`` and tag, ``parent_session_id``
set to the parent's session and ``parent_span_id`` to its span; its ``session_start``
carries its ``pid``. Three ways in, all off with ``HANDIT_CHILDREN=0``:

- ``os.fork()`` (and ``multiprocessing``'s fork start method): the child continues the
  session that was current in the forking thread. Only a fork made through ``os.fork``
  counts; ``subprocess`` forks to exec at once and is handled below.
- a new interpreter (``subprocess`` running Python, ``multiprocessing`` spawn and
  forkserver, ``os.system``, ``os.posix_spawn``): ``HANDIT_PARENT_SESSION`` in the
  environment holds the link of the session current in the thread starting the child (the
  first open session when that thread has none) and the settings changed by
  ``configure()`` (never the API key). It is written when a child process is started
  (handit wraps ``_posixsubprocess.fork_exec``, ``os.system`` and ``os.posix_spawn[p]``
  while its engine is installed), not at every session start: a server with a session
  per request pays nothing for it. The ``handit.pth`` start-up file installed with the
  package calls :func:`process_startup`, which starts the child's session. Without the
  variable the start-up file imports nothing. A child given an environment of its own
  (``env=``) gets the link when that environment holds every variable of ``os.environ``
  (a copy with changes, ``{**os.environ, ...}``); one without some of them, or a child that
  is not Python, is unaffected.
- ``multiprocessing``'s forkserver and resource tracker are helpers, not the program's
  children: they get no session; the forkserver's forks continue the parent's session.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import warnings
from typing import Any

try:
    import _posixsubprocess  # every subprocess and multiprocessing spawn on POSIX starts through it
except ImportError:  # Windows
    _posixsubprocess = None  # type: ignore[assignment]

__all__ = ["ENV", "process_startup", "release", "sessions_closed", "sessions_opened", "stop_inherited"]

ENV = "HANDIT_PARENT_SESSION"
"""The environment variable carrying a session into child processes."""

_NOT_CARRIED = frozenset({"api_key"})  # a secret never goes into a child's environment
_PATH_SETTINGS = ("output_file", "spool_dir")  # made absolute: a child may run elsewhere
_MULTIPROCESSING_HELPERS = ("from multiprocessing.forkserver import", "from multiprocessing.resource_tracker import")

_env_value: str | None = None  # what this process put in os.environ[ENV]
_period_open = False  # a session is open (HANDIT_CHILDREN on): children started now continue it
_settings_json: tuple[Any, str] | None = None  # (config, its settings as JSON): one config, one encoding
_ENV_KEY = ENV.encode()
_EAGER = _posixsubprocess is None  # the link is written at each period's start instead
_ENV_CAP = 4096  # bytes of the link kept in handit's own environment string (longer: os.environ)
_wrapped: dict[tuple[Any, str], tuple[Any, Any]] = {}  # (module, name) -> (original, wrapper) in place
_made: dict[tuple[Any, str], tuple[Any, Any]] = {}  # the wrappers made so far, reused
_fork_link: dict[str, Any] | None = None  # the forkserver's: every fork continues this link
_started = False  # process_startup has run in this process
_continued: dict[str, Any] = {}  # parent session id -> this process's session continuing it


def link_of(session: Any) -> dict[str, Any]:
    """What a child needs to continue ``session``: ids, tag, and the settings that differ
    from the defaults (paths made absolute, the API key left out).

    Args:
        session: an open session.
    Returns:
        a JSON-serialisable dict (its ``settings`` shared between calls: not to be changed).
    """
    return {"session": session.id, "trace": session.trace_id, "span": session.span_id,
            "tag": session.tag, "pid": os.getpid(), "settings": _settings_of(session.config)}


_last_settings: list[tuple[Any, str, dict[str, Any]]] = []  # (config, cwd, its settings), the last asked


def _settings_of(config: Any) -> dict[str, Any]:
    """The settings of ``config`` a child takes, kept for the same (frozen) config and working
    directory: a server with a session per request opens a period of sessions per request,
    and walking the dataclass fields each time cost ~10 us of it."""
    try:
        cwd = os.getcwd()
    except OSError:  # the working directory was removed: relative paths stay as they are
        cwd = ""
    if _last_settings and _last_settings[0][0] is config and _last_settings[0][1] == cwd:
        return _last_settings[0][2]
    settings: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name in _NOT_CARRIED or value == f.default:
            continue
        if f.name in _PATH_SETTINGS and value:
            value = os.path.abspath(value)
        settings[f.name] = list(value) if isinstance(value, tuple) else value
    _last_settings[:] = [(config, cwd, settings)]
    return settings


def _link_text(session: Any) -> str:
    """``link_of(session)`` as JSON, the settings' part encoded once per config (a session a
    request or a test opens the same few configs again and again)."""
    global _settings_json
    cached = _settings_json
    if cached is None or cached[0] is not session.config:
        settings = json.dumps(link_of(session)["settings"], separators=(",", ":"))
        cached = _settings_json = (session.config, settings)
    return (f'{{"session":"{session.id}","trace":"{session.trace_id}","span":"{session.span_id}",'
            f'"tag":{json.dumps(session.tag)},"pid":{os.getpid()},"settings":{cached[1]}}}')


class _OwnEnvString:
    """The link put in the C environment from one buffer handit owns (``putenv``), rewritten
    in place for every period with sessions open, and in ``os.environ`` beside it.

    ``os.environ[ENV] = value`` calls ``setenv()``, and glibc keeps every value it was
    ever given (``setenv.c``: replaced strings may still be referenced, so they are never
    freed): a new session id each period grew RSS by ~26 MB per 100,000 sessions and cost
    ~128k instructions (``tests/test_session_cost.py``). ``putenv()`` stores the pointer
    it is given instead, so one buffer serves every period. Linux only (glibc and musl
    both keep the caller's pointer); elsewhere, or for a link past ``_ENV_CAP`` bytes,
    ``os.environ`` is used as before.
    """

    def __init__(self) -> None:
        import ctypes

        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.putenv.argtypes = [ctypes.c_char_p]
        self._libc.putenv.restype = ctypes.c_int
        self._prefix = _ENV_KEY + b"="
        self._buffer = ctypes.create_string_buffer(len(self._prefix) + _ENV_CAP + 1)
        self._address = ctypes.addressof(self._buffer)
        self._memmove = ctypes.memmove
        self._memmove(self._address, self._prefix, len(self._prefix))
        self._data: dict[bytes, bytes] = os.environ._data  # type: ignore[attr-defined]

    def set(self, value: str) -> bool:
        """Put ``value`` in the environment; False when it does not fit (the caller uses ``os.environ``)."""
        raw = value.encode()
        if len(raw) > _ENV_CAP or b"\0" in raw:
            return False
        self._memmove(self._address + len(self._prefix), raw + b"\0", len(raw) + 1)  # not in environ now
        if self._libc.putenv(self._buffer) != 0:
            return False
        self._data[_ENV_KEY] = raw
        return True

    def clear(self, value: str) -> None:
        """Take the link out of the environment, unless someone has replaced it since."""
        if self._data.get(_ENV_KEY) == value.encode():
            os.unsetenv(ENV)  # takes the pointer out; frees nothing of handit's buffer
            del self._data[_ENV_KEY]


_own_env: _OwnEnvString | None = None
_own_env_failed = not sys.platform.startswith("linux")


def _put_env(value: str) -> None:
    global _own_env, _own_env_failed
    if not _own_env_failed and _own_env is None:
        try:
            _own_env = _OwnEnvString()
        except Exception:  # no ctypes, no putenv: os.environ does it
            _own_env_failed = True
    if _own_env is None or not _own_env.set(value):
        os.environ[ENV] = value


def _clear_env(value: str) -> None:
    if _own_env is not None and _own_env._data.get(_ENV_KEY) == value.encode():
        _own_env.clear(value)
    elif os.environ.get(ENV) == value:
        del os.environ[ENV]


def _children_on(session: Any) -> bool:
    return bool(getattr(session.config, "children", True))


def sessions_opened(session: Any) -> None:
    """Called by :mod:`handit.lifecycle` when the first session of a period opens: children
    started from now on continue the session current where they are started.

    The wrappers are put in place once per engine installation (:func:`release` removes
    them); this only marks the period open (no environment written: see the module docstring).

    Args:
        session: the session being started.
    """
    global _period_open
    if not _children_on(session):
        return
    _period_open = True
    if not _wrapped:
        _wrap_all()
    if _EAGER:  # no _posixsubprocess (Windows): no wrapper sees a new process start
        _write_link(session)


def sessions_closed() -> None:
    """The last session stopped: children started from now on are not traced."""
    global _period_open, _env_value
    _period_open = False
    if _env_value is not None:
        _clear_env(_env_value)
        _env_value = None


def release() -> None:
    """handit's engine is released: the process-start wrappers go (a wrapper someone else
    has since replaced is left to them; the forkserver's fork wrapper stays for its life)."""
    for (module, name), (original, wrapper) in list(_wrapped.items()):
        if module is os and name == "fork" and _fork_link is not None:
            continue
        if getattr(module, name, None) is wrapper:
            setattr(module, name, original)
        del _wrapped[(module, name)]
    subprocess_module = sys.modules.get("subprocess")
    if subprocess_module is not None and _posixsubprocess is not None:
        # subprocess imported while the wrapper was in place copied it (``from _posixsubprocess
        # import fork_exec as _fork_exec``, 3.11+)
        made = _made.get((_posixsubprocess, "fork_exec"))
        if made is not None and getattr(subprocess_module, "_fork_exec", None) is made[1]:
            setattr(subprocess_module, "_fork_exec", made[0])  # noqa: B010 (3.10 has no such name)


def _wrap_all() -> None:
    if hasattr(os, "fork") and (os, "fork") not in _wrapped:
        _wrap(os, "fork", _make_fork_wrapper)
    for name, env_at in (("system", None), ("posix_spawn", 2), ("posix_spawnp", 2)):
        if hasattr(os, name):
            _wrap(os, name, lambda original, at=env_at: _make_spawn_wrapper(original, at))
    if _posixsubprocess is not None:
        fork_exec = _wrap(_posixsubprocess, "fork_exec", lambda original: _make_spawn_wrapper(original, 5))
        subprocess_module = sys.modules.get("subprocess")
        if subprocess_module is not None and getattr(subprocess_module, "_fork_exec", None) is fork_exec[0]:
            _wrap(subprocess_module, "_fork_exec", lambda original: fork_exec[1])


def _wrap(module: Any, name: str, make: Any) -> tuple[Any, Any]:
    """Replace ``module.name`` by a wrapper of it, made once per original and reused (a
    setprofile engine is installed again for every period with sessions open)."""
    original = getattr(module, name)
    made = _made.get((module, name))
    if made is None or made[0] is not original:
        made = _made[(module, name)] = (original, make(original))
    _wrapped[(module, name)] = made
    setattr(module, name, made[1])
    return made


def _make_fork_wrapper(original: Any) -> Any:
    def fork() -> int:
        link = _fork_link
        if link is None and _period_open:
            from . import sessions

            parent = sessions.current()
            link = link_of(parent) if parent is not None and _children_on(parent) else None
        pid = original()
        if pid == 0 and link is not None:
            _continue(link)
        return pid  # type: ignore[no-any-return]

    fork.__doc__ = original.__doc__
    fork.__wrapped__ = original  # type: ignore[attr-defined]
    return fork


def _make_spawn_wrapper(original: Any, env_at: int | None) -> Any:
    """A wrapper of a function starting a process: the link written first; ``env_at``: the
    position of its environment argument (None: the child inherits the C environment)."""
    def spawn(*args: Any, **kwargs: Any) -> Any:
        if _period_open:
            try:
                link = _link_for_child()
                if link is not None and env_at is not None and len(args) > env_at:
                    env = _env_with_link(args[env_at], link)
                    if env is not args[env_at]:
                        args = (*args[:env_at], env, *args[env_at + 1:])
            except Exception as exc:  # never fails the program's process start
                _warn(f"handit could not pass the session to a child process: {exc!r}")
        return original(*args, **kwargs)

    spawn.__name__ = spawn.__qualname__ = getattr(original, "__name__", "spawn")
    spawn.__doc__ = original.__doc__
    spawn.__wrapped__ = original  # type: ignore[attr-defined]
    return spawn


def _link_for_child() -> str | None:
    """Write the link of the session current here (else the first open one) to the
    environment, and return it (None: no session whose children are traced)."""
    from . import sessions

    session = sessions.current()
    if session is None:
        active = sessions.active_sessions()
        session = active[0] if active else None
    if session is None or not _children_on(session):
        return None
    return _write_link(session)


def _write_link(session: Any) -> str:
    global _env_value
    value = _link_text(session)
    if value != _env_value:
        _put_env(value)
        _env_value = value
    return value


def _env_with_link(env: Any, link: str) -> Any:
    """``env`` (a mapping, a list of ``b"K=V"``, or None) with the link added when it is a copy
    of ``os.environ`` (it holds every variable of it) that lacks one; else ``env`` itself."""
    if env is None or env is os.environ:
        return env
    here = [k for k in os.environ._data if k != _ENV_KEY]  # type: ignore[attr-defined]
    if isinstance(env, (list, tuple)):
        keys = {item.split(b"=", 1)[0] for item in env if isinstance(item, bytes)}
        if _ENV_KEY in keys or not all(k in keys for k in here):
            return env
        return [*env, _ENV_KEY + b"=" + link.encode()]
    if ENV in env or not all(os.fsdecode(k) in env for k in here):
        return env
    return {**env, ENV: link}


def _continue(link: dict[str, Any]) -> Any:
    """Start this process's session continuing ``link``'s; never raises (warns instead)."""
    from . import sessions

    try:
        traceparent = f"00-{link['trace']}-{link['span']}-01"
        session = sessions.start(link.get("tag"), traceparent=traceparent, parent_session_id=link["session"])
    except Exception as exc:
        _warn(f"handit could not continue session {link.get('session')} in process {os.getpid()}: {exc!r}")
        return None
    _continued[link["session"]] = session
    return session


def stop_inherited(session: Any) -> Any:
    """``stop()`` of a session this process got from its parent by fork: the parent writes
    that one; this process's continuation of it, if any, stops instead.

    Args:
        session: the parent's session object, as the child sees it.
    Returns:
        ``session``.
    """
    from . import sessions

    continuation = _continued.pop(session.id, None)
    if continuation is not None:
        sessions.stop(continuation)
    return session


def after_fork_in_child() -> None:
    """The parent's continuations are not this child's."""
    _continued.clear()


def _warn(message: str) -> None:
    try:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    except Exception:  # -W error in a child must not stop the child
        pass


def _helper_kind() -> str | None:
    """``"forkserver"``, ``"resource_tracker"`` or None: whether this process is one of
    multiprocessing's helpers (started as ``python -c "from multiprocessing.<x> import main..."``)."""
    argv = getattr(sys, "orig_argv", [])
    for i, arg in enumerate(argv[:-1]):
        if arg == "-c":
            command = argv[i + 1].lstrip()
            for prefix in _MULTIPROCESSING_HELPERS:
                if command.startswith(prefix):
                    return prefix.split(".")[1].split()[0]
    return None


def process_startup() -> None:
    """Start this process's session from ``HANDIT_PARENT_SESSION``, if set.

    Called by ``handit.pth`` at interpreter start-up; does nothing without the variable,
    and never raises (a problem is a warning and the child runs untraced).
    """
    global _fork_link, _started
    value = os.environ.get(ENV)
    if not value or _started:
        return
    # once: site.py runs a venv's .pth files twice on some versions (3.12.1: venv() and main()
    # both call addsitepackages for it), and the first call's session is in the variable by then
    _started = True
    try:
        link = json.loads(value)
        if not isinstance(link, dict) or not isinstance(link.get("session"), str):
            raise ValueError(f"{ENV} is not a handit session link")
        from . import config

        config.configure(**link.get("settings", {}))
        helper = _helper_kind()
        if helper == "forkserver":
            _fork_link = link  # no session for the server; each process it forks continues the link
            _wrap(os, "fork", _make_fork_wrapper)
            return
        if helper is not None:
            return
    except Exception as exc:
        _warn(f"handit could not continue the parent's session in process {os.getpid()}: {exc!r}")
        return
    _continue(link)
