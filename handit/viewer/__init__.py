"""Viewer stage: a trace's events -> one self-contained HTML page (timeline, call tree, top functions, HTTP calls).

The page is ``page.html`` with ``viewer.css``, ``viewer.js`` and the data of
:class:`~handit.viewer.encode.PageData` inlined: it fetches nothing (its
Content-Security-Policy forbids it) and opens from a file. See ``docs/viewer.md``.
"""
from __future__ import annotations

import base64
import json
import os
import tempfile
from importlib import resources
from typing import Any

from .encode import PageData

__all__ = ["PageData", "render_page", "write_page"]

_MARKERS = ("title", "css", "meta", "data", "js")


def _asset(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def _json_in_script(obj: Any) -> str:
    """JSON that cannot end its ``<script>`` element early (``<`` written as ``\\u003c``)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str).replace("<", "\\u003c")


def render_page(data: PageData, title: str) -> list[bytes]:
    """The page for ``data``, as parts to write one after the other (the data part may be tens of MB).

    Args:
        data: the collected trace (``finish`` is called here).
        title: shown in the page's title and header (e.g. the trace's file name).
    Returns:
        the page's UTF-8 bytes, in parts.
    """
    meta, blob = data.finish()
    meta["title"] = title
    fills = {
        "title": _escape_text(f"{title} · handit"),
        "css": _asset("viewer.css"),
        "meta": _json_in_script(meta),
        "js": _asset("viewer.js"),
    }
    parts: list[bytes] = []
    rest = _asset("page.html")
    for name in _MARKERS:
        marker = f"<!--viewer:{name}-->"
        head, found, rest = rest.partition(marker)
        if not found:
            raise AssertionError(f"page.html has no {marker}")
        parts.append(head.encode())
        parts.append(base64.b64encode(blob) if name == "data" else fills[name].encode())
    parts.append(rest.encode())
    return parts


def _escape_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_page(data: PageData, path: str, title: str) -> int:
    """Write the page to ``path``, readable by its owner only (it holds argument values), atomically.

    Args:
        data: the collected trace.
        path: the HTML file to write (replaced if it exists).
        title: the page's title.
    Returns:
        the page's size in bytes.
    Raises:
        OSError: the file cannot be written.
    """
    parts = render_page(data, title)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".handit-view-", suffix=".html", dir=folder)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                out.write(part)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return sum(len(p) for p in parts)
