# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Walk stage, compiled: one session's encoded blocks -> its calls handed to a consumer, without events.

The twin of :mod:`handit.walk` (same names, same calls reported in the same order;
``tests/test_walk.py`` compares them): stacks and suspended calls live in C arrays, so
a call the consumer pruned costs a push and a pop, not a Python object.
"""
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memset

__all__ = ["Walk"]

cdef enum:
    PHANTOM = 0  # a generator resumed in the session but started before it
    SKIP = 1     # the consumer left it out (and what it calls)
    LIVE = 2

ctypedef struct Entry:
    int64_t t0
    int64_t susp
    int64_t tsusp             # when it was last suspended
    uint64_t key
    uint64_t seq              # order it was suspended in (the pure twin's dict order)
    int32_t state
    int32_t next_free

ctypedef struct Stack:
    int32_t* items
    int32_t n
    int32_t cap


include "_blockread.pxi"


cdef class Walk:
    """One session's calls from its blocks, reported to a consumer that prunes (see handit.walk.Walk)."""

    cdef object on_call, on_return
    cdef Entry* pool
    cdef Py_ssize_t npool, cappool
    cdef int32_t free_head
    cdef list tokens                  # pool index -> the consumer's token
    cdef Stack* st
    cdef Py_ssize_t nst, capst
    cdef dict stack_of                # thread ident -> stack index
    cdef int32_t* stash               # key -> pool index + 1 (0: none), keys below DIRECT_KEYS
    cdef Py_ssize_t capstash
    cdef dict big_stash
    cdef uint64_t seq
    cdef public uint64_t calls, corrupt_blocks, dropped
    cdef public int64_t first_ts, last_ts

    def __cinit__(self, on_call, on_return):
        self.on_call, self.on_return = on_call, on_return
        self.tokens = []
        self.stack_of = {}
        self.big_stash = {}
        self.free_head = -1

    def __dealloc__(self):
        cdef Py_ssize_t i
        for i in range(self.nst):
            free(self.st[i].items)
        free(self.st)
        free(self.pool)
        free(self.stash)

    cdef int32_t _alloc(self, int32_t state, int64_t t0, uint64_t key, object token) except -1:
        cdef int32_t e = self.free_head
        if e >= 0:
            self.free_head = self.pool[e].next_free
            self.tokens[e] = token
        else:
            _grow(<void**>&self.pool, &self.cappool, self.npool + 1, sizeof(Entry))
            e = <int32_t>self.npool
            self.npool += 1
            self.tokens.append(token)
        self.pool[e].state, self.pool[e].t0, self.pool[e].key = state, t0, key
        self.pool[e].susp = self.pool[e].tsusp = 0
        return e

    cdef void _free(self, int32_t e) noexcept:
        self.pool[e].next_free = self.free_head
        self.free_head = e

    cdef int _end(self, int32_t e, int64_t t1, object data, Py_ssize_t rpos, object exc, int flag) except -1:
        # report a call's end (LIVE only) and free its entry
        cdef int64_t t0 = self.pool[e].t0
        cdef int64_t susp = self.pool[e].susp if self.pool[e].key else -1
        cdef object token
        self._free(e)
        if self.pool[e].state != LIVE:
            return 0
        token = self.tokens[e]
        self.tokens[e] = None
        if flag and t1 < t0:
            t1 = t0
        self.on_return(token, t0, t1, susp, data, rpos, exc, flag)
        return 0

    cdef Stack* _stack(self, object ident) except NULL:
        cdef object i = self.stack_of.get(ident)
        if i is None:
            _grow(<void**>&self.st, &self.capst, self.nst + 1, sizeof(Stack))
            i = self.stack_of[ident] = self.nst
            self.nst += 1
        return &self.st[<Py_ssize_t>i]

    cdef int32_t _stash_pop(self, uint64_t key) except -2:
        return _stash_take(self.stash, self.capstash, self.big_stash, key)

    cdef int _stash_put(self, uint64_t key, int32_t e) except -1:
        _stash_keep(&self.stash, &self.capstash, self.big_stash, key, e)
        self.pool[e].seq = self.seq
        self.seq += 1
        return 0

    def feed(self, block):
        """Walk one block (a damaged one up to the damage, counted in ``corrupt_blocks``)."""
        cdef bytes data = block if type(block) is bytes else bytes(block)
        cdef const unsigned char* d = data
        cdef Py_ssize_t end = len(data), pos = 0
        cdef uint64_t ident, base, key
        cdef Rec r
        cdef int32_t e, parent, stale
        cdef Stack* s
        cdef object token, ptoken
        if not end:
            return
        if _varint(d, &pos, end, &ident) < 0 or _varint(d, &pos, end, &base) < 0:
            self.corrupt_blocks += 1
            return
        r.ts = <int64_t>base
        if not self.first_ts:
            self.first_ts = r.ts
        s = self._stack(ident)
        try:
            while pos < end:
                if _next_record(d, &pos, end, &r) < 0 or r.kind >= 10:  # (sessions with markers are read as events)
                    raise IndexError
                key = r.key
                if r.kind == 1:  # CALL (its argument previews are read by the consumer if it shows them)
                    self.calls += 1
                    parent = s.items[s.n - 1] if s.n else -1
                    if parent >= 0 and self.pool[parent].state == SKIP:  # below a call the consumer left out
                        e = self._alloc(SKIP, r.ts, key, None)
                        _push_index(&s.items, &s.n, &s.cap, e)
                        continue
                    # a phantom's calls are roots, as the reader has them (parent_id None)
                    ptoken = self.tokens[parent] if parent >= 0 else None
                    token = self.on_call(ptoken, self.calls, r.code, r.ts, ident, data, r.vpos)
                    e = self._alloc(LIVE if token is not None else SKIP, r.ts, key, token)
                    _push_index(&s.items, &s.n, &s.cap, e)
                elif r.kind == 2:  # RETURN
                    if s.n:
                        s.n -= 1
                        self._end(s.items[s.n], r.ts, data, r.vpos, None, 0)
                elif r.kind == 3:  # UNWIND
                    type_name = _string_at(data, &r.vpos)
                    message = _string_at(data, &r.vpos)
                    if s.n:
                        s.n -= 1
                        self._end(s.items[s.n], r.ts, data, -1, (type_name, message), 0)
                elif r.kind == 4:  # YIELD
                    if s.n and self.pool[s.items[s.n - 1]].key == key:
                        s.n -= 1
                        e = s.items[s.n]
                        stale = self._stash_pop(key)
                        self.pool[e].tsusp = r.ts
                        self._stash_put(key, e)
                        if stale >= 0:
                            self.pool[e].seq = self.pool[stale].seq  # the key keeps its place in the order
                            # its number went to a new generator: the old one is gone
                            self._end(stale, self.pool[stale].tsusp, data, -1, None, 2)
                elif r.kind == 5 or r.kind == 6:  # RESUME, THROW: it may continue on another thread
                    e = self._stash_pop(key)
                    if e < 0:
                        e = self._alloc(PHANTOM, r.ts, key, None)
                    else:
                        self.pool[e].susp += r.ts - self.pool[e].tsusp
                    _push_index(&s.items, &s.n, &s.cap, e)
                elif r.kind == 8:  # PAUSE: the generator on top was suspended this long, and runs again
                    if s.n and self.pool[s.items[s.n - 1]].key == key:
                        self.pool[s.items[s.n - 1]].susp += <int64_t>r.n
                elif r.kind == 9:  # STEP: a suspended generator ran this long (to now), suspended again
                    e = self._stash_pop(key)
                    if e >= 0:
                        self.pool[e].susp += r.ts - <int64_t>r.n - self.pool[e].tsusp
                        self.pool[e].tsusp = r.ts
                        self._stash_put(key, e)
                else:  # GAP: records were dropped here; what was open cannot be matched
                    while s.n:
                        s.n -= 1
                        self._end(s.items[s.n], r.ts, data, -1, None, 1)
                    self.dropped += r.n
        except (IndexError, ValueError):  # a cut or damaged block: what came before the damage stands
            self.corrupt_blocks += 1
        finally:
            if r.ts > self.last_ts:
                self.last_ts = r.ts

    def finish(self, int64_t end_ts):
        """Close every call still open: on a stack as incomplete at ``end_ts`` (innermost first),
        suspended as abandoned at its last suspension."""
        cdef Py_ssize_t i, k
        cdef Stack* s
        for i in range(self.nst):
            s = &self.st[i]
            while s.n:
                s.n -= 1
                self._end(s.items[s.n], end_ts, b"", -1, None, 1)
        found = [(self.pool[self.stash[k] - 1].seq, self.stash[k] - 1) for k in range(self.capstash) if self.stash[k]]
        found.extend((self.pool[<int32_t>e].seq, e) for e in self.big_stash.values())
        found.sort()
        if self.capstash:
            memset(self.stash, 0, self.capstash * sizeof(int32_t))
        self.big_stash.clear()
        for _, e in found:
            self._end(<int32_t>e, self.pool[<int32_t>e].tsusp, b"", -1, None, 2)
