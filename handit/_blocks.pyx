# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Fold stage, compiled: one session's encoded blocks -> per-function figures, without events.

The twin of :mod:`handit.blocks` (same names, same figures; ``tests/test_fold.py``
compares them): calls and stacks live in C arrays here, so a record costs a few
nanoseconds instead of the pure twin's Python objects (a generator-heavy run folds
about 30 M records).
"""
import copy as _copy

from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset

__all__ = ["Fold"]

ctypedef struct Entry:        # a call on a stack or suspended
    int64_t t0
    int64_t susp              # time suspended so far
    int64_t child             # running time of the calls it made
    int64_t tsusp             # when it was last suspended
    uint64_t key              # generator key, 0 for a plain call
    uint64_t seq              # order it was suspended in (the pure twin's dict order)
    int32_t code              # -1: a phantom (a generator started before the session)
    int32_t thread            # index of the thread it started on; -1 - i for asyncio task track i
    int32_t task_root         # it started its task track (the track ends with it)
    int32_t parent            # pool index of its caller, -1 for none
    uint32_t parent_gen       # the caller's generation then (a freed caller is not credited)
    uint32_t gen              # bumped each time the slot is freed
    int32_t outer             # its function's outermost active call on its thread
    int32_t next_free

ctypedef struct Row:
    uint64_t calls
    int64_t total
    int64_t own
    uint64_t raised

ctypedef struct Thread:
    int32_t* stack
    int32_t n
    int32_t cap
    int32_t* depth            # per code index: its calls running on this thread
    int32_t ndepth


include "_blockread.pxi"


cdef class Fold:
    """Per-function figures of one session, folded from its blocks as they arrive (see handit.blocks.Fold)."""

    cdef Entry* pool
    cdef Py_ssize_t npool, cappool
    cdef int32_t free_head
    cdef Row* rows
    cdef Py_ssize_t caprows
    cdef Thread* th
    cdef Py_ssize_t nth, capth
    cdef int32_t* stash               # key -> pool index + 1 (0: none), keys below DIRECT_KEYS
    cdef Py_ssize_t capstash
    cdef dict big_stash               # larger keys (traces written with frame addresses)
    cdef uint64_t seq
    cdef dict thread_of               # ident -> thread index
    # asyncio tasks: a call of a function in one task is not recursion of its call in another
    cdef dict spawned                 # coroutine key -> None: a task created, not started yet (TASK)
    cdef list task_depth              # task track -> {code: its calls running in the task}, None when free
    cdef list free_tracks
    cdef public dict errors
    cdef public int max_errors
    cdef public uint64_t calls, exceptions, raised, incomplete, abandoned, dropped, corrupt_blocks, errors_omitted
    cdef public uint64_t markers  # task and hand-over markers (TASK .. LEAVE): a walk leaves the session to events
    cdef public int64_t first_ts, last_ts
    cdef object last_exc              # (caller index, caller gen, type, message, error row, first)

    def __cinit__(self, int max_errors=1000):
        self.max_errors = max_errors
        self.errors = {}
        self.big_stash = {}
        self.thread_of = {}
        self.spawned = {}
        self.task_depth = []
        self.free_tracks = []
        self.free_head = -1
        self.last_exc = None

    def __dealloc__(self):
        cdef Py_ssize_t i
        for i in range(self.nth):
            free(self.th[i].stack)
            free(self.th[i].depth)
        free(self.th)
        free(self.pool)
        free(self.rows)
        free(self.stash)

    # -- read back ----------------------------------------------------------------------
    @property
    def funcs(self):
        """code index -> ``[calls, total_ns, own_ns, raised]``."""
        cdef Py_ssize_t i
        return {i: [self.rows[i].calls, self.rows[i].total, self.rows[i].own, self.rows[i].raised]
                for i in range(self.caprows) if self.rows[i].calls}

    @property
    def threads(self):
        """Idents of the threads seen."""
        return set(self.thread_of)

    def to_json(self):
        """The figures as plain JSON data (the trace file's ``F`` frame)."""
        return {
            "funcs": [[code, *row] for code, row in self.funcs.items()],
            "errors": [[t, m, code, err[0], err[1]] for (t, m, code), err in self.errors.items()],
            "counts": {"calls": self.calls, "exceptions": self.exceptions, "raised": self.raised,
                       "incomplete": self.incomplete, "abandoned": self.abandoned, "dropped": self.dropped,
                       "corrupt_blocks": self.corrupt_blocks, "errors_omitted": self.errors_omitted,
                       "markers": self.markers, "last_ts": self.last_ts},
            "threads": len(self.thread_of),
        }

    def open_calls(self):
        """Calls on a stack or suspended now (phantoms excluded)."""
        cdef Py_ssize_t i, j, n = 0
        for i in range(self.nth):
            for j in range(self.th[i].n):
                if self.pool[self.th[i].stack[j]].code >= 0:
                    n += 1
        for e in self._stashed():
            if self.pool[<int32_t>e].code >= 0:
                n += 1
        return n

    def copy(self):
        """An independent copy (to close a running session's open calls without changing it)."""
        cdef Fold c = Fold(self.max_errors)
        cdef Py_ssize_t i
        _grow(<void**>&c.pool, &c.cappool, self.cappool, sizeof(Entry))
        memcpy(c.pool, self.pool, self.cappool * sizeof(Entry))
        c.npool, c.free_head = self.npool, self.free_head
        _grow(<void**>&c.rows, &c.caprows, self.caprows, sizeof(Row))
        memcpy(c.rows, self.rows, self.caprows * sizeof(Row))
        _grow(<void**>&c.stash, &c.capstash, self.capstash, sizeof(int32_t))
        memcpy(c.stash, self.stash, self.capstash * sizeof(int32_t))
        _grow(<void**>&c.th, &c.capth, self.nth, sizeof(Thread))
        for i in range(self.nth):
            c.th[i].n = c.th[i].cap = self.th[i].n
            c.th[i].stack = <int32_t*>malloc(max(self.th[i].n, 1) * sizeof(int32_t))
            c.th[i].ndepth = self.th[i].ndepth
            c.th[i].depth = <int32_t*>malloc(max(self.th[i].ndepth, 1) * sizeof(int32_t))
            if c.th[i].stack == NULL or c.th[i].depth == NULL:
                raise MemoryError
            memcpy(c.th[i].stack, self.th[i].stack, self.th[i].n * sizeof(int32_t))
            memcpy(c.th[i].depth, self.th[i].depth, self.th[i].ndepth * sizeof(int32_t))
            c.nth = i + 1
        memo = {}
        c.errors = _copy.deepcopy(self.errors, memo)
        c.last_exc = _copy.deepcopy(self.last_exc, memo)
        c.big_stash = dict(self.big_stash)
        c.thread_of = dict(self.thread_of)
        c.spawned = dict(self.spawned)
        c.task_depth = [None if d is None else dict(d) for d in self.task_depth]
        c.free_tracks = list(self.free_tracks)
        c.seq = self.seq
        c.calls, c.exceptions, c.raised, c.incomplete = self.calls, self.exceptions, self.raised, self.incomplete
        c.abandoned, c.dropped, c.corrupt_blocks = self.abandoned, self.dropped, self.corrupt_blocks
        c.errors_omitted, c.first_ts, c.last_ts = self.errors_omitted, self.first_ts, self.last_ts
        c.markers = self.markers
        return c

    # -- entries, rows, threads ----------------------------------------------------------
    cdef int32_t _alloc(self) except -1:
        cdef int32_t e = self.free_head
        if e >= 0:
            self.free_head = self.pool[e].next_free
            return e
        _grow(<void**>&self.pool, &self.cappool, self.npool + 1, sizeof(Entry))
        e = <int32_t>self.npool
        self.npool += 1
        return e

    cdef void _free(self, int32_t e) noexcept:
        self.pool[e].gen += 1
        self.pool[e].next_free = self.free_head
        self.free_head = e

    cdef int32_t _thread(self, object ident) except -1:
        cdef object t = self.thread_of.get(ident)
        if t is not None:
            return <int32_t>t
        _grow(<void**>&self.th, &self.capth, self.nth + 1, sizeof(Thread))
        self.thread_of[ident] = self.nth
        self.nth += 1
        return <int32_t>(self.nth - 1)

    cdef int32_t _stash_pop(self, uint64_t key) except -2:
        return _stash_take(self.stash, self.capstash, self.big_stash, key)

    cdef int _stash_put(self, uint64_t key, int32_t e) except -1:
        _stash_keep(&self.stash, &self.capstash, self.big_stash, key, e)
        self.pool[e].seq = self.seq
        self.seq += 1
        return 0

    cdef list _stashed(self):
        # pool indices of the suspended entries, in the order they were suspended
        cdef Py_ssize_t k
        found = [(self.pool[self.stash[k] - 1].seq, self.stash[k] - 1) for k in range(self.capstash) if self.stash[k]]
        found.extend((self.pool[<int32_t>e].seq, e) for e in self.big_stash.values())
        found.sort()
        return [e for _, e in found]

    # -- closing calls -----------------------------------------------------------------------
    cdef void _close(self, int32_t e, int64_t t1) noexcept:
        cdef Entry* x = &self.pool[e]
        cdef Row* row = &self.rows[x.code]
        cdef Thread* t = &self.th[x.thread] if x.thread >= 0 else NULL
        cdef int64_t dt = t1 - x.t0
        cdef int64_t running
        if dt < 0:
            dt = 0
        running = dt - x.susp
        if running < 0:
            running = 0
        if running > x.child:
            row.own += running - x.child
        if x.outer:
            row.total += dt
        if t == NULL:
            self._task_left(x)
        elif x.code < t.ndepth and t.depth[x.code] > 0:
            t.depth[x.code] -= 1
        if x.parent >= 0 and self.pool[x.parent].gen == x.parent_gen:
            self.pool[x.parent].child += running

    cdef void _task_left(self, Entry* x) noexcept:
        # a call in task track -1 - x.thread ends; the task's first call frees the track
        cdef Py_ssize_t i = -1 - x.thread
        try:
            depth = self.task_depth[i]
            if depth is not None:
                left = depth.get(x.code, 1) - 1
                if left > 0:
                    depth[x.code] = left
                else:
                    depth.pop(x.code, None)
                if x.task_root:
                    self.task_depth[i] = None
                    self.free_tracks.append(i)
        except Exception:  # (MemoryError only) the figures of this task's calls stand
            pass

    cdef int32_t _task_track(self) except 0:  # (tracks are -1 and below)
        # a new task's track
        if self.free_tracks:
            i = self.free_tracks.pop()
            self.task_depth[i] = {}
            return -1 - <int32_t>i
        self.task_depth.append({})
        return -len(self.task_depth)

    cdef void _close_all(self, Thread* t, int64_t t1) noexcept:
        cdef int32_t e
        while t.n:
            t.n -= 1
            e = t.stack[t.n]
            if self.pool[e].code >= 0:
                self._close(e, t1 if t1 > self.pool[e].t0 else self.pool[e].t0)
                self.incomplete += 1
            self._free(e)

    cdef int _raise(self, int32_t e, str type_name, str message) except -1:
        cdef Entry* x = &self.pool[e]
        cdef int32_t code = x.code
        self.exceptions += 1
        self.rows[code].raised += 1
        parent = (x.parent, x.parent_gen) if x.parent >= 0 else None
        prev = self.last_exc
        if (prev is not None and prev[0] is not None and prev[0][0] == e and prev[0][1] == x.gen
                and prev[1] == type_name and prev[2] == message):
            err, first = prev[3], prev[4]  # the same exception leaving the caller
            if err is not None and first and len(err[1]) < 6:
                err[1].append(code)
            self.last_exc = (parent, type_name, message, err, first)
            return 0
        self.raised += 1
        key = (type_name, message, code)
        err = self.errors.get(key)
        if err is None and len(self.errors) < self.max_errors:
            err = self.errors[key] = [0, []]
        if err is None:
            self.errors_omitted += 1
        else:
            err[0] += 1
        self.last_exc = (parent, type_name, message, err, err is not None and err[0] == 1)
        return 0

    # -- the fold ----------------------------------------------------------------------------
    def feed(self, block):
        """Fold one encoded block (a damaged one up to the damage, counted in ``corrupt_blocks``)."""
        cdef bytes data = block if type(block) is bytes else bytes(block)
        cdef const unsigned char* d = data
        cdef Py_ssize_t end = len(data), pos = 0
        cdef uint64_t ident, base, key
        cdef Rec r
        cdef int32_t ti, e, parent, code, stale, track
        cdef Thread* t
        cdef Entry* x
        cdef Py_ssize_t cap
        if not end:
            return
        if _varint(d, &pos, end, &ident) < 0 or _varint(d, &pos, end, &base) < 0:
            self.corrupt_blocks += 1
            return
        r.ts = <int64_t>base
        if not self.first_ts:
            self.first_ts = r.ts
        ti = self._thread(ident)
        t = &self.th[ti]
        try:
            while pos < end:
                if _next_record(d, &pos, end, &r) < 0:
                    raise IndexError
                key = r.key
                if r.kind == 1:  # CALL (its argument previews are not folded)
                    code = <int32_t>r.code
                    _grow(<void**>&self.rows, &self.caprows, code + 1, sizeof(Row))
                    self.rows[code].calls += 1
                    self.calls += 1
                    if code >= t.ndepth:
                        cap = t.ndepth
                        _grow(<void**>&t.depth, &cap, code + 1, sizeof(int32_t))
                        t.ndepth = <int32_t>cap
                    parent = t.stack[t.n - 1] if t.n else -1
                    if parent >= 0 and self.pool[parent].code < 0:
                        parent = -1
                    track = ti
                    if key and self.spawned and self.spawned.pop(key, 0) is None:  # a task's first call
                        track = self._task_track()
                    elif parent >= 0 and self.pool[parent].thread < 0:  # a call in a task
                        track = self.pool[parent].thread
                    e = self._alloc()
                    x = &self.pool[e]
                    x.t0, x.susp, x.child, x.tsusp, x.key = r.ts, 0, 0, 0, key
                    x.code, x.thread, x.parent = code, track, parent
                    x.parent_gen = self.pool[parent].gen if parent >= 0 else 0
                    x.task_root = track != ti and (parent < 0 or self.pool[parent].thread != track)
                    if track >= 0:
                        x.outer = t.depth[code] == 0
                        t.depth[code] += 1
                    else:
                        depth = self.task_depth[-1 - track]
                        running_here = depth.get(code, 0)
                        x.outer = running_here == 0
                        depth[code] = running_here + 1
                    _push_index(&t.stack, &t.n, &t.cap, e)
                elif r.kind == 2:  # RETURN
                    if t.n:
                        t.n -= 1
                        e = t.stack[t.n]
                        if self.pool[e].code >= 0:
                            self._close(e, r.ts)
                        self._free(e)
                elif r.kind == 3:  # UNWIND
                    type_name = _string_at(data, &r.vpos)
                    message = _string_at(data, &r.vpos)
                    if t.n:
                        t.n -= 1
                        e = t.stack[t.n]
                        if self.pool[e].code >= 0:
                            self._raise(e, type_name, message)
                            self._close(e, r.ts)
                        self._free(e)
                elif r.kind == 4:  # YIELD
                    if t.n and self.pool[t.stack[t.n - 1]].key == key:
                        t.n -= 1
                        e = t.stack[t.n]
                        stale = self._stash_pop(key)
                        self.pool[e].tsusp = r.ts
                        self._stash_put(key, e)
                        if stale >= 0:
                            self.pool[e].seq = self.pool[stale].seq  # the key keeps its place in the order
                            if self.pool[stale].code >= 0:  # its number went to a new generator
                                self._close(stale, self.pool[stale].tsusp)
                                self.abandoned += 1
                            self._free(stale)
                elif r.kind == 5 or r.kind == 6:  # RESUME, THROW: it may continue on another thread
                    e = self._stash_pop(key)
                    if e < 0:
                        e = self._alloc()
                        x = &self.pool[e]
                        x.t0, x.susp, x.child, x.tsusp, x.key = r.ts, 0, 0, 0, key
                        x.code, x.thread, x.parent, x.parent_gen, x.outer, x.task_root = -1, ti, -1, 0, 0, 0
                        if self.spawned:
                            self.spawned.pop(key, None)  # a task's coroutine thrown into before it started
                    else:
                        self.pool[e].susp += r.ts - self.pool[e].tsusp
                    _push_index(&t.stack, &t.n, &t.cap, e)
                elif r.kind == 8:  # PAUSE: the generator on top was suspended this long, and runs again
                    if t.n and self.pool[t.stack[t.n - 1]].key == key:
                        self.pool[t.stack[t.n - 1]].susp += <int64_t>r.n
                elif r.kind == 9:  # STEP: a suspended generator ran this long (to now), suspended again
                    e = self._stash_pop(key)
                    if e >= 0:
                        self.pool[e].susp += r.ts - <int64_t>r.n - self.pool[e].tsusp
                        self.pool[e].tsusp = r.ts
                        self._stash_put(key, e)
                elif r.kind == 7:  # GAP: records were dropped here; what was open cannot be matched
                    self._close_all(t, r.ts)
                    self.dropped += r.n
                elif r.kind == 10:  # TASK: the coroutine with this key starts a task of its own
                    self.markers += 1
                    if len(self.spawned) >= 65536:  # tasks that never ran (reader._MAX_PENDING)
                        self.spawned.clear()
                    self.spawned[key] = None
                else:  # HANDOFF, ENTER, LEAVE, RENAME (a task's new name, for views): markers
                    self.markers += 1
        except IndexError:  # a cut or damaged block: what came before the damage stands
            self.corrupt_blocks += 1
        finally:
            if r.ts > self.last_ts:
                self.last_ts = r.ts

    def finish(self, int64_t end_ts):
        """Close every call still open: on a stack as incomplete at ``end_ts``, suspended as
        abandoned at its last suspension."""
        cdef Py_ssize_t i
        cdef int32_t e
        for i in range(self.nth):
            self._close_all(&self.th[i], end_ts)
        for obj in self._stashed():
            e = <int32_t>obj
            if self.pool[e].code >= 0:
                self._close(e, self.pool[e].tsusp if self.pool[e].tsusp > self.pool[e].t0 else self.pool[e].t0)
                self.abandoned += 1
            self._free(e)
        if self.capstash:
            memset(self.stash, 0, self.capstash * sizeof(int32_t))
        self.big_stash.clear()
