"""Public entry points: the session context manager, the decorator, start/stop and suppression."""
from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Any, Callable, Iterator, TypeVar, overload

from . import sessions as _session
from .sessions import Session

F = TypeVar("F", bound=Callable[..., Any])


def session(tag: str | None = None, *, attrs: dict[str, str] | None = None, traceparent: str | None = None) -> Session:
    """Record a block of work as one session: ``with handit.session("tag") as s:``.

    Args:
        tag: a name for the session.
        attrs: string attributes stored with the session.
        traceparent: a W3C traceparent to join a distributed trace.
    Returns:
        the running session; it stops when the ``with`` block ends.
    """
    return _session.start(tag, attrs=attrs, traceparent=traceparent)


def start(tag: str | None = None, *, attrs: dict[str, str] | None = None, traceparent: str | None = None) -> Session:
    """Start a session in the current thread or task; end it with :func:`stop`.

    Args:
        tag: a name for the session.
        attrs: string attributes stored with the session.
        traceparent: a W3C traceparent to join a distributed trace.
    Returns:
        the running session.
    """
    return _session.start(tag, attrs=attrs, traceparent=traceparent)


def stop(s: Session | None = None) -> Session | None:
    """Stop a session (default: the current one) and write what it recorded.

    Args:
        s: the session returned by :func:`start`.
    Returns:
        the stopped session, or None if none was active.
    """
    return _session.stop(s)


def start_tracing(agent: str | None = None, attrs: dict[str, str] | None = None) -> Session:
    """The original's name for :func:`start`."""
    return _session.start(agent, attrs=attrs)


def end_tracing() -> Session | None:
    """The original's name for :func:`stop` of the current session."""
    return _session.stop(None)


@overload
def trace(tag: F) -> F: ...
@overload
def trace(tag: str | None = None, *, attrs: dict[str, str] | None = None) -> Callable[[F], F]: ...


def trace(tag: Any = None, *, attrs: dict[str, str] | None = None) -> Any:
    """Decorate a sync or async function so each call runs in its own session.

    The wrapper keeps the wrapped function's signature and annotations
    (``functools.wraps``), which frameworks such as FastAPI rely on.

    Args:
        tag: the session tag (default: the function's qualified name).
        attrs: string attributes stored with every session.
    Returns:
        the decorator (or the decorated function when used bare).
    """
    if callable(tag):
        return trace(None)(tag)

    def decorate(fn: F) -> F:
        name = tag or getattr(fn, "__qualname__", "function")
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with _session.start(name, attrs=attrs):
                    return await fn(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _session.start(name, attrs=attrs):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def tracing(agent: str | None = None, attrs: dict[str, str] | None = None) -> Callable[[F], F]:
    """The original's decorator spelling: ``@tracing(agent="name")``."""
    return trace(agent, attrs=attrs)  # type: ignore[no-any-return]


def entrypoint(tag: str | None = None, attrs: dict[str, str] | None = None) -> Callable[[F], F]:
    """The original's decorator spelling: ``@entrypoint("name")``."""
    return trace(tag, attrs=attrs)  # type: ignore[no-any-return]


@contextlib.contextmanager
def suppressed() -> Iterator[None]:
    """Record nothing in the current thread or task inside this block."""
    choice = _session._state["choice"]
    if choice is None:
        yield
        return
    token = choice.module.set_slot(0)
    try:
        yield
    finally:
        choice.module.reset_slot(token)
