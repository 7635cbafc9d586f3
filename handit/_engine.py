"""Engine choice: the one place that picks compiled or fallback, sysmon or setprofile, and says why."""
from __future__ import annotations

import os
import sys
import warnings
from types import ModuleType
from typing import Any, NamedTuple

from .errors import ConfigError, HanditError

PY312 = sys.version_info >= (3, 12)


class EngineChoice(NamedTuple):
    """The engine module in use, its name, the event source and the reason."""

    module: ModuleType
    engine: str
    source: str
    reason: str


_warned_fallback = False
_compiled: tuple[ModuleType | None, str] | None = None  # the import's outcome, tried once


class IncompatiblePython(ImportError):
    """The compiled extension refuses to initialise: it was not written for this interpreter
    (another CPython version, or a free-threaded build), so the pure-Python engine runs."""


def free_tool_id() -> int:
    """A sys.monitoring tool id no tool holds (PY312+); ids with no standard owner first.

    Raises:
        HanditError: every id is taken; the message names the holders.
    """
    mon = sys.monitoring
    holders = {}
    for tool in (4, 3, 5, 2, 1, 0):
        name = mon.get_tool(tool)
        if name is None:
            return tool
        holders[tool] = name
    raise HanditError(f"no free sys.monitoring tool id; held by {holders}")


SYSMON_EVENTS = ("PY_START", "PY_RETURN", "PY_YIELD", "PY_RESUME", "PY_THROW", "PY_UNWIND")
"""The sys.monitoring events handit takes; an engine's callback for each is ``sysmon_<event in lower case>``."""


def claim_sysmon(engine: ModuleType) -> int:
    """Take a free tool id, register ``engine``'s callbacks, turn the global events on (PY312+).

    PY_START, PY_UNWIND and PY_THROW are global; PY_RETURN, PY_YIELD and PY_RESUME are
    turned on per traced code object by the engine. Returns the tool id.
    """
    mon = sys.monitoring
    tool = free_tool_id()
    mon.use_tool_id(tool, "handit")
    for name in SYSMON_EVENTS:
        mon.register_callback(tool, getattr(mon.events, name), getattr(engine, f"sysmon_{name.lower()}"))
    ev = mon.events
    mon.set_events(tool, ev.PY_START | ev.PY_UNWIND | ev.PY_THROW)
    return tool


def release_sysmon(tool: int, local_codes: list[Any]) -> None:
    """Undo :func:`claim_sysmon`: no event, local event (on ``local_codes``, emptied), callback
    or DISABLE mark is left behind, and the tool id is free again."""
    mon = sys.monitoring
    mon.set_events(tool, 0)
    for code in local_codes:
        try:
            mon.set_local_events(tool, code, 0)
        except ValueError:
            pass
    local_codes.clear()
    for name in SYSMON_EVENTS:
        mon.register_callback(tool, getattr(mon.events, name), None)
    # DISABLE marks stay on code objects for this tool id after it is freed
    # (python/cpython#111963); clear them so the next session sees all code.
    mon.restart_events()
    mon.free_tool_id(tool)


def _import_compiled() -> tuple[ModuleType | None, str]:
    global _compiled
    if _compiled is None:
        try:
            from . import _tracer
        except IncompatiblePython as exc:
            _compiled = None, str(exc)
        except ImportError as exc:
            _compiled = None, f"the compiled extension is not built ({exc})"
        else:
            _compiled = _tracer, "the compiled extension is built"
    return _compiled


def choose(engine: str = "auto", source: str = "auto", require_compiled: bool = False) -> EngineChoice:
    """Pick the engine and the event source.

    Args:
        engine: "auto", "compiled" or "fallback" (HANDIT_ENGINE).
        source: "auto", "sysmon" or "setprofile" (HANDIT_SOURCE).
        require_compiled: a missing extension is an error (HANDIT_REQUIRE_COMPILED).
    Returns:
        the choice, with the reason in words.
    Raises:
        ConfigError: an unknown name, or sysmon before Python 3.12.
        HanditError: the compiled engine is required but not built.
    """
    global _warned_fallback
    require_compiled = require_compiled or os.environ.get("HANDIT_REQUIRE_COMPILED", "") in ("1", "true", "yes", "on")
    if source == "auto":
        source = "sysmon" if PY312 else "setprofile"
        source_reason = "sys.monitoring on Python 3.12+" if PY312 else "profile function before Python 3.12"
    elif source == "sysmon" and not PY312:
        raise ConfigError("HANDIT_SOURCE", source, "needs Python 3.12 or newer (sys.monitoring)")
    elif source in ("sysmon", "setprofile"):
        source_reason = "HANDIT_SOURCE=" + source
    else:
        raise ConfigError("HANDIT_SOURCE", source, "is not one of auto, sysmon, setprofile")
    if engine == "fallback":
        if require_compiled and _import_compiled()[0] is None:
            # the pure twin was asked for, but the build must still be complete
            raise HanditError(f"the compiled engine is required but {_import_compiled()[1]}")
        from . import _fallback

        return EngineChoice(_fallback, "fallback", source, f"HANDIT_ENGINE=fallback; {source_reason}")
    if engine not in ("auto", "compiled"):
        raise ConfigError("HANDIT_ENGINE", engine, "is not one of auto, compiled, fallback")
    module, why = _import_compiled()
    if module is not None:
        return EngineChoice(module, "compiled", source, f"{why}; {source_reason}")
    if engine == "compiled" or require_compiled:
        raise HanditError(f"the compiled engine is required but {why}")
    if not _warned_fallback:
        _warned_fallback = True
        warnings.warn(f"handit uses the pure-Python engine: {why}", RuntimeWarning, stacklevel=3)
    from . import _fallback

    return EngineChoice(_fallback, "fallback", source, f"{why}, so the pure-Python engine; {source_reason}")
