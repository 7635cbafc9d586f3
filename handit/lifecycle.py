"""Process lifecycle stage: what open sessions become when the process exits, forks, is signalled or execs.

Nothing here runs at import. The first session start calls :func:`install`, which
installs, once per process and in this order:

1. an ``atexit`` handler: open sessions are stopped (``"reason": "exit"``) and every
   file and exporter is flushed;
2. one ``os.register_at_fork`` child hook running :data:`FORK_STEPS` in order: every
   imported engine's ``after_fork_in_child`` (its locks re-initialised first, then the
   parent's records dropped), the drain's reset, the sessions' reset (the parent's
   sessions and sinks are the parent's), then the engine's removal;
3. handlers for SIGTERM and SIGHUP (only from the main thread, and never where the
   program ignores the signal), chained to the handler the program had (:func:`_on_signal`).

While handit's engine is installed (from the first session's start to :func:`release`),
``os.execv``/``os.execve`` (every ``os.exec*`` and ``os.spawn*`` ends in one of them)
and ``os._exit`` are wrapped so that open sessions (:func:`sessions_opened` /
:func:`sessions_closed`) are stopped and written before the process image goes, and
:mod:`handit.propagation` carries sessions into child processes.
"""
from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from typing import Any, Callable

from . import _internal, propagation

__all__ = ["FORK_STEPS", "HANDLED_SIGNALS", "fork_log", "install", "release", "sessions_closed", "sessions_opened", "stop_all"]

HANDLED_SIGNALS = ("SIGTERM", "SIGHUP")
"""Signals whose default action ends the process: open sessions are written first."""

FORK_STEPS = ("engine", "drain", "sessions", "uninstall")
"""What the fork child hook does, in this order (see the module docstring)."""

fork_log: list[str] = []
"""The steps the last fork child hook ran in this process, in order (for tests and debugging)."""

_installed = False
_open = False  # a session is open: exec and os._exit stop the sessions first
_signals_installed = False
_open = False  # a session is open: exec and os._exit stop the sessions first
_previous_handlers: dict[int, Any] = {}
_patched: dict[str, tuple[Any, Any]] = {}  # os function name -> (original, handit's wrapper)
# the wrappers made so far, reused: a server with a session per request opens a period of
# sessions per request
_wrappers: dict[str, tuple[Any, Any]] = {}
_SIGNAL_WAIT_S = 0.2  # how long a signal handler waits for a drain another thread is running


def install() -> None:
    """Install handit's process hooks: once per process, in the documented order.

    Called by the first session start (not at import). Signal handlers can only be
    installed from the main thread; a first session elsewhere leaves them to a later
    session started on the main thread.
    """
    global _installed
    if not _installed:
        _installed = True
        atexit.register(_at_exit)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)
    if not _signals_installed:
        _install_signal_handlers()


def exit_handler_last() -> None:
    """Move the exit handler after every handler registered so far, so it runs first
    (``atexit`` runs handlers last-in, first-out): an exporter that registered its own
    handler then still gets the sessions' last events."""
    atexit.unregister(_at_exit)
    atexit.register(_at_exit)


def stop_all(reason: str) -> None:
    """Stop every open session (innermost first) with ``reason`` in its ``session_end``,
    then flush every file and exporter. Never raises.

    Args:
        reason: how the sessions ended, e.g. ``"exit"`` or ``"signal SIGTERM"``.
    """
    from . import sessions, sinks

    for session in reversed(sessions.active_sessions()):
        try:
            if session.end_reason is None:
                session.end_reason = reason
            sessions.stop(session)
        except Exception:
            pass
    try:
        sessions.release_idle()  # an engine kept for a next session (sessions.LINGER_S): none comes
    except Exception:
        pass
    sinks.flush_all()


def _at_exit() -> None:
    # Interpreter shutdown with sessions open: stop them so nothing buffered is lost.
    # No thread is started here (CPython 3.12.0-3.12.2 fail to start threads at exit).
    stop_all("exit")


# ---- fork --------------------------------------------------------------------------------------


def _engines_after_fork() -> None:
    for name in ("handit._tracer", "handit._fallback"):
        engine = sys.modules.get(name)
        if engine is not None:
            engine.after_fork_in_child()


def _drain_after_fork() -> None:
    from . import drain

    drain.after_fork_in_child()


def _sessions_after_fork() -> None:
    from . import sessions

    sessions.after_fork_in_child()


def _uninstall_after_fork() -> None:
    from . import sessions

    sessions.uninstall_after_fork()
    sessions_closed()
    release()


_FORK_STEP_FUNCTIONS: tuple[Callable[[], None], ...] = (
    _engines_after_fork, _drain_after_fork, _sessions_after_fork, _uninstall_after_fork)


def _after_fork_in_child() -> None:
    # Locks first: of the parent's threads only the forking one lives on here, and the
    # drain thread may have held an engine lock at fork(); every later step may take one.
    del fork_log[:]
    for name, step in zip(FORK_STEPS, _FORK_STEP_FUNCTIONS):
        try:
            step()
        except Exception:
            pass
        fork_log.append(name)


# ---- signals -----------------------------------------------------------------------------------


def _install_signal_handlers() -> None:
    global _signals_installed
    if threading.current_thread() is not threading.main_thread():
        return  # signal.signal works only there; a later session on the main thread installs them
    _signals_installed = True
    for name in HANDLED_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is None:  # Windows has no SIGHUP
            continue
        previous = signal.getsignal(signum)
        if previous is signal.SIG_IGN or previous is None:
            continue  # ignored on purpose, or set outside Python: left as it is
        _previous_handlers[signum] = previous
        signal.signal(signum, _on_signal)


def _busy_in_this_thread() -> bool:
    """Whether the signal interrupted handit itself in this thread (inside a start, stop or drain)."""
    from . import drain, sessions

    owned = getattr(sessions._lock, "_is_owned", None)
    if owned is not None and owned():
        return True
    lock = drain._drain_lock
    if lock.acquire(timeout=_SIGNAL_WAIT_S):  # held by the drain thread only for a few ms
        lock.release()
        return False
    return True


def _signal_again(signum: int) -> None:
    from . import drain, sessions

    with sessions._lock, drain._drain_lock:
        pass
    os.kill(os.getpid(), signum)


def _on_signal(signum: int, frame: Any) -> None:
    """SIGTERM/SIGHUP: write the sessions, then what the signal would have done without handit.

    With the program's own handler (installed before handit's), pending records are
    written and the handler is called; sessions stay open (a handler may not end the
    process) and the exit path stops them if it does. With the default action, every
    session is stopped with ``"reason": "signal SIGTERM"``, then the default action runs
    (the exit status is the signal's, e.g. -15).
    """
    previous = _previous_handlers.get(signum, signal.SIG_DFL)
    if _busy_in_this_thread():
        # interrupted inside handit's own start/stop/drain: it must finish first, so a
        # helper thread waits for handit's locks and sends the signal again
        from ._internal import start_internal_thread

        start_internal_thread(_signal_again, "signal", signum)
        return
    if callable(previous):
        _flush_open_sessions()
        previous(signum, frame)
        return
    stop_all(f"signal {signal.Signals(signum).name}")
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _flush_open_sessions() -> None:
    from . import sessions, sinks

    drain = sessions._state.get("drain")
    try:
        if drain is not None:
            drain.run_once()
    except Exception:
        pass
    sinks.flush_all(final=False)  # the program's handler may let it go on: exporters keep running


# ---- exec and _exit, while a session is open -------------------------------------------------------


def _leaving(name: str, reason: str) -> Callable[..., Any]:
    original = getattr(os, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _open:
            stop_all(reason)
        return original(*args, **kwargs)

    wrapper.__name__ = wrapper.__qualname__ = name
    wrapper.__doc__ = original.__doc__
    wrapper.__wrapped__ = original  # type: ignore[attr-defined]
    return wrapper


def sessions_opened(session: Any) -> None:
    """The first session of a period with sessions opened: exec and ``_exit`` stop the open
    sessions first, and :mod:`handit.propagation` carries sessions into child processes.

    The wrappers are put in place once per engine installation and stay while it lasts
    (a server with a session per request opens a period per request: wrapping and
    restoring ``os.*`` each time cost ~34,000 instructions); :func:`release` removes them.

    Args:
        session: the session being started.
    """
    global _open
    _open = True
    if not _patched:
        for name, reason in (("execv", "exec"), ("execve", "exec"), ("_exit", "os._exit")):
            if hasattr(os, name):
                original = getattr(os, name)
                made = _wrappers.get(name)
                if made is None or made[0] is not original:  # one wrapper per original
                    made = _wrappers[name] = (original, _leaving(name, reason))
                _patched[name] = made
                setattr(os, name, made[1])
    propagation.sessions_opened(session)


def sessions_closed() -> None:
    """The last open session stopped: exec and ``_exit`` have nothing to write (their
    wrappers stay until :func:`release`); children started now are not traced."""
    global _open
    _open = False
    propagation.sessions_closed()


def release() -> None:
    """handit's engine is released: undo the wrapping of :func:`sessions_opened` (a wrapper
    someone else has since replaced is left to them)."""
    for name, (original, wrapper) in list(_patched.items()):
        if getattr(os, name) is wrapper:
            setattr(os, name, original)
        del _patched[name]
    propagation.release()
