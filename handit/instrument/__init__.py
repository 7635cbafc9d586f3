"""Instrumentation stage: HTTP clients' calls made inside sessions -> ``http_request`` / ``http_response`` events.

One module per client (``requests_client``, ``httpx_client``, ``urllib3_client``,
``aiohttp_client``, ``urllib_client``); each patches its library only when it is installed.
"""
from __future__ import annotations

import importlib
import sys
import threading
import types

from ..config import Config
from ._base import BaseInstrumentor
from ._hook import ImportHook

__all__ = ["BaseInstrumentor", "instrument", "instrumentors", "on_first_session", "uninstrument"]

_MODULES = ("requests_client", "httpx_client", "urllib3_client", "aiohttp_client", "urllib_client")
_LIBRARIES = ("requests", "httpx", "urllib3", "aiohttp", "urllib.request")  # each module's library, in order
_instances: dict[str, BaseInstrumentor] = {}
_lock = threading.Lock()
_auto_done = False
_hook: ImportHook | None = None  # patches the clients imported after the first session


def instrumentors() -> dict[str, BaseInstrumentor]:
    """Every client instrumentor, by library name (created on first use)."""
    with _lock:
        if not _instances:
            for name in _MODULES:
                module = importlib.import_module(f"{__name__}.{name}")
                inst = module.Instrumentor()
                _instances[inst.library] = inst
        return dict(_instances)


def instrument(*libraries: str) -> list[str]:
    """Record HTTP calls made inside sessions by the installed clients (idempotent).

    Args:
        libraries: library names to patch (``requests``, ``httpx``, ``urllib3``, ``aiohttp``,
            ``urllib.request``); all installed ones if none is given.
    Returns:
        the libraries patched by this call.
    Raises:
        ValueError: a name is not one of the supported libraries.
    """
    found = instrumentors()
    unknown = [name for name in libraries if name not in found]
    if unknown:
        raise ValueError(f"cannot instrument {unknown}: supported libraries are {sorted(found)}")
    return [name for name, inst in found.items() if (not libraries or name in libraries) and inst.instrument()]


def uninstrument(*libraries: str) -> list[str]:
    """Undo :func:`instrument` (idempotent).

    Args:
        libraries: library names to unpatch; all if none is given.
    Returns:
        the libraries unpatched by this call.
    """
    if not libraries and _hook is not None:
        _hook.remove()  # a client imported later stays unpatched too
    return [name for name, inst in instrumentors().items() if (not libraries or name in libraries) and inst.uninstrument()]


def on_first_session(config: Config) -> None:
    """Patch the clients the program has imported, and those it imports later as they load,
    once per process, when a session first installs the engine (HANDIT_INSTRUMENT_HTTP;
    called by :mod:`handit.sessions`).

    Clients not imported yet are not imported here: importing every installed client would
    cost the program up to a few hundred ms at its first session (aiohttp alone is ~0.2 s).
    An import hook patches each as the program imports it (:mod:`handit.instrument._hook`).
    """
    global _auto_done, _hook
    if _auto_done or not config.instrument_http:
        return
    _auto_done = True
    loaded = [name for name in _LIBRARIES if name in sys.modules]
    if loaded:
        instrument(*loaded)
    later = [name for name in _LIBRARIES if name not in sys.modules]
    if later:
        _hook = ImportHook(later, _imported)
        _hook.install()


def _imported(library: str) -> None:
    """The import hook: ``library`` has just been imported by the program."""
    instrument(library)


class _CallableModule(types.ModuleType):
    """``handit.instrument`` is both this package and the function :func:`instrument`: once the
    package is imported, Python binds the name ``handit.instrument`` to it, so calling the
    package calls the function."""

    def __call__(self, *libraries: str) -> list[str]:
        return instrument(*libraries)


sys.modules[__name__].__class__ = _CallableModule
