"""Policy stage: Config -> plain per-code decisions the engines look up (filters, sampling, arguments)."""
from __future__ import annotations

import os
import re
import sys
from typing import Any, NamedTuple

import xxhash

from ._qualnames import qualname_of
from .records import SUSPENDABLE

_HANDIT_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
CO_VARARGS = 0x04
CO_VARKEYWORDS = 0x08
# capture levels
TIMING, ARGS, FULL = 0, 1, 2
CAPTURE_LEVELS = {"timing": TIMING, "args": ARGS, "full": FULL}


class CodeInfo(NamedTuple):
    """What an engine needs to know about one traced code object, decided once."""

    index: int
    module: str
    qualname: str
    file: str
    line: int
    suspendable: bool
    argnames: tuple[str, ...]
    secret_args: tuple[bool, ...]


CO_NEWLOCALS = 0x02


def is_class_body(code: Any) -> bool:
    """A class statement's body: run once when the class is made, not a call of anything."""
    return not code.co_flags & CO_NEWLOCALS and code.co_name != "<module>"


class Policy:
    """Filter and capture rules compiled from a Config, looked up per code object.

    Args:
        config: a validated :class:`handit.config.Config`.
        generation: bumped whenever the rules change, so engines re-decide.
    """

    def __init__(self, config: Any, generation: int = 0) -> None:
        self.config = config
        self.generation = generation
        self.include = re.compile(config.include) if config.include else None
        self.exclude = re.compile(config.exclude) if config.exclude else None
        self.exclude_files = re.compile(config.exclude_files) if config.exclude_files else None
        self.cwd = os.path.abspath(os.getcwd()) + os.sep if config.capture_only_cwd else None
        self.sample_rate = float(config.sample_rate)
        self.capture = CAPTURE_LEVELS[config.capture]
        self.max_locals = int(config.max_locals)
        from .redact import Redactor

        from .preview import Previewer

        self.redactor = Redactor(config.redact, config.redact_replace, config.safe_keys)
        self.previewer = Previewer(
            max_str=config.max_str,
            max_items=config.max_items,
            max_depth=config.max_depth,
            mode=config.preview,
            redactor=self.redactor,
        )
        self._sample_cut = int(self.sample_rate * 2**64)
        # what decide() depends on: a new policy with the same key gives every code the same answer
        self.decision_key = (
            config.include, config.exclude, config.exclude_files, self.cwd, self.sample_rate,
            self.capture, self.max_locals, config.redact, config.safe_keys,
        )

    def wants(self, module: str, qualname: str, filename: str) -> bool:
        """Return True if calls of this function are to be recorded."""
        if filename.startswith(_HANDIT_DIR) or module == "handit" or module.startswith("handit."):
            return False  # handit never traces itself
        path = f"{module}::{qualname}"
        if self.exclude is not None and self.exclude.search(path):
            return False
        if self.include is not None and not self.include.search(path):
            return False
        if self.exclude_files is not None and self.exclude_files.search(filename):
            return False
        if self.cwd is not None and not os.path.abspath(filename).startswith(self.cwd):
            return False
        if self.sample_rate < 1.0:
            return xxhash.xxh64_intdigest(path.encode("utf-8", "surrogatepass")) < self._sample_cut
        return True

    def decide(self, code: Any, module: str | None, index: int) -> CodeInfo | None:
        """Decide once for a code object.

        Args:
            code: the code object.
            module: ``__name__`` of the frame's globals (None if unknown).
            index: the index the engine will store this code under.
        Returns:
            a CodeInfo if the code is traced, else None.
        """
        module = module if isinstance(module, str) else "?"
        if is_class_body(code) or (code.co_name == "<module>" and module != "__main__"):
            return None  # class bodies are not calls; of module bodies only the script's own
        qualname = qualname_of(code, module)
        filename = code.co_filename
        if not self.wants(module, qualname, filename):
            return None
        argnames: tuple[str, ...] = ()
        if self.capture >= ARGS:
            n = code.co_argcount + code.co_kwonlyargcount
            n += bool(code.co_flags & CO_VARARGS) + bool(code.co_flags & CO_VARKEYWORDS)
            argnames = tuple(code.co_varnames[: min(n, self.max_locals)])
        secret = tuple(self.redactor.is_secret_name(a) for a in argnames)
        return CodeInfo(
            index,
            module,
            qualname,
            filename,
            code.co_firstlineno,
            bool(code.co_flags & SUSPENDABLE),
            argnames,
            secret,
        )


def module_of(frame: Any) -> str | None:
    """The module name of a frame, from its globals (never raises)."""
    try:
        name = frame.f_globals.get("__name__")
    except Exception:
        return None
    return name if isinstance(name, str) else None


PY312 = sys.version_info >= (3, 12)

_RETURN_OPS = {op for name, op in __import__("dis").opmap.items() if name in ("RETURN_VALUE", "RETURN_CONST")}
_YIELD_OPS = {op for name, op in __import__("dis").opmap.items() if name in ("YIELD_VALUE", "YIELD_FROM")}
_YIELD_FROM = __import__("dis").opmap.get("YIELD_FROM", -1)
_RESUME = __import__("dis").opmap.get("RESUME", -1)
PY313 = sys.version_info >= (3, 13)
EXIT_OTHER, EXIT_RETURN, EXIT_YIELD = 0, 1, 2


def exit_kinds(code: Any) -> bytes:
    """Per 2-byte code unit of ``code.co_code``: how a frame leaving there left.

    The profile-function source reports returns, yields and exceptions all as
    "return"; the instruction the frame stopped at tells them apart:
    RETURN_VALUE/RETURN_CONST is a return, YIELD_VALUE/YIELD_FROM a yield,
    anything else an exception unwinding.
    """
    raw = code.co_code
    out = bytearray(len(raw) // 2)
    for i in range(0, len(raw), 2):
        op = raw[i]
        if op in _RETURN_OPS:
            out[i // 2] = EXIT_RETURN
        elif op in _YIELD_OPS:
            out[i // 2] = EXIT_YIELD
            if op == _YIELD_FROM and i >= 2:
                # PY310: YIELD_FROM steps f_lasti back one unit (onto its LOAD_CONST None)
                # to run again on resume, so the frame is seen suspended there.
                out[i // 2 - 1] = EXIT_YIELD
            elif PY313 and i + 2 < len(raw) and raw[i + 2] == _RESUME:
                # PY313: a yielding frame is seen at the RESUME after its YIELD_VALUE.
                out[i // 2 + 1] = EXIT_YIELD
    return bytes(out)


def first_yield_unit(kinds: bytes) -> int:
    """Code unit of the first yield; a profile "call" at or past it is a resume."""
    pos = kinds.find(EXIT_YIELD)
    return pos if pos >= 0 else len(kinds) + 1
