"""Instrumentation stage, late imports: a client library imported after the first session -> patched as it loads.

A finder first on ``sys.meta_path`` answers only for the watched names (a set lookup for
every other import). It lets the usual finders find the module, and wraps the loader so
the library is patched right after its code has run, before the importer sees it. The
module's ``__loader__`` and ``__spec__.loader`` are the original loader again before its
code runs (as wrapt's post-import hooks do), so nothing in the library sees the wrapper.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
import warnings
from types import ModuleType
from typing import Any, Callable, Sequence

_busy = threading.local()  # names this thread is looking up through the other finders now


class _PatchAfterLoad(importlib.abc.Loader):
    """The original loader, then ``on_loaded(name)``."""

    def __init__(self, loader: Any, name: str, on_loaded: Callable[[str], None]) -> None:
        self.loader = loader
        self.name = name
        self.on_loaded = on_loaded

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self.loader
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = self.loader
        self.loader.exec_module(module)
        try:
            parent, _, child = self.name.rpartition(".")
            if parent:  # as the import system does next: the patch reaches it by that name
                setattr(sys.modules[parent], child, module)
            self.on_loaded(self.name)
        except Exception as exc:  # the program's import goes on unpatched
            warnings.warn(f"handit could not instrument {self.name} as it was imported: {exc!r} "
                          "(HANDIT_INSTRUMENT_HTTP=0 turns this off)", RuntimeWarning, stacklevel=2)


class ImportHook(importlib.abc.MetaPathFinder):
    """Calls ``on_loaded(name)`` once a watched module has been imported.

    Args:
        names: the module names to watch (e.g. ``requests``, ``urllib.request``).
        on_loaded: called with the name right after the module's code ran; its exceptions
            are turned into a warning.
    """

    def __init__(self, names: Sequence[str], on_loaded: Callable[[str], None]) -> None:
        self.names = frozenset(names)
        self.on_loaded = on_loaded

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names:
            return None
        busy = _busy.__dict__.setdefault("names", set())
        if fullname in busy:
            return None
        busy.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)  # the finders after this one
        except (ImportError, ValueError):
            return None
        finally:
            busy.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _PatchAfterLoad(spec.loader, fullname, self.on_loaded)
        return spec

    def install(self) -> None:
        """Put the hook first on ``sys.meta_path`` (once)."""
        if self not in sys.meta_path:
            sys.meta_path.insert(0, self)

    def remove(self) -> None:
        """Take the hook off ``sys.meta_path``."""
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass
