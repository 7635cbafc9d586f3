"""Command line: argv -> Config -> Session for ``handit run``, and trace files -> views for ``show`` and ``export``.

``handit run script.py`` works like ``python -m cProfile``: the program keeps
its argv, stdin, stdout and exit code; the summary goes to stderr.
"""
from __future__ import annotations

import argparse
import builtins
import importlib.machinery
import io
import json
import os
import re
import runpy
import shutil
import sys
import time
import types
import warnings
import zipfile
from typing import IO, Any, Iterator

from . import __version__, api, config
from .errors import ConfigError, HanditConfigWarning, HanditError
from .frames import TraceFileWarning, TraceFormatError, read_version
from .sessions import Session, engine_info
from .renderers import Lines, Table, emit, fmt_bytes, progress_reporter
from .tracefile import detect_format, iter_events, open_append

__all__ = ["main"]

USAGE_ERROR = 2  # what argparse and python itself return for a bad command line or a missing file
DAMAGED = 1  # show/export read a damaged or cut trace: what was intact is shown, the status says it was not all


class CliError(HanditError):
    """A user mistake: reported as one line on stderr, exit status 2."""


def _err(message: str) -> None:
    print(f"handit: error: {message}", file=sys.stderr)


# ---- handit run --------------------------------------------------------------------------------


def _default_output(fmt: str) -> str:
    """``handit-<date>-<time>-<milliseconds>-<pid>.handit``: a name of its own for every run, sorting by time."""
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"handit-{stamp}-{int(now * 1000) % 1000:03d}-{os.getpid()}" + (".jsonl" if fmt == "jsonl" else ".handit")


def _newest_trace() -> str:
    """The newest trace file in the working directory (``*.handit``, ``handit-*.jsonl``), said on stderr.

    Raises:
        CliError: there is none.
    """
    found = []
    with os.scandir(".") as entries:
        for entry in entries:
            name = entry.name
            if name.endswith(".handit") or (name.startswith("handit-") and name.endswith(".jsonl")):
                try:
                    if entry.is_file():
                        found.append((entry.stat().st_mtime_ns, name))
                except OSError:
                    continue
    if not found:
        raise CliError("no trace file here (*.handit, handit-*.jsonl); name one: handit show FILE")
    name = max(found)[1]
    print(f"handit: reading {name}, the newest trace here", file=sys.stderr)
    return name


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """Map ``handit run`` options onto Config fields; unset options leave the HANDIT_* values in place."""
    current = config.get_config()
    out: dict[str, Any] = {}
    output = args.output or current.output_file
    if output is None:
        output = _default_output(current.output_format)
    # absolute: the program may chdir, and the summary reads the file back afterwards
    out["output_file"] = os.path.abspath(os.fspath(output))
    if args.output:
        out["output_format"] = "jsonl" if out["output_file"].endswith(".jsonl") else (
            "handit" if current.output_format == "auto" else current.output_format)
    for flag, patterns in (("--include", args.include), ("--exclude", args.exclude)):
        for pattern in patterns or ():  # checked as typed: the joined pattern wraps each one
            try:
                re.compile(pattern)
            except re.error as exc:
                raise CliError(f"{flag} {pattern!r} is not a valid regular expression ({exc})") from None
    if args.include:
        out["include"] = "|".join(f"(?:{p})" for p in args.include)
    if args.exclude:  # added to the exclusions in force, so handit and the stdlib stay out
        out["exclude"] = "|".join(f"(?:{p})" for p in ([current.exclude] if current.exclude else []) + args.exclude)
    for name in ("capture", "preview", "max_str", "sample_rate", "engine", "source"):
        value = getattr(args, name)
        if value is not None:
            out[name] = value
    if args.only_cwd:
        out["capture_only_cwd"] = True
    if args.no_children:
        out["children"] = False
    return out


# the `handit run` options that set a setting, by the setting's HANDIT_* name
_OPTION_OF = {f"HANDIT_{name.upper()}": "--" + name.replace("_", "-")
              for name in ("capture", "preview", "max_str", "sample_rate", "engine", "source", "include", "exclude")}


def _option_error(exc: ConfigError) -> str:
    """A bad option value, said with the option as typed (``--sample-rate 2 is not …``)."""
    option = _OPTION_OF.get(exc.setting)
    if option is None or not exc.reason:
        return str(exc)
    value = exc.value
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{option} {shown} {exc.reason}"


def _check_output(path: str, fmt: str) -> None:
    """Fail before the program runs if the trace cannot be written or would mix formats."""
    try:
        fd = open_append(path)
    except OSError as exc:
        raise CliError(f"cannot write the trace to {path}: {exc.strerror or exc}") from None
    try:
        if os.fstat(fd).st_size and detect_format(path) != fmt:
            raise CliError(f"{path} already holds a {detect_format(path)} trace; "
                           f"choose another -o than appending {fmt} to it")
    finally:
        os.close(fd)


def _exit_code(exc: SystemExit) -> int:
    """The status ``sys.exit(code)`` gives: None -> 0, an int as is, anything else printed and 1."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _user_frames(exc: BaseException) -> types.TracebackType | None:
    """The exception's traceback from the program's first frame on (handit's and runpy's left out)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_globals.get("__name__") in (__name__, "runpy"):
        tb = tb.tb_next
    return tb


def _print_uncaught(exc: BaseException) -> None:
    """Print an uncaught exception as Python would, without handit's and runpy's frames."""
    tb = _user_frames(exc)
    # the default hook prints exc.__traceback__ when it is set, whatever tb it is given
    sys.excepthook(type(exc), exc.with_traceback(tb), tb)


def _run_script(path: str) -> None:
    """Run a script file as ``python path`` does: ``__main__``, ``__file__`` absolute, ``sys.argv[0]`` as given.

    ``runpy.run_path`` would name the code and ``sys.argv[0]`` both after the path
    it is given; python keeps argv[0] as typed and makes ``__file__`` absolute
    (3.9+), which is what tracebacks show. Directories and zip files, which have
    a ``__main__.py`` inside, go through runpy.
    """
    if os.path.isdir(path) or zipfile.is_zipfile(path) or path.endswith((".pyc", ".pyo")):
        runpy.run_path(path, run_name="__main__")
        return
    filename = os.path.abspath(path)
    with io.open_code(filename) as f:
        code = compile(f.read(), filename, "exec", dont_inherit=True)
    main = types.ModuleType("__main__")
    main.__dict__.update(__file__=filename, __cached__=None, __builtins__=builtins,
                         __loader__=importlib.machinery.SourceFileLoader("__main__", filename))
    saved = sys.modules.get("__main__")
    sys.modules["__main__"] = main
    try:
        exec(code, main.__dict__)
    finally:
        if saved is not None:
            sys.modules["__main__"] = saved


def _cmd_run(args: argparse.Namespace) -> int:
    target = list(args.target)
    if target[:1] == ["--"]:
        target = target[1:]
    if not target:
        raise CliError("handit run needs a script (handit run script.py [args]) or a module (handit run -m module [args])")
    name, prog_args = target[0], target[1:]
    if not args.module:
        if not os.path.exists(name):
            raise CliError(f"can't open file {os.path.abspath(name)!r}: no such file")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", HanditConfigWarning)
        try:
            settings = _settings(args)
            cfg = config.get_config().replace(**settings)
        except ConfigError as exc:
            raise CliError(_option_error(exc)) from None
        except HanditError as exc:
            raise CliError(str(exc)) from None
    for w in caught:  # a bad HANDIT_* variable: one line, naming it (the default is used)
        if issubclass(w.category, HanditConfigWarning):
            print(f"handit: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    output = settings["output_file"]
    display = os.path.relpath(output) if args.output is None or not os.path.isabs(args.output) else output
    _check_output(output, cfg.resolved_output_format)
    config.configure(**settings)

    saved_argv, saved_path0 = sys.argv[:], sys.path[0] if sys.path else None
    sys.argv[:] = [name, *prog_args]
    path0 = os.getcwd() if args.module else os.path.dirname(os.path.realpath(name))
    if sys.path:
        sys.path[0] = path0
    else:
        sys.path.append(path0)
    tag = args.tag or (name if args.module else os.path.basename(name))
    try:
        sess = api.start(tag)
    except HanditError as exc:
        sys.argv[:] = saved_argv
        raise CliError(f"cannot start tracing: {exc}") from None
    code = 0
    try:
        if args.module:
            runpy.run_module(name, run_name="__main__", alter_sys=True)
        else:
            _run_script(name)
    except SystemExit as exc:
        code = _exit_code(exc)
    except KeyboardInterrupt as exc:
        _print_uncaught(exc)
        code = 130
    except BaseException as exc:  # the program's own error: reported as python reports it
        if args.module and isinstance(exc, ImportError) and _user_frames(exc) is None:
            _err(str(exc))  # runpy found no such module: nothing of the program ran
            code, args.no_summary = USAGE_ERROR, True
        else:
            _print_uncaught(exc)
            code = 1
    finally:
        try:
            _join_threads()
        finally:
            api.stop(sess)
            sys.argv[:] = saved_argv
            if saved_path0 is not None and sys.path:
                sys.path[0] = saved_path0
    if not args.no_summary:
        try:
            _run_summary(sess, output, display, args.top)
        except BrokenPipeError:
            pass
    return code


def _add_child_processes(stats: Any, path: str) -> None:
    """Add the sessions of the program's child processes, linked to the run's, from their F frames
    (only S, E, C and F frames are read; nothing is decoded)."""
    from .tracefile import read_folds

    ids = set(stats.sessions)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            folds = read_folds(path) if detect_format(path) == "handit" else None
    except (OSError, HanditError, ValueError):
        return
    if folds is None:
        return
    for sid, start in folds.starts.items():
        if sid in ids or start.get("parent_session_id") not in ids:
            continue
        ids.add(sid)
        stats.add(start)
        figures = folds.figures.get(sid)
        if figures is not None:
            stats.add_fold(figures, folds.codes[sid], sid)
        if sid in folds.ends:
            stats.add(folds.ends[sid])


def _join_threads() -> None:
    """Wait for the program's non-daemon threads, as the interpreter would at exit, so their calls are in the trace."""
    import threading

    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not current and not thread.daemon and thread is not threading.main_thread():
            thread.join()


def _run_summary(sess: Session, path: str, display: str, top: int) -> None:
    """Print the summary of this run's session and those the program started inside it to stderr.

    The figures come from the sessions' folds (:mod:`handit.blocks`), made as the
    records arrived: nothing is read back from the trace file or decoded.
    """
    from .renderers.summary import summary_blocks

    stats = sess.summary_stats(nested=True)
    _add_child_processes(stats, path)
    info = engine_info() or (sess.engine, sess.source, "")
    duration = ((sess.t1_ns or 0) - sess.t0_ns) / 1e9
    head = Lines("", [[("handit ", "bold"), (f"{sess.tag}", "bold cyan"),
                       (f" · {duration:.3g} s · engine={info[0]} source={info[1]}", "dim")]])
    blocks: list[Table | Lines] = [head, *summary_blocks(stats, top=top, sessions=stats.session_count > 1)]
    notes: list[list[tuple[str, str]]] = []
    lost = {k: v for k, v in sess.stats.items() if k in ("dropped", "sink_errors") and v}
    if lost:
        notes.append([("lost: " + ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in lost.items()), "bold red")])
    try:
        size = fmt_bytes(os.path.getsize(path))
    except OSError:
        size = "missing"
    shown = display if os.path.isabs(display) or display.startswith("..") else os.path.join(".", display)
    notes.append([("trace: ", "dim"), (shown, "bold"), (f" ({size})", "dim"),
                  ("  ·  view it with: ", "dim"), (f"handit show {shown}", "bold")])
    blocks.append(Lines("", notes))
    sys.stdout.flush()
    emit(blocks, sys.stderr)


# ---- reading trace files -----------------------------------------------------------------------


def _check_trace(path: str) -> str:
    """The file's format (``handit`` or ``jsonl``), or CliError for anything that is not a readable trace."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"{path}: is a directory, not a trace file") from None
    except OSError as exc:
        raise CliError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not head:
        raise CliError(f"{path}: the file is empty, not a trace")
    fmt = detect_format(path)
    if fmt == "handit":
        try:
            read_version(head, path)
        except TraceFormatError as exc:
            raise CliError(str(exc)) from None
    if fmt == "jsonl":
        first = head.lstrip().split(b"\n", 1)
        try:
            event = json.loads(first[0]) if len(first) > 1 or len(head) < 1 << 16 else {"type": first[0][:1] == b"{"}
        except ValueError:
            event = None
        if not isinstance(event, dict) or not event.get("type"):
            raise CliError(f"{path}: not a handit trace (neither the .handit format nor JSONL events)")
    return fmt


def _events(path: str, progress: Any, **read: Any) -> Iterator[dict[str, Any]]:
    for event in iter_events(path, progress=progress, **read):
        if isinstance(event, dict):
            yield event


class _Selector:
    """Which events belong to the sessions chosen with ``--session`` (id prefix) and ``--tag``."""

    def __init__(self, session: str | None, tag: str | None) -> None:
        self.prefix, self.tag = session, tag
        self.active = session is not None or tag is not None
        self.open: set[Any] = set()
        self.matched = 0

    def takes(self, start: dict[str, Any]) -> bool:
        """Whether the session this ``session_start`` event begins is chosen (nothing is counted)."""
        return not self.active or ((self.prefix is None or str(start.get("session_id")).startswith(self.prefix))
                                   and (self.tag is None or start.get("tag") == self.tag))

    def __call__(self, event: dict[str, Any]) -> bool:
        if not self.active:
            return True
        sid = event.get("session_id")
        kind = event.get("type")
        if kind == "session_start":
            ok = (self.prefix is None or str(sid).startswith(self.prefix)) and (self.tag is None or event.get("tag") == self.tag)
            if ok:
                self.open.add(sid)
                self.matched += 1
            return ok
        if sid in self.open:
            if kind == "session_end":
                self.open.discard(sid)
            return True
        return False


class _FoldedStats:
    """Summary aggregates that take a session's figures from its F frame, not from its call events."""

    def __init__(self, stats: Any, folds: Any) -> None:
        self.stats, self.folds = stats, folds

    def add(self, event: dict[str, Any]) -> None:
        sid = event.get("session_id")
        figures = self.folds.figures.get(sid) if self.folds is not None else None
        if figures is None:
            self.stats.add(event)
            return
        kind = event.get("type")
        if kind in ("call", "return", "exception"):
            return
        self.stats.add(event)
        if kind == "session_start":
            self.stats.add_fold(figures, self.folds.codes[sid], sid)


def _read(path: str, selector: _Selector, consumers: list[Any], **read: Any) -> bool:
    """Stream the trace through ``consumers`` (objects with ``add(event)``), reporting warnings as one line each.

    ``read``: ``skip_blocks`` / ``no_blocks`` for :func:`handit.tracefile.iter_events`.

    Returns:
        whether the file was intact (no damage or truncation found).
    """
    progress = progress_reporter(f"reading {os.path.basename(path)}")
    adds = [c.add for c in consumers]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for event in _events(path, progress, **read):
                if selector(event):
                    for add in adds:
                        add(event)
    except OSError as exc:
        raise CliError(f"{path}: reading failed ({exc.strerror or exc})") from None
    finally:
        progress.close()
    for w in caught:
        print(f"handit: warning: {w.message}", file=sys.stderr)
    return not any(issubclass(w.category, TraceFileWarning) for w in caught)


def _cmd_show(args: argparse.Namespace) -> int:
    from .renderers.summary import Stats, func_matcher, summary_blocks
    from .renderers.tree import TreeBuilder

    if not args.file:
        args.file = [_newest_trace()]
    formats = [_check_trace(path) for path in args.file]
    try:
        func_filter = func_matcher(args.func)
    except Exception as exc:  # re.error
        raise CliError(f"--func {args.func!r} is not a valid regular expression ({exc})") from None
    stats = Stats()
    tree = None
    if not args.no_tree:
        tree = TreeBuilder(max_depth=args.depth, max_nodes=args.max_nodes, root_filter=func_filter)
    selector = _Selector(args.session, args.tag)
    intact = True
    for path, fmt in zip(args.file, formats):  # several files make one view (sessions stay apart by id)
        # sessions `handit run` folded (F frames) are summarised without decoding their blocks;
        # without a tree no block of theirs is decoded at all
        folds = _read_folds(path) if fmt == "handit" else None
        read: dict[str, Any] = {}
        if folds is not None and tree is None:
            read = {"no_blocks": True} if not folds.unfolded else {"skip_blocks": folds.figures.keys()}
        elif folds is not None and tree is not None:
            # folded sessions' calls go to the tree from a walk of their blocks, without events
            read = {"make_builder": _walker(tree, folds, selector, _http_sessions(path))}
        consumers: list[Any] = [_FoldedStats(stats, folds)] + ([tree] if tree is not None else [])
        intact = _read(path, selector, consumers, **read) and intact
    if func_filter is not None and not any(func_filter(f.module, f.func) for f in stats.functions.values()):
        _err(f"no function in {' '.join(args.file)} matches --func {args.func}")
        return 1
    if selector.active and not selector.matched:
        _err(f"no session in {' '.join(args.file)} matches" + (f" --session {args.session}" if args.session else "") +
             (f" --tag {args.tag}" if args.tag else ""))
        return 1
    head = Lines("", [[("handit trace ", "bold"), (path, "bold"), (f"  ({fmt}, {fmt_bytes(os.path.getsize(path))})", "dim")]
                      for path, fmt in zip(args.file, formats)])
    width = shutil.get_terminal_size((120, 24)).columns if sys.stdout.isatty() else 120
    extra = [tree.block(width=width)] if tree is not None and tree.roots else []
    blocks = [head, *summary_blocks(stats, top=args.top, func_filter=func_filter, insert=extra)]
    emit(blocks, sys.stdout)
    return 0 if intact else DAMAGED


def _http_sessions(path: str) -> set[str]:
    """Sessions with HTTP events in a .handit file (their calls are read as events: requests are
    linked to their calls while decoding); only J frames are parsed."""
    from .frames import iter_frames

    found: set[str] = set()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # damage is reported by the full read that follows
            for _, _, payload in iter_frames(path, only=b"J"):
                try:
                    events = json.loads(payload)
                except ValueError:
                    continue
                if isinstance(events, list):
                    found.update(str(e.get("session_id")) for e in events
                                 if isinstance(e, dict) and str(e.get("type")).startswith("http_"))
    except (OSError, HanditError):
        pass
    return found


def _walker(consumer: Any, folds: Any, selector: _Selector, http: set[str]) -> Any:
    """``make_builder`` for :func:`handit.tracefile.iter_trace`: a walk feeding ``consumer`` (its
    ``walker(sid, codes)``) for each session ``selector`` takes that has an F frame, no HTTP events
    and no asyncio task markers; None (decode it) for the others."""
    from .walk import CodeNames, WalkedSession, walk_type, walks_every_kind

    walk = walk_type(require_compiled=os.environ.get("HANDIT_REQUIRE_COMPILED") == "1")
    known = walks_every_kind()

    def make(sid: str, lookup: Any) -> Any:
        start = folds.starts.get(sid)
        figures = folds.figures.get(sid)
        if not known or figures is None or sid in http or start is None or not selector.takes(start):
            return None  # sessions without an F frame may hold task markers, which a walk does not follow
        if figures.get("counts", {}).get("markers"):
            return None  # asyncio tasks: their calls' parents come from the markers, read as events
        return WalkedSession(walk(*consumer.walker(sid, CodeNames(lookup))))

    return make


def _read_folds(path: str) -> Any:
    from .tracefile import read_folds

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # damage is reported by the full read that follows
            return read_folds(path)
    except (OSError, HanditError, ValueError):
        return None


def _open_output(path: str) -> IO[bytes]:
    """The export's output, created readable by the owner only (a trace holds argument values)."""
    if path == "-":
        return os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    return os.fdopen(fd, "wb", buffering=1 << 20)


class _JsonlOut:
    """``add(event)`` / ``close()`` writer of the JSONL schema, in batches of 1000."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out, self.batch = out, []  # type: IO[bytes], list[dict[str, Any]]

    def add(self, event: dict[str, Any]) -> None:
        self.batch.append(event)
        if len(self.batch) >= 1000:
            self.close()

    def close(self) -> None:
        from .exporters.jsonl import encode_events

        self.out.write(encode_events(self.batch))
        self.batch.clear()


# A browser holds a JSON file as one string: V8's longest is 2**29 - 24 characters (~512 MB),
# so viewers (Perfetto's UI, chrome://tracing, speedscope) cannot open a bigger JSON export.
JSON_OPEN_LIMIT = 500 << 20
# Output bytes per input byte of a .handit trace with argument previews (docs/cli.md: a call
# took 16 bytes in .handit, 146 in Chrome JSON, 76 in speedscope's)
_JSON_GROWTH = {"chrome": 9, "speedscope": 5}


def _too_big_warning(fmt: str, size: int, *, expected: bool) -> str:
    """The warning for a JSON export of ``size`` bytes that no viewer will open, saying what to do."""
    what = f"about {fmt_bytes(size)}" if expected else fmt_bytes(size)
    return (f"handit: warning: this {fmt} export {'will be' if expected else 'is'} {what}; viewers cannot open JSON "
            f"over ~{fmt_bytes(JSON_OPEN_LIMIT)}. Export fewer sessions (--session ID, --tag T) or use "
            f"--format perfetto (Perfetto's protobuf format: about half the size, streamed, and Perfetto's UI and "
            f"trace processor read it)")


def _cmd_export(args: argparse.Namespace) -> int:
    from .renderers.chrome import ChromeTraceWriter
    from .renderers.perfetto import PerfettoTraceWriter
    from .renderers.speedscope import SpeedscopeWriter

    if args.file is None:
        args.file = _newest_trace()
    fmt = _check_trace(args.file)
    base = os.path.splitext(args.file)[0]
    output = args.output or base + {"chrome": ".chrome.json", "speedscope": ".speedscope.json", "jsonl": ".jsonl",
                                    "perfetto": ".pftrace"}[args.format]
    warned = False
    if args.format in _JSON_GROWTH and fmt == "handit" and not (args.session or args.tag):
        expected = os.path.getsize(args.file) * _JSON_GROWTH[args.format]
        if expected > JSON_OPEN_LIMIT:
            print(_too_big_warning(args.format, expected, expected=True), file=sys.stderr)
            warned = True
    if output != "-" and os.path.exists(output) and os.path.samefile(output, args.file):
        raise CliError(f"the output {output} is the input file; choose another -o")
    out = _open_output(output)
    ok = False
    try:
        name = os.path.basename(args.file)
        writer: Any = {"chrome": lambda: ChromeTraceWriter(out, name), "speedscope": lambda: SpeedscopeWriter(out, name),
                       "jsonl": lambda: _JsonlOut(out), "perfetto": lambda: PerfettoTraceWriter(out, name)}[args.format]()
        intact = _read(args.file, _Selector(args.session, args.tag), [writer])
        writer.close()
        out.flush()
        ok = True
    except OSError as exc:
        raise CliError(f"cannot write {output}: {exc.strerror or exc}") from None
    finally:
        out.close()
        if not ok and output != "-":
            try:
                os.unlink(output)  # no half-written file left behind
            except OSError:
                pass
    if output != "-":
        size = os.path.getsize(output)
        print(f"handit: wrote {output} ({fmt_bytes(size)}, {args.format})", file=sys.stderr)
        if args.format in _JSON_GROWTH and size > JSON_OPEN_LIMIT and not warned:
            print(_too_big_warning(args.format, size, expected=False), file=sys.stderr)
    return 0 if intact else DAMAGED


def _cmd_view(args: argparse.Namespace) -> int:
    import webbrowser
    from pathlib import Path

    from .viewer import PageData, write_page

    if not args.file:
        args.file = [_newest_trace()]
    for path in args.file:
        _check_trace(path)
    if args.max_previews < 0:
        raise CliError(f"--max-previews must be 0 or more, not {args.max_previews}")
    output = args.output or os.path.splitext(args.file[0])[0] + ".html"
    if any(os.path.exists(output) and os.path.samefile(output, path) for path in args.file):
        raise CliError(f"the output {output} is an input file; choose another -o")
    data = PageData(preview_budget=args.max_previews)
    selector = _Selector(args.session, args.tag)
    intact = True
    for path in args.file:
        # sessions' calls come from walks of their blocks, without events (those with HTTP events: as events)
        folds = _read_folds(path) if detect_format(path) == "handit" else None
        read = {"make_builder": _walker(data, folds, selector, _http_sessions(path))} if folds else {}
        intact = _read(path, selector, [data], **read) and intact
    if selector.active and not selector.matched:
        _err(f"no session in {' '.join(args.file)} matches" + (f" --session {args.session}" if args.session else "") +
             (f" --tag {args.tag}" if args.tag else ""))
        return 1
    try:
        size = write_page(data, output, " + ".join(os.path.basename(p) for p in args.file))
    except OSError as exc:
        raise CliError(f"cannot write {output}: {exc.strerror or exc}") from None
    left_out = f"; previews of {data.previews_left_out:,} calls left out (--max-previews)" if data.previews_left_out else ""
    print(f"handit: wrote {output} ({fmt_bytes(size)}, {data.calls:,} calls{left_out})", file=sys.stderr)
    if not args.no_open:
        uri = Path(output).resolve().as_uri()
        if not webbrowser.open(uri):
            print(f"handit: found no browser to open it; open {uri}", file=sys.stderr)
    return 0 if intact else DAMAGED


# ---- argv --------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="handit", description="Record what a Python program's functions did, and look at it.")
    parser.add_argument("--version", action="version", version=f"handit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{run,show,export,view}")
    sub.required = True

    run = sub.add_parser("run", help="run a script or module under the tracer",
                         usage="handit run [options] script.py [args ...]\n       handit run [options] -m module [args ...]")
    run.add_argument("-m", dest="module", action="store_true", help="run a library module as a script (like python -m)")
    run.add_argument("-o", "--output", metavar="FILE",
                     help="trace file (default: handit-<date>-<time>-<ms>-<pid>.handit here; *.jsonl writes JSONL)")
    run.add_argument("--include", metavar="REGEX", action="append", help="trace only module::qualname matching this (repeatable)")
    run.add_argument("--exclude", metavar="REGEX", action="append", help="also skip module::qualname matching this (repeatable)")
    run.add_argument("--capture", choices=("timing", "args", "full"), help="what a call records (default: args)")
    run.add_argument("--preview", choices=("safe", "repr"), help="safe never runs user __repr__ (default: safe)")
    run.add_argument("--max-str", type=int, metavar="N", help="characters kept per preview (>= 16)")
    run.add_argument("--sample-rate", type=float, metavar="R", help="fraction of functions traced, 0-1")
    run.add_argument("--only-cwd", action="store_true", help="trace only code under the working directory")
    run.add_argument("--engine", choices=("auto", "compiled", "fallback"), help="capture engine")
    run.add_argument("--source", choices=("auto", "sysmon", "setprofile"), help="event source")
    run.add_argument("--tag", help="the session's tag (default: the script's name)")
    run.add_argument("--no-children", action="store_true",
                     help="do not record the program's Python child processes (fork, multiprocessing, subprocess)")
    run.add_argument("--top", type=_count, default=8, metavar="N", help="functions listed in the summary (default: 8)")
    run.add_argument("--no-summary", action="store_true", help="print no summary on stderr")
    run.add_argument("target", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    run.set_defaults(handler=_cmd_run)

    show = sub.add_parser("show", help="show a trace: sessions, call tree, busiest functions, errors, HTTP calls")
    show.add_argument("file", nargs="*", help="a .handit or .jsonl trace (several are shown together; default: the newest here)")
    _session_options(show)
    show.add_argument("--func", metavar="REGEX", help="only functions matching this (qualname or module.qualname)")
    show.add_argument("--depth", type=_count, default=8, metavar="N", help="call tree depth (default: 8)")
    show.add_argument("--top", type=_count, default=15, metavar="N", help="rows in the function tables (default: 15)")
    show.add_argument("--max-nodes", type=_count, default=200, metavar="N", help="most lines in the call tree (default: 200)")
    show.add_argument("--no-tree", action="store_true", help="leave out the call tree")
    show.set_defaults(handler=_cmd_show)

    export = sub.add_parser("export", help="convert a trace for Perfetto, chrome://tracing, speedscope, or to JSONL")
    export.add_argument("file", nargs="?", help="a .handit or .jsonl trace (default: the newest here)")
    export.add_argument("--format", required=True, choices=("chrome", "perfetto", "speedscope", "jsonl"),
                        help="perfetto: Perfetto's protobuf trace (.pftrace, for big traces); chrome: Trace Event JSON")
    export.add_argument("-o", "--output", metavar="OUT", help="output file, - for stdout (default: next to FILE)")
    _session_options(export)
    export.set_defaults(handler=_cmd_export)

    view = sub.add_parser("view", help="write a trace as one self-contained HTML page (timeline, call tree, search) and open it")
    view.add_argument("file", nargs="*", help="a .handit or .jsonl trace (several make one page; default: the newest here)")
    view.add_argument("-o", "--output", metavar="PAGE", help="the HTML file (default: next to FILE, .html)")
    view.add_argument("--no-open", action="store_true", help="only write the page; do not open it in the browser")
    view.add_argument("--max-previews", type=int, default=48 << 20, metavar="CHARS",
                      help="characters of argument and result previews kept in the page (default: 48 Mi)")
    _session_options(view)
    view.set_defaults(handler=_cmd_view)
    return parser


def _count(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def _session_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--session", metavar="ID", help="only the session whose id starts with this")
    parser.add_argument("--tag", metavar="T", help="only sessions with this tag")


def main(argv: list[str] | None = None) -> int:
    """Run the ``handit`` command line.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).
    Returns:
        the exit status: the traced program's for ``run``; 0 on success, 1 when
        ``show``/``export`` found a damaged or cut trace (what was intact is
        shown) or no session matched, 2 for a usage error, a missing or
        unreadable file.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has already printed
        return exc.code if isinstance(exc.code, int) else USAGE_ERROR
    try:
        return int(args.handler(args))
    except CliError as exc:
        _err(str(exc))
        return USAGE_ERROR
    except BrokenPipeError:  # `handit show big.handit | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130
