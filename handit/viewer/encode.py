"""Viewer data stage: a stream of events -> the page's data (JSON metadata and one compressed columnar blob).

Calls come from the call-tree model (one :class:`Call` per finished call, on its
track) and are stored column by column, one typed array per field, in the order
they end:

====== ========= ================================================================
column type      value
====== ========= ================================================================
t0     int64     start, ns after the trace's first call, *delta* from the previous row
dur    int64     end minus start, ns
own    int64     own time (total minus suspended minus children on its track), ns
susp   int64     time suspended (generators, coroutines), ns
code   uint32    index into ``codes`` (qualname, module, file, line)
track  uint32    index into ``tracks``
depth  uint32    open calls below it on its track when it started
parent int32     row of the parent call, -1 for none
flags  uint8     1 raised, 2 incomplete, 4 abandoned, 8 generator/coroutine, 16 does not nest
args   int32     index into ``strings`` (``name\\x01value\\x01…``), -1 none, -2 left out (budget)
ret    int32     index into ``strings`` (return preview, or ``Type: message``), -1 / -2 likewise
====== ========= ================================================================

Deltas and small integers compress well: the columns and the string table
(UTF-8 JSON) are concatenated, each at an 8-byte boundary, and deflated with
zlib; the browser inflates them with its built-in ``DecompressionStream``. The
string table deduplicates previews and holds at most ``preview_budget``
characters; calls past it keep their timing and lose their previews, counted in
``previews_left_out`` and said on the page.
"""
from __future__ import annotations

import itertools
import json
import operator
import sys
import zlib
from array import array
from typing import Any

from ..renderers.tree import Node, SessionRoot, TreeBuilder

from ..calltree import Call, CallTree
from ..reader import read_string
from ..walk import CodeNames, OnCall, OnReturn, read_args

__all__ = ["PageData"]

FORMAT_VERSION = 1
_RAISED, _INCOMPLETE, _ABANDONED, _SUSPENDABLE, _NO_NEST = 1, 2, 4, 8, 16
_FLAG_BITS = {"raised": _RAISED, "incomplete": _INCOMPLETE, "abandoned": _ABANDONED}
_FLAG_BITS_OF_WALK = (0, _INCOMPLETE, _ABANDONED)  # a walk's return flag -> the row's flags
_PRUNED = object()  # a walked call the folded tree leaves out (and what it calls)
_NONE, _LEFT_OUT = -1, -2
_SEP = "\x01"
# (name, array typecode, JS typed array): the order is the blob's
_COLUMNS = (("t0", "q", "i64"), ("dur", "q", "i64"), ("own", "q", "i64"), ("susp", "q", "i64"),
            ("code", "I", "u32"), ("track", "I", "u32"), ("depth", "I", "u32"), ("parent", "i", "i32"),
            ("flags", "B", "u8"), ("args", "i", "i32"), ("ret", "i", "i32"))
_LLM_FIELDS = {"gen_ai.system": "system", "gen_ai.operation.name": "operation", "gen_ai.request.model": "model",
               "gen_ai.response.model": "response_model", "gen_ai.usage.input_tokens": "input_tokens",
               "gen_ai.usage.output_tokens": "output_tokens", "gen_ai.response.finish_reasons": "finish_reasons",
               "gen_ai.streamed": "streamed", "gen_ai.server.time_to_first_token_ns": "ttft_ns"}


class PageData:
    """Collects a trace's events into what the page shows.

    Args:
        preview_budget: most characters of argument and return previews kept (deduplicated).
        tree_nodes: node budget of the folded call tree (as ``handit show --max-nodes``).
        tree_depth: depth of the folded call tree (as ``handit show --depth``).

    Use :meth:`add` for every event, then :meth:`finish`.

    Attributes:
        calls: calls stored so far.
        previews_left_out: calls whose previews did not fit the budget.
    """

    def __init__(self, *, preview_budget: int = 48 << 20, tree_nodes: int = 2000, tree_depth: int = 24) -> None:
        self._tree = CallTree()
        self._folded = TreeBuilder(max_nodes=tree_nodes, max_depth=tree_depth, max_children=50)
        self._cols = {name: array(code) for name, code, _ in _COLUMNS}
        self._t0_abs = self._cols["t0"]  # absolute until finish() makes them deltas
        cols = self._cols  # bound appends: the hot path calls them a million times
        self._c_t0, self._c_dur, self._c_own, self._c_susp = (cols[n].append for n in ("t0", "dur", "own", "susp"))
        self._c_code, self._c_track, self._c_depth = (cols[n].append for n in ("code", "track", "depth"))
        self._c_parent, self._c_flags, self._c_args, self._c_ret = (cols[n].append for n in ("parent", "flags", "args", "ret"))
        self._track_of: dict[Any, int] = {}  # Track object -> index
        self._codes: dict[tuple[str, str, str, int], int] = {}
        self._tracks: dict[Any, int] = {}
        self._track_info: list[dict[str, Any]] = []
        self._sessions: dict[Any, dict[str, Any]] = {}
        self._strings: dict[str, int] = {}
        self._budget = preview_budget
        self._rows: dict[Any, _RowIndex] = {}  # session -> call_id -> row
        self._waiting: dict[tuple[Any, Any], list[int]] = {}  # (session, parent call_id) -> rows waiting for it
        self._http: dict[tuple[Any, Any], dict[str, Any]] = {}
        self._http_order: list[dict[str, Any]] = []
        self.calls = 0
        self.previews_left_out = 0

    # -- input -------------------------------------------------------------------------------
    def add(self, event: dict[str, Any]) -> None:
        """Take one event in the JSONL schema."""
        kind = event.get("type")
        if kind in ("call", "return", "exception"):
            for call in self._tree.add(event):
                self._take(call)
            self._folded.add(event)
        elif kind == "task_name":  # a task renamed: its track says the name it ended with
            track = self._tree.rename(event)
            index = self._tracks.get(track.key) if track is not None else None
            if index is not None:
                self._track_info[index]["name"] = track.name
        elif kind == "session_start":
            self._session(event)
            self._folded.add(event)
        elif kind == "session_end":
            s = self._session(event)
            s["t1"] = event.get("ts_ns")
            stats = event.get("stats") or {}
            said = int(stats.get("dropped") or 0) if isinstance(stats, dict) else 0
            s["dropped"] = max(s["dropped"], said)  # the end's count, or the gaps' when it has none
            s["incomplete"] = bool(event.get("incomplete"))
            names = event.get("threads")
            if isinstance(names, dict):
                s["_names"] = {str(k): str(v) for k, v in names.items()}
            self._folded.add(event)
        elif kind in ("http_request", "http_response"):
            self._http_event(event)
        elif kind == "gap":
            s = self._session(event)
            s["dropped"] = s.get("dropped", 0) + int(event.get("dropped") or 0)

    def _session(self, e: dict[str, Any]) -> dict[str, Any]:
        sid = e.get("session_id")
        s = self._sessions.get(sid)
        if s is None:
            s = self._sessions[sid] = {"id": str(sid), "tag": None, "pid": None, "t0": None, "t1": None,
                                       "parent": None, "attrs": {}, "dropped": 0, "calls": 0}
        if e.get("type") == "session_start":
            s.update(tag=e.get("tag"), pid=e.get("pid"), t0=e.get("ts_ns"), parent=e.get("parent_session_id"),
                     attrs=e.get("attrs") if isinstance(e.get("attrs"), dict) else {}, _thread=e.get("thread"))
        return s

    def _string(self, text: str) -> int:
        index = self._strings.get(text)
        if index is None:
            if self._budget < len(text):
                return _LEFT_OUT
            self._budget -= len(text)
            index = self._strings[text] = len(self._strings)
        return index

    def _track(self, track: Any) -> int:
        index = self._tracks.get(track.key)
        if index is None:
            index = self._tracks[track.key] = len(self._track_info)
            self._track_info.append({"session": str(track.session_id), "kind": track.kind, "name": track.name,
                                     "thread": track.thread, "task": track.task_id, "order": track.index, "calls": 0,
                                     "_sid": track.session_id})
        self._track_of[track] = index
        return index

    def _take(self, call: Call) -> None:
        """Store one finished call (the hot path: ~1 µs a call matters for traces of millions)."""
        flags = _SUSPENDABLE if call.suspendable else 0
        if not call.nests:
            flags |= _NO_NEST
        if call.flags:
            for flag in call.flags:
                flags |= _FLAG_BITS.get(flag, 0)
        self._row(call.session_id, (call.func, call.module, call.file, call.line), call.track, flags, call.args,
                  call.exception, call.ret, call.t0_ns, call.t1_ns, call.own_ns, call.suspended_ns, call.depth,
                  call.call_id, call.parent_id)

    def _row(self, sid: Any, code_key: tuple[str, str, str, Any], call_track: Any, flags: int, call_args: Any,
             exception: Any, call_ret: Any, t0: int, t1: int, own: int, susp: int, depth: int, call_id: Any,
             parent_id: Any) -> None:
        row = self.calls
        self.calls = row + 1
        code = self._codes.get(code_key)
        if code is None:
            code = self._codes[code_key] = len(self._codes)
        track = self._track_of.get(call_track)
        if track is None:
            track = self._track(call_track)
        self._track_info[track]["calls"] += 1
        args = ret = _NONE
        if call_args:
            try:
                text = _SEP.join([part for pair in call_args.items() for part in pair])
            except TypeError:  # a JSONL trace may hold non-string previews
                text = _SEP.join([str(part) for pair in call_args.items() for part in pair])
            known = self._strings.get(text)
            args = self._string(text) if known is None else known
        if exception is not None:
            flags |= _RAISED
            kind, message = exception
            ret = self._string(f"{kind}: {message}" if message else kind)
        elif call_ret is not None:
            text = call_ret if type(call_ret) is str else str(call_ret)
            known = self._strings.get(text)
            ret = self._string(text) if known is None else known
        if args == _LEFT_OUT or ret == _LEFT_OUT:
            self.previews_left_out += 1
        self._c_t0(t0)
        self._c_dur(t1 - t0)
        self._c_own(own)
        self._c_susp(susp)
        self._c_code(code)
        self._c_track(track)
        self._c_depth(depth)
        self._c_flags(flags)
        self._c_args(args)
        self._c_ret(ret)
        # the parent ends after its children: children wait for its row, then get it
        rows = self._rows.get(sid)
        if rows is None:
            rows = self._rows[sid] = _RowIndex()
        parent = _NONE
        if parent_id is not None:
            parent = rows.get(parent_id)
            if parent == _NONE:
                self._waiting.setdefault((sid, parent_id), []).append(row)
        self._c_parent(parent)
        rows.put(call_id, row)
        if self._waiting:
            children = self._waiting.pop((sid, call_id), None)
            if children:
                parents = self._cols["parent"]
                for child in children:
                    parents[child] = row

    def walker(self, session_id: str, codes: CodeNames) -> tuple[OnCall, OnReturn]:
        """The ``on_call`` / ``on_return`` pair that takes one session's calls from a
        :class:`handit.walk.Walk` of its blocks: the same rows, tracks and folded tree as from
        its events (:meth:`add` and :class:`~handit.calltree.CallTree`), each row written as
        :meth:`_row` writes it, without an event or a :class:`~handit.calltree.Call` (a session
        with HTTP events is read as events).

        Args:
            session_id: the session (its ``session_start`` and ``session_end`` still go to :meth:`add`).
            codes: the session's code names.
        Returns:
            ``(on_call, on_return)`` for :class:`handit.walk.Walk`.
        """
        tree_call, tree_return = self._folded.walker(session_id, codes)
        opened: dict[int, list[Any]] = {}  # thread -> [its Track, its open calls in start order, its track index]
        page_codes: dict[int, int] = {}  # code index -> the page's
        track_of, cols, strings, intern = self._tree.track_of, self._cols, self._strings, self._string
        c_t0, c_dur, c_own, c_susp, c_code = self._c_t0, self._c_dur, self._c_own, self._c_susp, self._c_code
        c_track, c_depth, c_flags, c_args, c_ret, c_parent = (
            self._c_track, self._c_depth, self._c_flags, self._c_args, self._c_ret, self._c_parent)
        parents = cols["parent"]

        def on_call(parent: Any, call_id: int, code: int, t0: int, thread: int, data: bytes, apos: int) -> Any:
            got = opened.get(thread)
            if got is None:
                got = opened[thread] = [track_of({"session_id": session_id, "thread": thread}), [], -1]
            if parent is not None and parent[0] is _PRUNED:
                folded = _PRUNED
            else:
                folded = tree_call(parent[0] if parent is not None else None, call_id, code, t0, thread, data, apos)
                if folded is None:
                    folded = _PRUNED
            # [folded tree's token, parent, thread's [track, open calls, index], depth, code, block, offset of
            #  the argument previews, children's active ns, its row once ended, rows of children ended before it]
            token = [folded, parent, got, len(got[1]), code, data, apos, 0, -1, None]
            got[1].append(token)
            return token

        def on_return(token: Any, t0: int, t1: int, susp: int, data: bytes, rpos: int, exc: Any, flag: int) -> None:
            if token[0] is not _PRUNED:
                tree_return(token[0], t0, t1, susp, data, rpos, exc, flag)
            got = token[2]
            stack = got[1]
            flags = _FLAG_BITS_OF_WALK[flag]
            if stack and stack[-1] is token:
                stack.pop()
            else:
                flags |= _NO_NEST
                stack.remove(token)
            if t1 < t0:
                t1 = t0
            dt = t1 - t0
            if susp >= 0:
                flags |= _SUSPENDABLE
                if susp > dt:
                    susp = dt
            else:
                susp = 0
            active = dt - susp if dt > susp else 0
            parent = token[1]
            if parent is not None and parent[2] is got:
                parent[7] += active
            # the row, as _row writes it
            row = self.calls
            self.calls = row + 1
            code = page_codes.get(token[4])
            if code is None:
                info = codes[token[4]]
                key = (info[0] or "?", info[1] or "?", info[2], info[3])
                code = self._codes.get(key)
                if code is None:
                    code = self._codes[key] = len(self._codes)
                page_codes[token[4]] = code
            track = got[2]
            if track < 0:
                track = got[2] = self._track(got[0])
            self._track_info[track]["calls"] += 1
            args = ret = _NONE
            if token[6] >= 0:
                previews = read_args(token[5], token[6], codes[token[4]][4])
                if previews:
                    text = _SEP.join([part for pair in previews.items() for part in pair])
                    known = strings.get(text)
                    args = intern(text) if known is None else known
            if exc is not None:
                flags |= _RAISED
                kind, message = str(exc[0] or "?"), str(exc[1] or "")
                ret = intern(f"{kind}: {message}" if message else kind)
            elif rpos >= 0:
                text = read_string(data, rpos)[0]
                known = strings.get(text)
                ret = intern(text) if known is None else known
            if args == _LEFT_OUT or ret == _LEFT_OUT:
                self.previews_left_out += 1
            c_t0(t0)
            c_dur(dt)
            c_own(active - token[7] if active > token[7] else 0)
            c_susp(susp)
            c_code(code)
            c_track(track)
            c_depth(token[3])
            c_flags(flags)
            c_args(args)
            c_ret(ret)
            token[8] = row
            # the parent ends after its children (but a generator may outlive it): children wait for its row
            if parent is None:
                c_parent(_NONE)
            elif parent[8] >= 0:
                c_parent(parent[8])
            else:
                c_parent(_NONE)
                if parent[9] is None:
                    parent[9] = [row]
                else:
                    parent[9].append(row)
            if token[9] is not None:
                for child in token[9]:
                    parents[child] = row
            token[1] = token[5] = token[9] = None  # only open calls are held

        return on_call, on_return

    def _http_event(self, e: dict[str, Any]) -> None:
        key = (e.get("session_id"), e.get("request_id"))
        h = self._http.get(key)
        if h is None:
            h = self._http[key] = {"_sid": e.get("session_id"), "session": str(e.get("session_id")), "thread": e.get("thread"),
                                   "task": e.get("task_id"), "parent": e.get("parent_id")}
            self._http_order.append(h)
        if e.get("type") == "http_request":
            h.update(method=e.get("method"), url=e.get("url"), t0=e.get("t0_ns"), bytes_out=e.get("bytes_out"))
        else:
            h.update(status=e.get("status"), t1=e.get("t1_ns"), dt=e.get("dt_ns"), error=e.get("error"),
                     bytes_in=e.get("bytes_in"))
            llm = e.get("llm")
            if isinstance(llm, dict):
                h["llm"] = {short: llm[name] for name, short in _LLM_FIELDS.items() if name in llm}

    # -- output ------------------------------------------------------------------------------
    def finish(self) -> tuple[dict[str, Any], bytes]:
        """Close what is still open and pack everything.

        Returns:
            ``(meta, blob)``: the metadata (JSON-able; ``columns`` and ``strings``
            give each part's offset and length in the inflated blob) and the
            zlib-compressed blob.
        """
        for call in self._tree.close():
            self._take(call)
        self._rows.clear()
        self._waiting.clear()
        self._track_of.clear()
        for info in self._track_info:
            self._session({"session_id": info["_sid"]})["calls"] += info["calls"]
        t0 = self._t0_abs
        http = [h for h in self._http_order if isinstance(h.get("t0"), int)]
        starts = [min(t0)] if t0 else []
        starts += [h["t0"] for h in http] + [s["t0"] for s in self._sessions.values() if isinstance(s["t0"], int)]
        base = min(starts) if starts else 0
        self._cols["t0"] = array("q", map(operator.sub, t0, itertools.chain((base,), t0)))  # each from the one before
        http_meta = [self._http_meta(h, base) for h in http]  # before the tracks: it may add some
        # each column deflated from its own memory and let go: no second copy of the columns
        # (a million calls: 220 -> ~110 MB peak RSS)
        parts, layout, offset = [], {}, 0
        deflate = zlib.compressobj(6)
        for name, _, js in _COLUMNS:
            column = self._cols.pop(name)
            if sys.byteorder != "little":
                column.byteswap()
            size = len(column) * column.itemsize
            layout[name] = [offset, len(column), js]
            parts.append(deflate.compress(memoryview(column)))
            del column
            offset += size
            pad = -offset % 8
            parts.append(deflate.compress(b"\0" * pad))
            offset += pad
        strings = json.dumps(list(self._strings), ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")
        parts.append(deflate.compress(strings))
        parts.append(deflate.flush())
        meta = {
            "version": FORMAT_VERSION, "base_ns": base, "calls": self.calls,
            "columns": layout, "strings": [offset, len(strings)],
            "codes": [list(k) for k in self._codes], "tracks": self._tracks_meta(),
            "sessions": [self._session_meta(s, base) for s in self._sessions.values()],
            "http": http_meta,
            "tree": self._tree_meta(), "previews_left_out": self.previews_left_out,
        }
        return meta, b"".join(parts)

    def _tracks_meta(self) -> list[dict[str, Any]]:
        out = []
        for info in self._track_info:
            item = {k: v for k, v in info.items() if k != "_sid"}
            item["thread"] = str(item["thread"])  # idents pass 2**53: JSON numbers would round them
            session = self._sessions.get(info["_sid"]) or {}
            name = (session.get("_names") or {}).get(item["thread"])
            if item["kind"] == "thread" and name:
                item["name"] = name  # the thread's own name, from its session's end
            if item["kind"] == "thread" and info["thread"] is not None and info["thread"] == session.get("_thread"):
                item["order"] = 0  # the thread that started the session comes first
            out.append(item)
        return out

    @staticmethod
    def _session_meta(s: dict[str, Any], base: int) -> dict[str, Any]:
        item = {k: v for k, v in s.items() if not k.startswith("_")}
        for name in ("t0", "t1"):
            item[name] = item[name] - base if isinstance(item[name], int) else None
        item["attrs"] = {str(k): str(v) for k, v in item["attrs"].items()}
        return item

    def _http_meta(self, h: dict[str, Any], base: int) -> dict[str, Any]:
        item = {k: v for k, v in h.items() if k != "_sid"}
        t1 = item.get("t1") if isinstance(item.get("t1"), int) else None
        item["t0"] = h["t0"] - base
        item["t1"] = t1 - base if t1 is not None else None
        item["track"] = self._http_track(h)
        item["thread"] = str(h.get("thread"))
        return item

    def _http_track(self, h: dict[str, Any]) -> int:
        """The track an HTTP call is marked on: its task's, else its thread's (made when it has no call)."""
        sid = h["_sid"]
        for key in ((sid, "task", h.get("task")), (sid, "thread", h.get("thread"))):
            if key in self._tracks:
                return self._tracks[key]
        key = (sid, "thread", h.get("thread"))
        index = self._tracks[key] = len(self._track_info)
        self._track_info.append({"session": str(sid), "kind": "thread", "name": f"thread {h.get('thread')}",
                                 "thread": h.get("thread"), "task": None, "order": index + 1, "calls": 0, "_sid": sid})
        return index

    def _tree_meta(self) -> list[dict[str, Any]]:
        """The folded call tree of ``handit show`` (repeats folded), as nested JSON."""
        out = []
        for root in self._folded.roots.values():
            root.children.sort(key=lambda node: node.t0)  # as handit show orders them: threads interleaved as they ran
            item = {"session": root.session_id, "tag": root.tag, **_parent_meta(root)}
            for node, child in zip(root.children, item["children"]):
                label = root.thread_label(node.thread) if node.thread is not None else ""
                if label:
                    child["thread"] = label  # as handit show labels it: "" for the session's own thread
                else:
                    child.pop("thread", None)
            out.append(item)
        return out


class _RowIndex:
    """call_id -> row of one session: an array while the ids are the reader's (1, 2, 3, …), else a dict.

    4 bytes a call instead of a dict entry's ~100: a million calls keep their rows in 4 MB.
    """

    __slots__ = ("_dense", "_sparse")

    def __init__(self) -> None:
        self._dense = array("i")
        self._sparse: dict[Any, int] = {}

    def put(self, call_id: Any, row: int) -> None:
        dense = self._dense
        if type(call_id) is int and 0 < call_id <= len(dense) + 4096:
            if call_id > len(dense):
                dense.extend([_NONE] * (call_id - len(dense)))
            dense[call_id - 1] = row
        else:
            self._sparse[call_id] = row

    def get(self, call_id: Any) -> int:
        if type(call_id) is int and 0 < call_id <= len(self._dense):
            found = self._dense[call_id - 1]
            if found != _NONE:
                return found
        return self._sparse.get(call_id, _NONE)


def _parent_meta(p: Node | SessionRoot) -> dict[str, Any]:
    item: dict[str, Any] = {"children": [_node_meta(c) for c in p.children]}
    if p.others:
        item["others"] = [[name, slot[0], slot[1]] for name, slot in p.others.items()]
    if p.hidden:
        item["hidden"] = p.hidden
    return item


def _node_meta(n: Node) -> dict[str, Any]:
    item: dict[str, Any] = {"func": n.func, "args": [[str(k), str(v)] for k, v in n.args.items()]}
    if n.exc is not None:
        item["exc"] = list(n.exc)
    elif n.ret is not None:
        item["ret"] = n.ret
    if n.count > 1:
        item["count"] = n.count
    if n.dt_ns is not None:
        item["dt"] = n.dt_ns
    if n.same:
        item["same"] = n.calls - 1
    if n.thread:
        item["thread"] = n.thread
    if n.flag:
        item["flag"] = n.flag
    item.update(_parent_meta(n))
    return item
