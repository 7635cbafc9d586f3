"""Instrumentation stage, the base: patch one client library in and out, idempotently
(in the manner of OpenTelemetry's ``BaseInstrumentor``)."""
from __future__ import annotations

import importlib.util
from typing import Any


class BaseInstrumentor:
    """Patches one HTTP client library so its calls inside a session are recorded.

    Subclasses set :attr:`library` (the import name that must be installed) and implement
    :meth:`_patch`, returning ``(owner, attribute, original, replacement)`` tuples;
    :meth:`uninstrument` puts back every original still replaced by ours.
    """

    library = ""

    def __init__(self) -> None:
        self._patches: list[tuple[Any, str, Any, Any]] = []

    @property
    def installed(self) -> bool:
        """Whether the library can be imported."""
        try:
            return importlib.util.find_spec(self.library) is not None
        except (ImportError, ValueError):
            return False

    @property
    def instrumented(self) -> bool:
        """Whether the patches are in place."""
        return bool(self._patches)

    def instrument(self) -> bool:
        """Patch the library (does nothing if it is patched already or not installed).

        Returns:
            True if patches were applied by this call.
        """
        if self._patches or not self.installed:
            return False
        patches = self._patch()
        for owner, name, _original, replacement in patches:
            setattr(owner, name, replacement)
        self._patches = patches
        return True

    def uninstrument(self) -> bool:
        """Remove the patches (those another tool replaced since stay as they are).

        Returns:
            True if patches were removed by this call.
        """
        if not self._patches:
            return False
        for owner, name, original, replacement in reversed(self._patches):
            if owner.__dict__.get(name) is replacement:
                setattr(owner, name, original)
        self._patches = []
        return True

    def _patch(self) -> list[tuple[Any, str, Any, Any]]:
        raise NotImplementedError
