"""handit's own threads and code: marked so the capture engine never records them."""
from __future__ import annotations

import threading
from typing import Any, Callable

_hooks: list[Callable[[], None]] = []


def mark_internal_thread() -> None:
    """Mark the calling thread as handit's own: nothing it runs is traced.

    Call this first thing in the target of every thread handit starts.
    """
    for hook in _hooks:
        hook()


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
