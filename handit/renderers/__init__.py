"""Renderers stage: events -> views (summary tables, call trees, Chrome and speedscope files).

This module holds what every view shares: time and call formatting, and the
terminal output. Views are built as plain blocks (:class:`Table`, :class:`Lines`)
of styled segments; :func:`emit` writes them with ``rich`` when it is installed
(the ``cli`` extra) and the stream is a terminal, as plain text otherwise.
``NO_COLOR`` (https://no-color.org) turns colour off in both.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Iterable, TextIO

__all__ = [
    "Lines", "Segment", "Table", "emit", "fmt_args", "fmt_bytes", "fmt_ns",
    "plain_text", "progress_reporter", "shorten", "unicode_ok", "use_rich",
]

Segment = tuple[str, str]
"""A piece of text and its style name (``""`` for none); styles are rich style strings."""

_ASCII = str.maketrans({"µ": "u", "×": "x", "→": "->", "…": "...", "─": "-", "│": "|", "├": "|", "└": "`", "✗": "!", "·": "-"})


def use_rich(stream: TextIO) -> bool:
    """True if ``rich`` is importable and ``stream`` is a terminal.

    Args:
        stream: where the output goes.
    """
    try:
        if not stream.isatty():
            return False
    except (AttributeError, ValueError):  # closed or replaced by something without isatty
        return False
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def unicode_ok(stream: TextIO) -> bool:
    """True if ``stream`` can encode the box-drawing and unit characters the views use."""
    encoding = getattr(stream, "encoding", None)
    if encoding is None:  # an in-memory text stream: no encoding step
        return True
    try:
        "µ×→…─│├└✗·".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def fmt_ns(ns: float | None) -> str:
    """A duration in the unit that suits it: ``812 ns``, ``12.3 µs``, ``4.56 ms``, ``1.23 s``."""
    if ns is None:
        return "-"
    if ns < 1_000:
        return f"{ns:.0f} ns"
    for unit, scale in (("µs", 1e3), ("ms", 1e6), ("s", 1e9)):
        value = ns / scale
        if value < 1_000 or unit == "s":
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable")


def fmt_bytes(n: int) -> str:
    """A size: ``512 B``, ``12.0 KB``, ``3.4 MB``, ``1.2 GB`` (powers of 1024)."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def shorten(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with ``…`` at the end."""
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def fmt_args(args: dict[str, Any] | None, width: int = 80, value_width: int = 32) -> str:
    """Argument previews as ``name=value, …``, each value and the whole cut to fit."""
    if not args:
        return ""
    parts = [f"{name}={shorten(str(value), value_width)}" for name, value in args.items()]
    return shorten(", ".join(parts), width)


class Table:
    """A titled table of styled cells, rendered by :func:`emit`.

    Args:
        title: shown above the table.
        columns: column headers; a header starting with ``>`` is right-aligned (the ``>`` is dropped).
        rows: cells, each a string or a list of segments.
        note: a line shown under the table (e.g. how many rows were left out).
    """

    def __init__(self, title: str, columns: list[str], rows: list[list[Any]], note: str = "") -> None:
        self.title = title
        self.right = [c.startswith(">") for c in columns]
        self.columns = [c.lstrip(">") for c in columns]
        self.rows = [[c if isinstance(c, list) else [(str(c), "")] for c in row] for row in rows]
        self.note = note

    def plain(self) -> list[str]:
        """The table as aligned text lines."""
        cells = [self.columns] + [["".join(t for t, _ in cell) for cell in row] for row in self.rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.columns))]
        out = [self.title]
        for n, row in enumerate(cells):
            line = "  ".join(c.rjust(w) if right else c.ljust(w) for c, w, right in zip(row, widths, self.right))
            out.append("  " + line.rstrip())
            if n == 0:
                out.append("  " + "  ".join("-" * w for w in widths))
        if self.note:
            out.append("  " + self.note)
        return out

    def rich(self) -> Any:
        """The table as a rich renderable."""
        from rich.table import Table as RichTable
        from rich.text import Text

        table = RichTable(title=self.title, title_justify="left", title_style="bold", caption=self.note or None,
                          caption_justify="left", box=None, header_style="bold dim", pad_edge=False)
        for name, right in zip(self.columns, self.right):
            table.add_column(name, justify="right" if right else "left", overflow="fold")
        for row in self.rows:
            table.add_row(*(Text.assemble(*cell) for cell in row))
        return table


class Lines:
    """A titled list of lines of styled segments (a call tree, a footer), rendered by :func:`emit`.

    Args:
        title: shown above the lines ("" for none).
        lines: each a list of ``(text, style)`` segments.
    """

    def __init__(self, title: str, lines: list[list[Segment]]) -> None:
        self.title = title
        self.lines = lines

    def plain(self) -> list[str]:
        """The lines as text."""
        head = [self.title] if self.title else []
        return head + ["".join(text for text, _ in line) for line in self.lines]

    def rich(self) -> Any:
        """The lines as one rich renderable."""
        from rich.console import Group
        from rich.text import Text

        items: list[Any] = [Text(self.title, style="bold")] if self.title else []
        items.extend(Text.assemble(*line, no_wrap=True, overflow="ellipsis") for line in self.lines)
        return Group(*items)


def plain_text(blocks: Iterable[Table | Lines], ascii_only: bool = False) -> str:
    """Blocks as plain text, separated by blank lines.

    Args:
        blocks: tables and line lists.
        ascii_only: replace the unit, arrow and box-drawing characters with ASCII.
    Returns:
        the text, ending in a newline (empty for no blocks).
    """
    text = "\n\n".join("\n".join(block.plain()) for block in blocks)
    if ascii_only:
        text = text.translate(_ASCII)
    return text + "\n" if text else ""


def emit(blocks: list[Table | Lines], stream: TextIO | None = None) -> None:
    """Write blocks to a stream: with rich on a terminal, as plain text otherwise.

    Args:
        blocks: what to show.
        stream: the output (default ``sys.stdout``).
    """
    stream = stream if stream is not None else sys.stdout
    if use_rich(stream):
        from rich.console import Console

        console = Console(file=stream, no_color="NO_COLOR" in os.environ, highlight=False, soft_wrap=False)
        for n, block in enumerate(blocks):
            if n:
                console.print()
            console.print(block.rich())
        return
    stream.write(plain_text(blocks, ascii_only=not unicode_ok(stream)))
    stream.flush()


class _PlainProgress:
    """A one-line progress indicator for a terminal without rich."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self.stream = stream
        self.label = label
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        pct = 100.0 * done / total if total else 100.0
        self.stream.write(f"\r{self.label} {pct:5.1f}% ({fmt_bytes(done)} of {fmt_bytes(total)})")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


class _RichProgress:
    """A rich progress bar on stderr, removed when done."""

    def __init__(self, stream: TextIO, label: str) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(file=stream, no_color="NO_COLOR" in os.environ)
        self.bar = Progress(TextColumn(label), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                            console=console, transient=True)
        self.task = self.bar.add_task(label, total=None)
        self.bar.start()

    def __call__(self, done: int, total: int) -> None:
        self.bar.update(self.task, completed=done, total=total)

    def close(self) -> None:
        self.bar.stop()


class _NoProgress:
    def __call__(self, done: int, total: int) -> None:
        return None

    def close(self) -> None:
        return None


def progress_reporter(label: str, stream: TextIO | None = None) -> Any:
    """A ``progress(done, total)`` callable that draws a bar on a terminal; call ``.close()`` when done.

    Args:
        label: text before the bar.
        stream: where to draw (default ``sys.stderr``); nothing is drawn if it is not a terminal.
    Returns:
        an object that is callable as ``(bytes_done, bytes_total)`` and has ``close()``.
    """
    stream = stream if stream is not None else sys.stderr
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty:
        return _NoProgress()
    if use_rich(stream):
        return _RichProgress(stream, label)
    return _PlainProgress(stream, label if unicode_ok(stream) else label.translate(_ASCII))

