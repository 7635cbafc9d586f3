"""handit's own threads and code: marked so the capture engine never records them; work deferred
from finalizers to a safe point."""
from __future__ import annotations

import gc
import threading
from collections import deque
from typing import Any, Callable

_hooks: list[Callable[[], None]] = []
_deferred: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()  # see defer()
_marked = threading.local()


def mark_internal_thread() -> None:
    """Mark the calling thread as handit's own: nothing it runs is traced.

    Call this first thing in the target of every thread handit starts.
    """
    _marked.internal = True
    for hook in _hooks:
        hook()


def is_internal_thread() -> bool:
    """Whether the calling thread is handit's own (whichever engine was loaded when it was marked)."""
    return getattr(_marked, "internal", False)


def start_internal_thread(target: Callable[..., Any], name: str, *args: Any) -> threading.Thread:
    """Start a daemon thread that is never traced.

    Args:
        target: the thread's function.
        name: thread name, prefixed with ``handit-``.
    Returns:
        the started thread.
    """

    def run() -> None:
        mark_internal_thread()
        target(*args)

    thread = threading.Thread(target=run, name=f"handit-{name}", daemon=True)
    thread.start()
    return thread


_collecting = False  # a garbage collection is running (set by _on_collection, see watch_collections)


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    global _collecting
    _collecting = phase == "start"


_watching = False


def watch_collections() -> None:
    """Follow garbage collections from now on (once per process). Called where events made
    outside the engine are first added (:meth:`handit.sessions.Session.add_events`: an HTTP
    exchange's request comes before the finalizer that may finish it), not at the first
    session: the callback is a Python frame run by every collection, and on the pure engine
    one run at the program's recursion limit failed (reported as unraisable) and took a
    frame from the program (test_recursion_limit_then_more_calls, 3.12)."""
    global _watching
    if not _watching:
        _watching = True
        if _on_collection not in gc.callbacks:
            gc.callbacks.append(_on_collection)


def collecting() -> bool:
    """Whether a garbage collection is running: finalizers run inside it, on whichever thread
    allocated, possibly while that thread holds one of handit's locks (a trace file writer's,
    mid-frame), so work they ask of handit must be deferred (:func:`defer`)."""
    return _collecting


def defer(fn: Callable[..., Any], *args: Any) -> None:
    """Queue ``fn(*args)`` for the next safe point: after the drain thread's next drain, or when a
    session stops (:func:`run_deferred`). Takes no lock: safe inside the garbage collector."""
    _deferred.append((fn, args))


def run_deferred() -> None:
    """Run what was deferred (call with none of handit's locks held)."""
    while True:
        try:
            fn, args = _deferred.popleft()
        except IndexError:
            return
        try:
            fn(*args)
        except Exception:  # handit's own bookkeeping never reaches the program
            pass
