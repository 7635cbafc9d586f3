# cython: language_level=3, binding=False, boundscheck=False, wraparound=False, cdivision=True
"""Capture stage, compiled: sys.monitoring and profile-function callbacks -> per-thread record chunks.

Both event sources funnel into the same record path (``_record``), written into
per-thread chunks of fixed-size records with no lock (each thread writes its own
chunk while holding the GIL). A full chunk is queued for the drain; the drain
thread encodes queued timing-only chunks without the GIL, beside the program
(``encode_while_waiting``), and ``drain()`` (with the GIL) encodes the rest and
hands every session its blocks, in C.
The pure-Python twin is ``handit._fallback``; both keep the same names.
"""
cimport cython
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_DECREF, Py_XDECREF
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t, uintptr_t
from libc.stdlib cimport malloc, calloc, free, realloc
from libc.string cimport memcmp, memcpy, memset, strlen

import sys
import threading
import warnings
from contextvars import ContextVar

from ._engine import IncompatiblePython, claim_sysmon, release_sysmon
from ._internal import is_internal_thread
from ._policy import ARGS, CodeInfo, exit_kinds, first_yield_unit, module_of
from .preview import _type_name as type_name
from .records import TASK_MODULE, Rendered, task_name_ref as task_name_ref_in

cdef extern from "Python.h":
    ctypedef struct PyFrameObject:
        pass
    ctypedef int (*handit_tracefunc)(PyObject*, PyFrameObject*, int, PyObject*) noexcept
    int PyTrace_CALL
    int PyTrace_RETURN
    int PyTrace_EXCEPTION
    int PyTrace_C_CALL
    int PyContextVar_Get(PyObject* var, PyObject* default_value, PyObject** value)
    PyFrameObject* PyEval_GetFrame()
    void PyEval_SetProfile(handit_tracefunc func, PyObject* obj)
    unsigned long PyThread_get_thread_ident()
    long PyLong_AsLong(PyObject*)
    PyObject* PyTuple_New(Py_ssize_t)
    void PyTuple_SET_ITEM(PyObject*, Py_ssize_t, PyObject*)
    PyObject* PyTuple_GET_ITEM(PyObject*, Py_ssize_t)
    Py_ssize_t PyTuple_GET_SIZE(PyObject*)
    char* PyBytes_AS_STRING(PyObject*)
    Py_ssize_t PyBytes_GET_SIZE(PyObject*)
    object PyBytes_FromStringAndSize(const char*, Py_ssize_t)
    void PyErr_Clear()
    void PyObject_GC_UnTrack(void*)
    PyObject* PyErr_Occurred()
    bint PyUnicode_CheckExact(PyObject*)
    bint PyLong_CheckExact(PyObject*)
    bint PyFloat_CheckExact(PyObject*)
    bint PyBytes_CheckExact(PyObject*)
    bint PyComplex_CheckExact(PyObject*)
    bint PyBool_Check(PyObject*)
    long long PyLong_AsLongLongAndOverflow(PyObject*, int*)
    double PyFloat_AS_DOUBLE(PyObject*)
    Py_ssize_t PyUnicode_GET_LENGTH(PyObject*)
    bint PyUnicode_IS_ASCII(PyObject*)
    void* PyUnicode_DATA(PyObject*)
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*)
    char* PyOS_double_to_string(double, char, int, int, int*)
    int Py_DTSF_ADD_DOT_0
    void PyMem_Free(void*)
    PyObject* Py_None
    PyObject* Py_True
    void* Py_TYPE(PyObject*)

cdef extern from *:
    """
    static inline size_t handit_atomic_add(size_t *p, size_t n) { return __atomic_add_fetch(p, n, __ATOMIC_RELAXED); }
    static inline void handit_atomic_sub(size_t *p, size_t n) { __atomic_fetch_sub(p, n, __ATOMIC_RELAXED); }
    """
    size_t handit_atomic_add(size_t* p, size_t n) nogil
    void handit_atomic_sub(size_t* p, size_t n) nogil

cdef extern from "_compat.h":
    uint64_t handit_ticks() nogil
    bint handit_fast_and_idle(const int*, const int*)
    int handit_ticks_are_ns()
    void* handit_get_tls()
    void* handit_get_tls_raw()
    void handit_set_tls(void*)
    Py_ssize_t handit_request_code_extra_index(void (*)(void*) noexcept)
    int handit_code_get_extra(PyObject*, Py_ssize_t, void**)
    int handit_code_set_extra(PyObject*, Py_ssize_t, void*)
    int handit_frame_lasti_units(PyFrameObject*)
    PyObject* handit_frame_code_fast(PyFrameObject*)
    bint HANDIT_UNWIND_ARG_IS_NULL
    PyObject* handit_frame_arg(PyFrameObject*, void*, int)
    void* handit_current_iframe(PyThreadState*)
    void* handit_frame_iframe(PyFrameObject* f)
    void handit_set_profile_all(handit_tracefunc, const unsigned long*, int)
    void handit_remove_profile_all(handit_tracefunc)
    int handit_profiled_threads(handit_tracefunc, unsigned long*, int)
    PyObject* handit_handled_exception()
    int handit_arm_exc_trace(handit_tracefunc)
    void* handit_closing_frame(PyObject*)
    void handit_learn_gen_close(PyObject*)
    void handit_learn_gen_throw(PyObject*)
    int handit_gen_method(PyObject*) nogil
    bint handit_gen_finalizing(PyFrameObject*, PyObject*)
    void handit_disarm_exc_trace(handit_tracefunc)
    handit_tracefunc handit_prev_profile(unsigned long, PyObject**)
    void* handit_code_extra_fast(PyObject*, Py_ssize_t)
    void* handit_code_extra_first(PyObject*)
    uint64_t handit_tail(uint32_t code, uint8_t kind, uint16_t slot) nogil
    void handit_put_tail(void* at, uint64_t tail) nogil
    ctypedef struct PyThreadState:
        pass
    void handit_q_lock() nogil
    void handit_q_unlock() nogil
    void handit_enc_lock() nogil
    void handit_enc_unlock() nogil
    int handit_enc_trylock() nogil
    void handit_q_signal() nogil
    int handit_q_wait(double) nogil
    uint64_t handit_mono_ns() nogil
    void handit_sync_reinit() nogil
    void handit_q_cond_init() nogil
    void handit_exit_key_init()
    void handit_exit_key_set(int*)
    int handit_has_exited(int*) nogil
    PyThreadState* handit_tstate()
    PyObject* handit_return_none()
    PyThreadState* handit_tstate_for(int fast)
    int handit_tstate_fast_ok()
    void handit_set_fast_tstate(int on)
    void handit_headroom(int more)
    void* handit_context_ptr(PyThreadState*)
    uint64_t handit_context_ver(PyThreadState*)
    ctypedef struct PyMethodDef:
        pass
    ctypedef PyObject* (*handit_fastcall)(PyObject*, PyObject**, Py_ssize_t) noexcept
    object handit_make_fastcall(PyMethodDef*, handit_fastcall, const char*, const char*)
    const char* handit_layout_problem(unsigned long runtime_hex, int free_threaded)
    bint HANDIT_FREE_THREADED
    bint HANDIT_CHECKS_DEBUG_OFFSETS


cdef _refuse_unknown_layout():
    # Before anything else runs: never read a layout this build does not know (issue 17.2).
    # _HANDIT_SIMULATE_PYTHON (tests only) pretends another interpreter: "3.14", "3.13t".
    cdef const char* problem
    from os import environ
    hexversion, free_threaded = sys.hexversion, HANDIT_FREE_THREADED
    shown = "%d.%d" % sys.version_info[:2]
    pretend = environ.get("_HANDIT_SIMULATE_PYTHON")
    if pretend:
        shown = pretend
        free_threaded = pretend.endswith("t")
        major, minor = pretend.rstrip("t").split(".")
        hexversion = (int(major) << 24) | (int(minor) << 16)
    problem = handit_layout_problem(hexversion, free_threaded)
    if problem != NULL:
        raise IncompatiblePython("the compiled engine cannot run on Python %s%s: %s" % (
            shown, " (free-threaded)" if free_threaded and not shown.endswith("t") else "", problem.decode()))


_refuse_unknown_layout()
LAYOUT_CHECKED = "version and _Py_DebugOffsets" if HANDIT_CHECKS_DEBUG_OFFSETS else "version"
"""What was checked at import against the interpreter's own description of its layout."""

ENGINE = "compiled"
TICKS_ARE_NS = bool(handit_ticks_are_ns())
PY312 = sys.version_info >= (3, 12)

session_var = ContextVar("handit_session", default=0)
"""The session slot of the running thread or task (0: none)."""

REDACTED_ARG = Rendered("<redacted>")

cdef PyObject* _session_var = <PyObject*>session_var
cdef unsigned char _active[65536]
cdef uint64_t _n_calls[65536]
cdef uint64_t _n_exceptions[65536]
cdef uint64_t _n_dropped[65536]
cdef bint _bounded = False         # HANDIT_BOUNDED_MEMORY: drop (counted) past _budget
cdef size_t _budget = 8 << 20      # HANDIT_MAX_BUFFER_BYTES: records waiting, all threads together;
                                   # past it a thread drains itself (_hand_over) or drops
cdef size_t _held = 0              # bytes waiting now: chunks, their previews, blocks encoded ahead
cdef size_t _held_peak = 0         # (changed atomically: recording threads add previews without a lock)
cdef size_t _pre_total = 0         # of those, blocks the drain thread encoded ahead of drain() (enc lock)
cdef object _backlog_hook = None
cdef TState* _all_states = NULL
cdef Chunk* _free_chunks = NULL    # empty chunks of CHUNK_RECORDS kept warm (q lock)
cdef int _n_free_chunks = 0
cdef Chunk* _free_small = NULL     # and of SMALL_CHUNK_RECORDS
cdef int _n_free_small = 0
cdef uint64_t _n_queued = 0        # chunks ever queued for the drain (q lock)
cdef uint64_t _n_background = 0    # chunks ever encoded by the drain thread without the GIL (enc lock)
cdef Py_ssize_t _extra_index = -1
cdef uint32_t _generation = 1
cdef uint32_t _key_id = 0          # the decision rules in force (an id of Policy.decision_key)
cdef dict _key_ids = {}
cdef uint32_t _install_generation = 1
cdef int _capture = 0
cdef int _source_kind = 0          # 0 none, 1 sysmon, 2 setprofile
cdef object _policy = None
cdef object _previewer = None
cdef object _DISABLE = None
cdef list _codes = []
cdef list _local_codes = []
cdef object _tool_id = None
cdef bint _failed = False


cdef void _free_cinfo(void* p) noexcept:
    # co_extra free function: runs when a code object dies (GIL held).
    cdef CInfo* ci = <CInfo*>p
    if ci != NULL:
        Py_XDECREF(ci.info)
        Py_XDECREF(ci.exit_kinds)
        free(ci)


_extra_index = handit_request_code_extra_index(_free_cinfo)


def read_ticks():
    """The raw clock the records use (TSC ticks on x86-64)."""
    return handit_ticks()


# ---- per-thread state and records ----------------------------------------------------------

cdef TState* _new_tstate() noexcept:
    # never raises into user code; returns NULL when out of memory
    global _all_states
    cdef TState* ts = <TState*>calloc(1, sizeof(TState))
    if ts == NULL:
        return NULL
    ts.ident = PyThread_get_thread_ident()
    ts.ctx = _NO_CTX
    ts.fast_tstate_proven = handit_tstate_fast_ok()
    ts.fast_tstate = ts.fast_tstate_proven == 1
    handit_exit_key_set(&ts.exited)
    handit_q_lock()  # the drain thread walks the list without the GIL
    ts.next_all = _all_states
    _all_states = ts
    handit_q_unlock()
    handit_set_tls(ts)
    return ts


cdef void* _NO_CTX = <void*>1  # TState.ctx when no context was seen (never a context's address)


cdef inline TState* _tstate() noexcept:
    cdef TState* ts = <TState*>handit_get_tls()
    if ts == NULL:
        ts = _new_tstate()
    return ts


cdef size_t _chunk_bytes(int cap) noexcept nogil:
    return sizeof(Chunk) - sizeof(Record) + <size_t>cap * sizeof(Record)


cdef inline void _hold(size_t n) noexcept nogil:
    # n more bytes wait for the drain
    global _held_peak
    cdef size_t now = handit_atomic_add(&_held, n)
    if now > _held_peak:  # (a statistic: a lost update here changes no bound)
        _held_peak = now


cdef Chunk* _new_chunk() noexcept nogil:
    # never raises; returns NULL when out of memory. Caller holds the q lock. A small chunk
    # once half the budget is held: every thread writes into a chunk of its own, and a hundred
    # threads with 256 KiB each held 25 MB before any of them was full
    global _free_chunks, _n_free_chunks, _free_small, _n_free_small
    cdef int cap = CHUNK_RECORDS if _held + _chunk_bytes(CHUNK_RECORDS) <= _budget // 2 else SMALL_CHUNK_RECORDS
    cdef Chunk* c
    if cap == CHUNK_RECORDS and _free_chunks != NULL:
        c = _free_chunks
        _free_chunks = c.next
        _n_free_chunks -= 1
    elif cap == SMALL_CHUNK_RECORDS and _free_small != NULL:
        c = _free_small
        _free_small = c.next
        _n_free_small -= 1
    else:
        c = <Chunk*>malloc(_chunk_bytes(cap) + <size_t>cap * sizeof(Record))  # and its blob area
        if c == NULL:
            return NULL
        c.cap = cap
    c.next = NULL
    c.n = 0
    c.has_ext = 0
    c.start = 0
    c.blobs = 0
    c.budget_cut = 0
    c.held = _chunk_bytes(cap)
    _hold(c.held)
    return c


cdef void _release_chunk(Chunk* c) noexcept nogil:
    # caller holds the q lock; the chunk's previews are freed (encoded) already
    global _free_chunks, _n_free_chunks, _free_small, _n_free_small
    handit_atomic_sub(&_held, c.held)
    if c.cap == CHUNK_RECORDS and _n_free_chunks < 4:  # kept warm (1 MiB): no page faults on the hot path
        c.next = _free_chunks
        _free_chunks = c
        _n_free_chunks += 1
    elif c.cap == SMALL_CHUNK_RECORDS and _n_free_small < 32:  # (512 KiB)
        c.next = _free_small
        _free_small = c
        _n_free_small += 1
    else:
        free(c)


cdef inline void _drop(TState* ts, int slot) noexcept:
    # a record lost (bounded-memory mode, or out of memory): counted, and marked by a gap
    ts.gap_count += 1
    ts.gap_slot = slot
    _n_dropped[slot] += 1


cdef void _hand_over(TState* ts) noexcept:
    # The records waiting for the drain, all threads together, reach the budget (the writer
    # behind on a slow disk, or the GIL not reaching the drain thread): this thread does the
    # drain's work itself instead of taking more memory (a 3.12 run of a generator-heavy suite
    # reached 1.7-2.0 GB when nothing bounded it, and more-itertools' TestConcurrentTee +411 MB
    # with a bound per thread: 100 threads x 8 MiB). Never raises; the hook says when it cannot
    # (the drain is this thread's).
    if _backlog_hook is None:
        return
    ts.busy = 1  # handit's own work: nothing of it is recorded
    try:
        _backlog_hook()
    except BaseException:
        PyErr_Clear()
    ts.busy = 0


cdef inline bint _room_for(TState* ts, int need) noexcept nogil:
    # `need` more records fit in the chunk being written (false without one: wp = wend = NULL)
    return <size_t>ts.wend - <size_t>ts.wp >= <size_t>need * sizeof(Record)


cdef inline bint _room_for_one(TState* ts) noexcept nogil:
    # _room_for(ts, 1) in one comparison: wend is always a whole number of records past wp
    return ts.wp < ts.wend


cdef inline void _sync_tail(TState* ts) noexcept nogil:
    # the chunk being written learns how many records it holds (they are counted by ts.wp)
    if ts.tail != NULL:
        ts.tail.n = <int>(ts.wp - ts.tail.recs)


cdef inline void _set_tail(TState* ts, Chunk* c) noexcept nogil:
    ts.tail = c
    if c == NULL:
        ts.wp = NULL
        ts.wend = NULL
    else:
        ts.wp = &c.recs[c.n]
        ts.wend = &c.recs[c.cap]


cdef inline bint _over_budget(TState* ts) noexcept nogil:
    # a new chunk for the thread would pass the budget
    return _held + _chunk_bytes(SMALL_CHUNK_RECORDS) > _budget


cdef Record* _make_room(TState* ts, int slot, int need) noexcept:
    global _n_queued
    # _record's slow path: a new chunk, a pending gap mark, or (bounded-memory mode) a drop.
    # Returns where the `need` records go (ts.wp), or NULL when the record is dropped.
    cdef Chunk* c = ts.tail
    cdef Record* r
    cdef RecordExt* e
    if not _room_for(ts, need) and not _bounded and not ts.busy and _over_budget(ts):
        _sync_tail(ts)
        _hand_over(ts)  # the drain syncs and takes the tail too (then wp = wend = NULL)
        c = ts.tail  # NULL once drained: every chunk was taken
    if c != NULL and c.budget_cut == 1:  # cut short for the budget, and no drain took it:
        c.budget_cut = 2                 # written on (a chunk per record would be worse)
        ts.wend = &c.recs[c.cap]
    if not _room_for(ts, need):
        _sync_tail(ts)
        handit_q_lock()
        if _bounded and _over_budget(ts):  # bounded-memory mode: the drain is behind
            handit_q_unlock()
            _drop(ts, slot)
            return NULL
        if c != NULL:  # full: queued for the drain, which may encode it right away
            if ts.qlast == NULL:
                ts.head = c
            else:
                ts.qlast.next = c
            ts.qlast = c
            ts.nchunks += 1
            _n_queued += 1
        c = _new_chunk()
        _set_tail(ts, c)
        handit_q_unlock()
        handit_q_signal()
        if c == NULL:  # out of memory
            _drop(ts, slot)
            return NULL
    if ts.gap_count and _room_for(ts, need + 2):
        r = ts.wp
        r.ts = handit_ticks()
        r.code = 0
        r.kind = K_GAP
        r.slot = <uint16_t>ts.gap_slot
        r.ext = 1
        e = <RecordExt*>(r + 1)
        e.aux = NULL
        e.key = ts.gap_count
        c.has_ext = 1
        ts.wp = r + 2
        ts.gap_count = 0
    return ts.wp


cdef inline void _record_plain(TState* ts, uint8_t kind, int slot, uint32_t code) noexcept:
    # a record with no value or key (timing-only calls and returns): the hot path. The write
    # position is read from the thread's state itself (not through its chunk), and the clock
    # reading is stored with nothing computed from it.
    cdef Record* r = ts.wp
    if not _room_for_one(ts):  # (a pending gap implies this: records drop only when full)
        r = _make_room(ts, slot, 1)
        if r == NULL:
            return
    _write_plain(r, handit_tail(code, kind, <uint16_t>slot))
    ts.wp = r + 1


cdef inline void _write_plain(Record* r, uint64_t tail) noexcept:
    # the clock's reading and the record's tail (handit_tail: code, kind, slot), each stored
    # as it is: nothing waits on the fresh reading
    r.ts = handit_ticks()
    handit_put_tail(&r.code, tail)


cdef inline void _keep_blob(TState* ts, Record* r) noexcept:
    # A record's previews wait with it, copied into its chunk's blob area (r.ext = 2) and
    # their malloc'd blob freed at once on this thread: blobs malloc'd by a hundred threads
    # and freed by the drain thread left each thread's malloc arena at its high-water mark
    # (more-itertools' TestConcurrentTee: +185 MB peak RSS within an 8 MiB budget). The
    # chunk is full once its area is (one too big for it stays malloc'd), or at once when
    # the records waiting are past the budget: the next record finds no room and this
    # thread drains (_make_room), so no thread adds a chunk's worth past the budget.
    cdef Chunk* c = ts.tail
    cdef RecordExt* e = <RecordExt*>(r + 1)
    cdef size_t area = <size_t>c.cap * sizeof(Record)
    cdef char* into
    cdef uint32_t n
    memcpy(&n, e.aux, 4)
    n += 4
    if c.blobs + n <= area:
        into = (<char*>&c.recs[c.cap]) + c.blobs
        memcpy(into, e.aux, n)
        free(e.aux)
        e.aux = <PyObject*>into
        r.ext = 2
    c.blobs += n
    c.held += n
    _hold(n)
    if c.blobs >= area:
        ts.wend = ts.wp
    elif _held > _budget and ts.tail.budget_cut == 0:
        ts.tail.budget_cut = 1
        ts.wend = ts.wp


cdef void _record(TState* ts, uint8_t kind, int slot, uint32_t code, PyObject* aux, uint64_t key) noexcept:
    # never raises; takes aux (a blob for calls and returns, else a reference; dropped
    # if memory runs out)
    cdef Record* r = ts.wp
    cdef RecordExt* e
    cdef int need = 2 if (aux != NULL or key != 0) else 1
    if not _room_for(ts, need):
        r = _make_room(ts, slot, need)
        if r == NULL:
            _free_aux(kind, aux)
            return
    r.ts = handit_ticks()
    r.code = code
    r.kind = kind
    r.slot = <uint16_t>slot
    r.ext = need - 1
    if need == 2:
        if kind == K_UNWIND:  # its text is a Python object: encoded by drain(), with the GIL
            ts.tail.has_ext = 1
        e = <RecordExt*>(r + 1)
        e.aux = aux
        e.key = key
    ts.wp = r + need
    if aux != NULL and _holds_blob(kind):
        _keep_blob(ts, r)


cdef inline int _current_slot(TState* ts, PyThreadState* t) noexcept:
    # never raises; 0 when no session is active here. The ContextVar is read again only
    # when the thread has entered another context (asyncio task switch, Context.run) or
    # handit set the variable (invalidate()); otherwise the cached slot stands.
    cdef void* ctx = handit_context_ptr(t)
    cdef uint64_t ver = handit_context_ver(t)
    cdef int slot
    if ctx != ts.ctx or ver != ts.ctx_ver or ctx == NULL:
        slot = _read_slot()
        ts.ctx = ctx if ctx != NULL else _NO_CTX  # (no context yet: read again next time)
        ts.ctx_ver = ver
        ts.ctx_slot = slot
    else:
        slot = ts.ctx_slot
    if slot == 0 or not _active[slot]:
        ts.slot_tail = 0
        return 0
    ts.slot_tail = handit_tail(0, 0, <uint16_t>slot)
    return slot


cdef int _read_slot() noexcept:
    cdef PyObject* val = NULL
    cdef long slot
    if PyContextVar_Get(_session_var, NULL, &val) < 0:
        PyErr_Clear()
        return 0
    if val == NULL:
        return 0
    slot = PyLong_AsLong(val)
    Py_DECREF(<object>val)
    if slot <= 0 or slot > 65535:
        return 0
    return <int>slot


cdef inline CInfo* _cinfo(PyObject* code) noexcept:
    return <CInfo*>handit_code_extra_fast(code, _extra_index)


cdef inline CInfo* _cinfo_at(PyObject* code, bint first) noexcept:
    # _cinfo; `first` (a constant): handit's co_extra index is 0, no bounds to check
    return <CInfo*>handit_code_extra_first(code) if first else _cinfo(code)


# ---- slow paths: decisions and previews (Python allowed, errors contained) -----------------

cdef void _fail(exc) noexcept:
    global _failed
    if _failed:
        return
    _failed = True
    try:
        uninstall()
    except BaseException:
        pass
    try:
        warnings.warn(f"handit stopped tracing after an internal error: {exc!r}", RuntimeWarning)
    except BaseException:
        PyErr_Clear()


cdef int _arm(CInfo* ci, object ocode) except -1:
    # what a traced code needs from the installed source: its local events, or exit kinds
    if _source_kind == 2 and ci.exit_kinds == NULL:
        kinds = exit_kinds(ocode)
        Py_INCREF(kinds)
        ci.exit_kinds = <PyObject*>kinds
        ci.first_yield = first_yield_unit(kinds)
    elif _source_kind == 1:
        ev = sys.monitoring.events
        events = ev.PY_RETURN
        if ci.suspendable:
            events |= ev.PY_YIELD | ev.PY_RESUME
        sys.monitoring.set_local_events(_tool_id, ocode, events)
        _local_codes.append(ocode)
    return 0


cdef inline void _set_generation(CInfo* ci) noexcept:
    # decided (again) under the rules in force: which sysmon fast paths its events take
    ci.generation = _generation
    ci.call_gen = _generation if ci.traced and ci.plain else 0
    ci.return_gen = _generation if ci.traced and ci.plain and not _capture else 0
    ci.call_tail = handit_tail(ci.index, K_CALL, 0)
    ci.return_tail = handit_tail(ci.index, K_RETURN, 0)


cdef CInfo* _decide(PyObject* code, PyFrameObject* frame) noexcept:
    # never raises into user code; returns NULL on failure (after _fail) or RecursionError.
    # A code decided under the same rules before (an earlier session) keeps its answer and
    # its index: only the new source's events are set up.
    cdef CInfo* old = _cinfo(code)
    cdef CInfo* ci
    cdef object ocode = <object>code
    handit_headroom(1)
    try:
        if old != NULL and old.key_id == _key_id:
            if old.traced:
                _arm(old, ocode)
            _set_generation(old)
            return old
        module = module_of(<object>frame) if frame != NULL else None
        info = _policy.decide(ocode, module, len(_codes))
        old = _cinfo(code)  # again: the decision ran Python code
        if old != NULL:
            # decided anew under other rules: updated in place, since a callback of another
            # thread may hold it (and the co_extra slot would not free a replaced one)
            ci = old
            Py_XDECREF(ci.info)
            Py_XDECREF(ci.exit_kinds)
            ci.info = NULL
            ci.exit_kinds = NULL
            ci.traced = 0
            ci.index = 0
        else:
            ci = <CInfo*>calloc(1, sizeof(CInfo))
            if ci == NULL:
                return NULL
        ci.key_id = _key_id
        if info is not None:
            _codes.append(info)
            ci.traced = 1
            ci.index = info.index
            ci.suspendable = info.suspendable
            ci.nargs = len(info.argnames)
            ci.plain = not ci.suspendable and not (_capture and ci.nargs)  # (capture is in the key)
            Py_INCREF(info)
            ci.info = <PyObject*>info
            _arm(ci, ocode)
        _set_generation(ci)
        if ci != old and handit_code_set_extra(code, _extra_index, ci) < 0:
            _free_cinfo(ci)
            PyErr_Clear()
            return NULL
        return ci
    except RecursionError:
        return NULL
    except BaseException as exc:
        _fail(exc)
        return NULL
    finally:
        handit_headroom(0)


cdef PyObject* _exception_text(TState* ts, PyObject* exc) noexcept:
    # (type_name, message) for an exception, cached for the exception unwinding through
    # several frames; never raises; new reference or NULL
    if exc != NULL and exc == ts.last_exc and ts.last_exc_text != NULL:
        Py_INCREF(<object>ts.last_exc_text)
        return ts.last_exc_text
    ts.busy = 1
    handit_headroom(1)
    try:
        if exc == NULL:
            text = ("<unknown>", "")
        else:
            text = (type_name(type(<object>exc)), _previewer.exception_message(<object>exc))
    except KeyboardInterrupt:
        _interrupt_again()
        text = ("<unknown>", "")
    except BaseException:
        text = ("<unknown>", "")
    handit_headroom(0)
    ts.busy = 0
    if exc != NULL:
        Py_XDECREF(ts.last_exc)
        Py_XDECREF(ts.last_exc_text)
        Py_INCREF(<object>exc)
        ts.last_exc = exc
        Py_INCREF(text)
        ts.last_exc_text = <PyObject*>text
    Py_INCREF(text)
    return <PyObject*>text


# ---- shared record path ----------------------------------------------------------------------

cdef inline void _on_call(TState* ts, PyThreadState* t, int slot, CInfo* ci, PyFrameObject* frame, uint8_t kind) noexcept:
    # never raises. frame is NULL for sys.monitoring: the interpreter frame running now is
    # read instead (PY312+), which needs no frame object.
    cdef uint64_t key = 0
    cdef PyObject* aux = NULL
    cdef void* iframe = NULL
    cdef bint want_args
    if ci.plain:  # timing only
        _record_plain(ts, kind, slot, ci.index)
        return
    want_args = kind == K_CALL and _capture and ci.nargs
    if frame == NULL:
        iframe = handit_current_iframe(t)
    if ci.suspendable:
        key = <uint64_t>frame if frame != NULL else <uint64_t>iframe
        if kind == K_RESUME:
            _on_resume(ts, slot, ci, key)
            return
    if want_args:
        aux = _args(ts, ci, frame, iframe)
    _record(ts, kind, slot, ci.index, aux, key)


cdef inline bint _is_suspend(Record* r, uint8_t kind, int slot, uint64_t key) noexcept:
    return r.kind == kind and r.ext and r.slot == slot and (<RecordExt*>(r + 1)).key == key


cdef inline void _fold_into(TState* ts, Record* into, Record* last, uint64_t now) noexcept:
    # the pair ending with `last` (the chunk's last record) is added to `into`'s ticks
    cdef RecordExt* e = <RecordExt*>(into + 1)
    e.aux = <PyObject*>(<uintptr_t>e.aux + (now - last.ts))
    ts.wp = last


cdef inline void _fold_as(Record* last, uint8_t kind, uint64_t now) noexcept:
    # the chunk's last record and the event now become one record of `kind`, at `now`
    (<RecordExt*>(last + 1)).aux = <PyObject*>(<uintptr_t>(now - last.ts))
    last.ts = now
    last.kind = kind


cdef bint _fold_pair(TState* ts, int slot, uint64_t key, uint8_t first, uint8_t into) noexcept:
    # The chunk's last record is `first` (a yield or a resume) of this generator, nothing
    # traced having run since: it and the event now become one `into` record (PAUSE or STEP:
    # the ticks between them), or are added to the `into` of this generator just before it,
    # or (a pause) to its PAUSE before one STEP of another generator, the one it drives.
    # Records before c.start are encoded already: left alone. 1 if folded.
    cdef Chunk* c = ts.tail
    cdef Record* last
    cdef uint64_t now
    cdef int n
    if c == NULL:
        return 0
    n = <int>(ts.wp - c.recs)
    if n - 2 < c.start or not _is_suspend(&c.recs[n - 2], first, slot, key):
        return 0
    last = &c.recs[n - 2]
    now = handit_ticks()
    if now < last.ts:
        now = last.ts
    if n - 4 >= c.start and _is_suspend(&c.recs[n - 4], into, slot, key):
        _fold_into(ts, &c.recs[n - 4], last, now)
        c.recs[n - 4].ts = now
    elif (into == K_PAUSE and n - 6 >= c.start and c.recs[n - 4].kind == K_STEP and c.recs[n - 4].slot == slot
          and _is_suspend(&c.recs[n - 6], K_PAUSE, slot, key)):
        _fold_into(ts, &c.recs[n - 6], last, now)  # (its time stays before the step's)
    else:
        _fold_as(last, into, now)
    return 1


cdef void _on_resume(TState* ts, int slot, CInfo* ci, uint64_t key) noexcept:
    # never raises. A generator resumed right after its own yield, nothing traced having run
    # while it was suspended (an untraced consumer: a for loop, list(), sum()), costs no
    # record: the pair is a PAUSE (_fold_pair). A generator yielding a million items to an
    # untraced loop costs one record, not two million (more-itertools' suite: 213 M records,
    # 90% of its trace, were such pairs).
    if not _fold_pair(ts, slot, key, K_YIELD, K_PAUSE):
        _record(ts, K_RESUME, slot, ci.index, NULL, key)


cdef void _on_yield(TState* ts, int slot, CInfo* ci, uint64_t key) noexcept:
    # never raises. A generator yielding right after it was resumed, nothing traced having
    # run in between (a pipeline's inner stage, driven by a traced outer one), costs no
    # record: the pair is a STEP (_fold_pair).
    if not _fold_pair(ts, slot, key, K_RESUME, K_STEP):
        _record(ts, K_YIELD, slot, ci.index, NULL, key)


cdef inline void _on_return(TState* ts, int slot, CInfo* ci, PyObject* value, uint64_t key) noexcept:
    # never raises. key: a generator's or coroutine's frame (its final exit frees its index
    # in the block encoder); 0 for other code
    if _capture:
        _forget_exception(ts)
        _record(ts, K_RETURN, slot, ci.index, _value_blob(ts, value if value != NULL else Py_None), key)
    elif key:
        _record(ts, K_RETURN, slot, ci.index, NULL, key)
    else:
        _record_plain(ts, K_RETURN, slot, ci.index)


cdef inline void _on_unwind(TState* ts, int slot, CInfo* ci, PyObject* exc, uint64_t key) noexcept:
    # never raises; key as for _on_return
    _record(ts, K_UNWIND, slot, ci.index, _exception_text(ts, exc), key)


cdef inline CInfo* _traced(PyObject* code) noexcept:
    cdef CInfo* ci = _cinfo(code)
    if ci == NULL or not ci.traced or ci.generation != _generation:
        return NULL
    return ci


# ---- sys.monitoring source (PY312+) -----------------------------------------------------------

cdef inline PyObject* _none() noexcept:
    return handit_return_none()


cdef inline PyThreadState* _cached_context(TState* ts) noexcept:
    # The callbacks' first step: the thread state when the session slot cached for the
    # context this thread runs in stands (ts.ctx_slot; _NO_CTX never matches) and nothing
    # else needs looking at; NULL sends the event down the full path (_current_slot and the rest).
    cdef PyThreadState* t
    if not handit_fast_and_idle(&ts.busy, &ts.fast_tstate):  # (ts: handit_get_tls_raw, never NULL)
        return NULL
    t = handit_tstate_for(1)
    if handit_context_ptr(t) != ts.ctx or handit_context_ver(t) != ts.ctx_ver:
        return NULL
    return t


cdef inline PyObject* _py_start_fast(PyObject* self, PyObject** args, Py_ssize_t nargs, bint first) noexcept:
    # PY_START(code, offset): decide the code once; record a call (DISABLE for excluded code).
    # A timing-only call of decided code, in a context seen before, is written here and calls
    # nothing (so no register is saved and restored); everything else takes _py_start_full.
    # One comparison per question (CInfo.call_gen: decided under these rules, traced, time
    # only; TState.slot_tail: the cached slot's session is active, activate() and deactivate()
    # make every thread read it again), the record's second half ORed from two precomputed
    # words (CInfo.call_tail, TState.slot_tail) and stored at once, and no bounds check on
    # co_extra where handit's index is 0 (`first`, a constant: _c_py_start_first). 3.12
    # callgrind, instructions an event: PY_START 65 -> 56 -> 51 -> 39, PY_RETURN 67 -> 54 ->
    # 49 -> 40 (bench/hot_path_instructions.py).
    cdef TState* ts = <TState*>handit_get_tls_raw()
    cdef CInfo* ci
    cdef Record* r
    if _cached_context(ts) != NULL:
        ci = _cinfo_at(args[0], first)
        if ci != NULL and ci.call_gen == _generation:
            if ts.slot_tail == 0:
                return _none()
            r = ts.wp
            if _room_for_one(ts):
                _write_plain(r, ci.call_tail | ts.slot_tail)
                ts.wp = r + 1
                return _none()
    return _start_full(self, args, nargs)


cdef PyObject* _c_py_start(PyObject* self, PyObject** args, Py_ssize_t nargs) noexcept:
    return _py_start_fast(self, args, nargs, False)


cdef PyObject* _c_py_start_first(PyObject* self, PyObject** args, Py_ssize_t nargs) noexcept:
    return _py_start_fast(self, args, nargs, True)


cdef PyObject* _py_start_full(PyObject* self, PyObject** args, Py_ssize_t nargs) noexcept:
    cdef TState* ts = _tstate()
    cdef PyThreadState* t
    cdef int slot
    cdef CInfo* ci
    cdef PyFrameObject* frame = NULL
    cdef PyObject* code = args[0]
    if ts == NULL or ts.busy:
        return _none()
    t = handit_tstate_for(ts.fast_tstate)
    slot = _current_slot(ts, t)
    ci = _cinfo(code)
    if ci == NULL or ci.generation != _generation:
        # decided even with no session here: excluded code is switched off whichever thread
        # runs it first (a thread without a session, an engine kept between sessions)
        frame = PyEval_GetFrame()
        ci = _decide(code, frame)
        if ci == NULL:
            return _none()
    if not ci.traced:
        Py_INCREF(_DISABLE)
        return <PyObject*>_DISABLE
    if slot != 0:
        _on_call(ts, t, slot, ci, NULL, K_CALL)  # keys and arguments from the interpreter frame
    return _none()


cdef inline CInfo* _traced_event(PyObject* code, TState** ts_out, PyThreadState** t_out, int* slot_out) noexcept:
    # the thread states, session slot and code info of an event on traced code, else NULL
    cdef TState* ts = _tstate()
    cdef PyThreadState* t
    cdef int slot
    cdef CInfo* ci
    if ts == NULL or ts.busy:
        return NULL
    t = handit_tstate_for(ts.fast_tstate)
    slot = _current_slot(ts, t)
    if slot == 0:
        return NULL
    ci = _traced(code)
    ts_out[0] = ts
    t_out[0] = t
    slot_out[0] = slot
    return ci


cdef inline PyObject* _py_return_fast(PyObject* self, PyObject** args, Py_ssize_t nargs, bint first) noexcept:
    # PY_RETURN(code, offset, retval): the call ends with a value. Fast path as PY_START's
    # (CInfo.return_gen: also timing-only capture; a generator's return takes the full path,
    # which frees its key).
    cdef TState* ts = <TState*>handit_get_tls_raw()
    cdef CInfo* ci
    cdef Record* r
    if _cached_context(ts) != NULL:
        if ts.slot_tail == 0:
            return _none()
        ci = _cinfo_at(args[0], first)
        if ci != NULL and ci.return_gen == _generation:
            r = ts.wp
            if _room_for_one(ts):
                _write_plain(r, ci.return_tail | ts.slot_tail)
                ts.wp = r + 1
                return _none()
    return _return_full(self, args, nargs)


cdef PyObject* _c_py_return(PyObject* self, PyObject** args, Py_ssize_t nargs) noexcept:
    return _py_return_fast(self, args, nargs, False)


cdef PyObject* _c_py_return_first(PyObject* self, PyObject** args, Py_ssize_t nargs) noexcept:
    return _py_return_fast(self, args, nargs, True)


cdef PyObject* _py_return_full(PyObject* self, PyObject** args, Py_ssize_t nargs) noexcept:
    cdef TState* ts = NULL
    cdef PyThreadState* t = NULL
    cdef int slot = 0
    cdef CInfo* ci = _traced_event(args[0], &ts, &t, &slot)
    if ci != NULL:
        _on_return(ts, slot, ci, args[2], <uint64_t>handit_current_iframe(t) if ci.suspendable else 0)
    return _none()


cdef inline PyObject* _suspend_event(PyObject* code, uint8_t kind) noexcept:
    cdef TState* ts = NULL
    cdef PyThreadState* t = NULL
    cdef int slot = 0
    cdef CInfo* ci = _traced_event(code, &ts, &t, &slot)
    if ci != NULL:
        if kind == K_RESUME:
            _on_resume(ts, slot, ci, <uint64_t>handit_current_iframe(t))
        elif kind == K_YIELD:
            _on_yield(ts, slot, ci, <uint64_t>handit_current_iframe(t))
        else:
            _record(ts, kind, slot, ci.index, NULL, <uint64_t>handit_current_iframe(t))
    return _none()


cdef PyObject* _c_py_yield(PyObject* self, PyObject** args, Py_ssize_t nargs) noexcept:
    # PY_YIELD(code, offset, value): a generator or coroutine is suspended
    return _suspend_event(args[0], K_YIELD)


cdef PyObject* _c_py_resume(PyObject* self, PyObject** args, Py_ssize_t nargs) noexcept:
    # PY_RESUME(code, offset): a suspended generator or coroutine continues
    return _suspend_event(args[0], K_RESUME)


cdef PyObject* _c_py_throw(PyObject* self, PyObject** args, Py_ssize_t nargs) noexcept:
    # PY_THROW(code, offset, exc): a suspended generator continues with an exception
    return _suspend_event(args[0], K_THROW)


cdef PyObject* _c_py_unwind(PyObject* self, PyObject** args, Py_ssize_t nargs) noexcept:
    # PY_UNWIND(code, offset, exc): the call ends with an exception
    cdef TState* ts = NULL
    cdef PyThreadState* t = NULL
    cdef int slot = 0
    cdef CInfo* ci = _traced_event(args[0], &ts, &t, &slot)
    if ci != NULL:
        _on_unwind(ts, slot, ci, args[2], <uint64_t>handit_current_iframe(t) if ci.suspendable else 0)
    return _none()


# The full paths are called through pointers set at run time, so the C compiler cannot inline
# them into the fast paths above (whose prologues would then save six registers for them).
ctypedef PyObject* (*_callback_t)(PyObject*, PyObject**, Py_ssize_t) noexcept
cdef _callback_t _start_full = _py_start_full
cdef _callback_t _return_full = _py_return_full


cdef PyObject* _c_noop(PyObject* self, PyObject** args, Py_ssize_t nargs) noexcept:
    return _none()


cdef uint64_t _tsc_floor[4096]
cdef uint64_t _tsc_floor_n = 0


cdef PyObject* _c_tsc_floor(PyObject* self, PyObject** args, Py_ssize_t nargs) noexcept:
    # the clock-storing floor: one TSC read stored per event, nothing else
    global _tsc_floor_n
    _tsc_floor[_tsc_floor_n & 4095] = handit_ticks()
    _tsc_floor_n += 1
    return _none()


def tsc_floor_events():
    """How many events ``tsc_floor_callback`` has stored a clock reading for (benchmarks check it)."""
    return _tsc_floor_n


def tsc_floor_last():
    """The clock reading ``tsc_floor_callback`` stored last (0 before any).

    Benchmarks check it; being read here also keeps the compiler from dropping the
    stores as dead (it did: the floor read the clock and stored nothing).
    """
    return _tsc_floor[(_tsc_floor_n - 1) & 4095] if _tsc_floor_n else 0


cdef PyMethodDef _defs[8]
# (index 0: the usual case, no other tool asked for a co_extra index before handit)
sysmon_py_start = handit_make_fastcall(&_defs[0], _c_py_start_first if _extra_index == 0 else _c_py_start,
                                       "sysmon_py_start", "PY_START callback")
sysmon_py_return = handit_make_fastcall(&_defs[1], _c_py_return_first if _extra_index == 0 else _c_py_return,
                                        "sysmon_py_return", "PY_RETURN callback")
sysmon_py_yield = handit_make_fastcall(&_defs[2], _c_py_yield, "sysmon_py_yield", "PY_YIELD callback")
sysmon_py_resume = handit_make_fastcall(&_defs[3], _c_py_resume, "sysmon_py_resume", "PY_RESUME callback")
sysmon_py_throw = handit_make_fastcall(&_defs[4], _c_py_throw, "sysmon_py_throw", "PY_THROW callback")
sysmon_py_unwind = handit_make_fastcall(&_defs[5], _c_py_unwind, "sysmon_py_unwind", "PY_UNWIND callback")
noop_callback = handit_make_fastcall(&_defs[6], _c_noop, "noop_callback", "A callback that does nothing: the benchmark floor")
tsc_floor_callback = handit_make_fastcall(&_defs[7], _c_tsc_floor, "tsc_floor_callback",
                                          "A callback that stores one clock reading: the clock-storing benchmark floor")


# ---- profile-function source ------------------------------------------------------------------

cdef int profile_call(PyObject* obj, PyFrameObject* frame, int what, PyObject* arg) noexcept:
    # the C profile function; never raises into user code; always returns 0
    cdef TState* ts
    cdef int slot, unit, gen_method
    cdef CInfo* ci
    cdef PyObject* code
    cdef unsigned char how
    cdef int armed
    ts = _tstate()
    if ts == NULL:
        return 0
    if ts.prev_generation != _install_generation:
        ts.prev_generation = _install_generation
        ts.prev_profile = <void*>handit_prev_profile(ts.ident, &ts.prev_profile_obj)
    if ts.prev_profile != NULL:  # another profiler (cProfile) was here first: it keeps its events
        (<handit_tracefunc>ts.prev_profile)(ts.prev_profile_obj, frame, what, arg)
    if ts.npending and not ts.busy:
        _resolve_unwinds(ts)
    if (what != PyTrace_CALL and what != PyTrace_RETURN) or ts.busy:
        if not ts.busy:
            if what == PyTrace_C_CALL:
                gen_method = handit_gen_method(arg)
                if gen_method == 1:  # close(); other C calls (the generator's finally's too) leave it
                    ts.closing_frame = handit_closing_frame(arg)
                    ts.gen_call = <void*>arg if ts.closing_frame != NULL else NULL
                elif gen_method == 2:  # throw()
                    ts.throwing_frame = handit_closing_frame(arg)
                    ts.gen_call = <void*>arg if ts.throwing_frame != NULL else NULL
            elif ts.gen_call == <void*>arg:  # the close() or throw() returned or raised
                ts.closing_frame = ts.throwing_frame = ts.gen_call = NULL
        return 0
    slot = _current_slot(ts, handit_tstate_for(ts.fast_tstate))
    if slot == 0:
        return 0
    code = handit_frame_code_fast(frame)
    if what == PyTrace_CALL:
        ci = _cinfo(code)
        if ci == NULL or ci.generation != _generation:
            ci = _decide(code, frame)
            if ci == NULL:
                return 0
        if not ci.traced:
            return 0
        if ci.suspendable and handit_frame_lasti_units(frame) >= <int>ci.first_yield:
            _on_call(ts, NULL, slot, ci, frame, K_RESUME)
        else:
            _on_call(ts, NULL, slot, ci, frame, K_CALL)
        return 0
    ci = _traced(code)
    if ci == NULL:
        return 0
    how = 0  # how the frame left: 1 return, 2 yield, else an exception
    if HANDIT_UNWIND_ARG_IS_NULL and (arg == NULL or not ci.suspendable):
        how = 1 if arg != NULL else 0  # before 3.12 an unwind passes NULL: no lookup needed
        if arg == NULL and <void*>frame == ts.closing_frame:
            # PY310/PY311: g.close() throws GeneratorExit in at the yield; it leaves from
            # there or from a finally, and close() swallows it: no frame is told of it (it
            # was counted "abandoned", issue 11.7). The fallback's profile_callback does the
            # same. An exception other than GeneratorExit reaching the caller replaces it.
            how = 3
            ts.closing_frame = NULL
        elif arg == NULL and ci.suspendable and ci.exit_kinds != NULL and ts.throwing_frame == NULL:
            # PY310/PY311: an exception thrown in at a yield and not caught (a yield passes its
            # value, never NULL): from throw() called in C (asyncio cancelling a task) it stays an
            # exception of unknown type; a plain generator's finalizer closing it (collected while
            # suspended: close() called from C) is the close it is (issue 11 item 3)
            unit = handit_frame_lasti_units(frame)
            if (0 <= unit < PyBytes_GET_SIZE(ci.exit_kinds) and PyBytes_AS_STRING(ci.exit_kinds)[unit] == 2
                    and handit_gen_finalizing(frame, code)):
                how = 3
    elif ci.exit_kinds != NULL:
        unit = handit_frame_lasti_units(frame)
        if 0 <= unit < PyBytes_GET_SIZE(ci.exit_kinds):
            how = <unsigned char>PyBytes_AS_STRING(ci.exit_kinds)[unit]
        if not HANDIT_UNWIND_ARG_IS_NULL and how != 1 and (arg == <PyObject*>None or arg == NULL):
            # PY312+: the profile function is given None (3.12) or NULL (3.13) for an exception
            # leaving, and the pure engine None as for a `yield None`: told apart for a close()
            # (it leaves at the yield or from a finally) or throw() called from Python and a
            # finalizer's close, as the pure engine does (bar the finalizer's), not for a
            # throw() called from C (docs/capture.md)
            if <void*>frame == ts.closing_frame:
                how = 3
                ts.closing_frame = NULL
            elif how == 2 and <void*>frame == ts.throwing_frame:
                how = 0
                ts.throwing_frame = NULL
            elif how == 2 and ts.throwing_frame == NULL and handit_gen_finalizing(frame, code):
                how = 3
    else:
        return 0
    if how == 1:
        _on_return(ts, slot, ci, arg, <uint64_t>frame if ci.suspendable else 0)
    elif how == 2:
        _on_yield(ts, slot, ci, <uint64_t>frame)
    else:
        _on_unwind(ts, slot, ci, <PyObject*>_GENERATOR_EXIT if how == 3 else NULL, <uint64_t>frame if ci.suspendable else 0)
        if _remember_unwind(ts, frame):
            armed = handit_arm_exc_trace(exc_trace)
            if armed == 2:
                ts.exc_depth = 0
            if armed:
                ts.waiting_exc = 1  # the periodic drain leaves the thread's records until then
    return 0


_GENERATOR_EXIT = GeneratorExit()
_A_GEN_CLOSE = eval("(_ for _ in ())").close  # a Python generator's (Cython's have their own)
handit_learn_gen_close(<PyObject*>_A_GEN_CLOSE)
_A_GEN_THROW = eval("(_ for _ in ())").throw
handit_learn_gen_throw(<PyObject*>_A_GEN_THROW)


cdef int exc_trace(PyObject* obj, PyFrameObject* frame, int what, PyObject* arg) noexcept:
    # PY310/PY311: the trace function after a traced unwind (see handit_arm_exc_trace) until
    # the exception reaches the caller's frame, where the pending unwinds get it. Code the
    # interpreter runs in between gives events of its own frames first: a finalizer or gc
    # callback run by the collection that the caller's new traceback entry started
    # (PyTraceBack_Here allocates with the exception fetched away). Those frames are stepped
    # over (exc_depth): ending the wait at their first event let the periodic drain take the
    # records, and the unwind kept <unknown> (test_handled_in_a_loop, once in two full
    # 3.10 runs). Any event of the caller's frame but the exception says it went no further
    # (a C caller swallowed it): the wait ends. Never raises into user code; returns 0.
    cdef TState* ts = _tstate()
    if ts == NULL or _source_kind != 2:
        handit_disarm_exc_trace(exc_trace)
        return 0
    if what == PyTrace_CALL:
        ts.exc_depth += 1
        return 0
    if ts.exc_depth > 0:  # in a frame the interpreter runs meanwhile
        if what == PyTrace_RETURN:
            ts.exc_depth -= 1
        elif what == PyTrace_EXCEPTION and arg != NULL and not ts.busy and ts.npending:
            _match_unwinds(ts, PyTuple_GET_ITEM(arg, 1), PyTuple_GET_ITEM(arg, 2))  # its own unwinds'
        return 0
    handit_disarm_exc_trace(exc_trace)
    if what == PyTrace_EXCEPTION and arg != NULL and not ts.busy and ts.npending:
        ts.resolving = 1  # (set before waiting_exc is cleared: a drain holds the records throughout)
        ts.waiting_exc = 0
        _match_unwinds(ts, PyTuple_GET_ITEM(arg, 1), PyTuple_GET_ITEM(arg, 2))
    ts.waiting_exc = 0
    return 0


cdef bint _remember_unwind(TState* ts, PyFrameObject* frame) noexcept:
    # A profile function is not told which exception unwinds a frame (before 3.12 it is
    # fetched away first). The unwind is kept pending; when a later event of this thread
    # sees an exception being handled whose traceback holds the frame, the record gets its
    # type and message (_resolve_unwinds). Until then the periodic drain leaves the thread's
    # records while exc_trace waits for the caller's exception (at most _MAX_HOLD_NS);
    # any other drain ends the wait.
    cdef Chunk* c = ts.tail
    cdef int n
    if c == NULL or ts.npending >= 8:
        return 0
    n = <int>(ts.wp - c.recs)
    if n < 2 or c.recs[n - 2].kind != K_UNWIND or not c.recs[n - 2].ext:
        return 0
    ts.pending_ext[ts.npending] = <void*>&c.recs[n - 1]
    ts.pending_frame[ts.npending] = <void*>frame
    ts.pending_lasti[ts.npending] = handit_frame_lasti_units(frame)
    ts.npending += 1
    return 1


cdef void _resolve_unwinds(TState* ts) noexcept:
    # never raises; see _remember_unwind
    cdef PyObject* exc = handit_handled_exception()
    if exc == NULL:
        PyErr_Clear()
        return
    _match_unwinds(ts, exc, NULL)
    Py_DECREF(<object>exc)


cdef void _match_unwinds(TState* ts, PyObject* exc, PyObject* traceback) noexcept:
    # never raises: the pending unwinds whose frame is in the traceback (exc's own when
    # NULL) get exc's type and message.
    # The message can need Python code (a standard-library __str__, e.g. HTTPError's) that
    # lets the GIL go. While it runs, ts.resolving keeps the records where they are: the
    # periodic drain leaves the thread, any other drain waits for it (_unwinds_unresolved). Only
    # a drain that waited in vain takes the records first (ts.drains moves): then nothing
    # is written, as the pointers are stale; the type, read without running Python code, is
    # written first for that case.
    cdef int k, n, kept = 0
    cdef uint32_t seen = ts.drains
    cdef list matched = []
    ts.busy = 1
    ts.resolving = 1
    handit_headroom(1)
    try:
        # a frame and where it stopped: once a frame is freed (its exception swallowed in C:
        # getattr's default, asyncio ending a task) the next frame can take its address, and
        # that one's exception gave a wrong type to the unwind still pending for it
        frames = set()
        tb = (<object>exc).__traceback__ if traceback == NULL else <object>traceback
        while tb is not None:
            frames.add((id(tb.tb_frame), tb.tb_lasti // 2))
            tb = tb.tb_next
        for k in range(ts.npending):
            if (<size_t>ts.pending_frame[k], ts.pending_lasti[k]) in frames:
                matched.append(<size_t>ts.pending_ext[k])
        if matched:
            _write_texts(ts, seen, matched, (type(<object>exc).__qualname__, ""))
            _write_texts(ts, seen, matched, (type_name(type(<object>exc)), _previewer.exception_message(<object>exc)))
        if ts.drains == seen:  # resolved: no longer pending (a drain since then ended every wait)
            n = ts.npending
            for k in range(n):
                if (<size_t>ts.pending_frame[k], ts.pending_lasti[k]) not in frames:
                    ts.pending_ext[kept] = ts.pending_ext[k]
                    ts.pending_frame[kept] = ts.pending_frame[k]
                    ts.pending_lasti[kept] = ts.pending_lasti[k]
                    kept += 1
            ts.npending = kept
    except KeyboardInterrupt:
        ts.npending = 0
        _interrupt_again()
    except BaseException:
        ts.npending = 0
    handit_headroom(0)
    ts.resolving = 0
    ts.busy = 0


cdef void _write_texts(TState* ts, uint32_t seen, list exts, tuple text) noexcept:
    # never raises; the unwind records' texts, if no drain has taken them since `seen`
    cdef RecordExt* ext
    if ts.drains != seen:
        return
    for address in exts:
        ext = <RecordExt*><size_t>address
        Py_INCREF(text)
        Py_XDECREF(ext.aux)
        ext.aux = <PyObject*>text


def profile_callback(frame, event, arg):
    """Installed through threading.setprofile: swaps the C profile function into a new thread."""
    cdef TState* ts = _tstate()
    if ts != NULL:  # it had no profile function before ours (a remembered one of an exited
        ts.prev_generation = _install_generation  # thread with the same id is not its)
        ts.prev_profile = NULL
        ts.prev_profile_obj = NULL
    PyEval_SetProfile(profile_call, NULL)
    if event == "call":
        profile_call(NULL, <PyFrameObject*>frame, PyTrace_CALL, NULL)


# ---- install / uninstall ----------------------------------------------------------------------

def install(source, policy):
    """Start delivering events for active sessions.

    Args:
        source: "sysmon" (3.12+) or "setprofile".
        policy: the filter and capture rules.
    Raises:
        HanditError: no sys.monitoring tool id is free.
    """
    global _source_kind, _tool_id, _failed, _DISABLE, _install_generation
    set_policy(policy)
    _failed = False
    if source == "sysmon":
        _DISABLE = sys.monitoring.DISABLE
        _source_kind = 1
        _tool_id = claim_sysmon(sys.modules[__name__])
    else:
        _source_kind = 2
        _put_profile_function()


cdef _put_profile_function():
    # every thread now (chaining to a profiler already there) but handit's own, which live
    # on from an earlier period (the drain thread kept for LINGER_S), and threads started
    # from now on
    global _install_generation
    cdef unsigned long internal[64]
    cdef int n = 0
    cdef TState* ts
    _install_generation += 1  # each thread looks its previous profile function up again
    threading.setprofile(profile_callback)
    handit_q_lock()
    ts = _all_states
    while ts != NULL and n < 64:
        if ts.internal and not ts.exited:
            internal[n] = ts.ident
            n += 1
        ts = ts.next_all
    handit_q_unlock()
    handit_set_profile_all(profile_call, internal, n)


cdef _take_profile_function():
    # from the threads that still have it (a profiler set since keeps its place), the
    # profilers it chained to put back; a threading hook set since is left to its owner
    if threading.getprofile() is profile_callback:
        threading.setprofile(None)
    handit_remove_profile_all(profile_call)
    handit_disarm_exc_trace(exc_trace)  # other threads' take themselves out at their next event


def ensure_thread():
    """Make sure the calling thread delivers events (every thread already does here)."""


def profiled_threads():
    """The ids of the threads that have handit's profile function now (for tests)."""
    cdef unsigned long idents[256]
    cdef int n = handit_profiled_threads(profile_call, idents, 256)
    return {idents[i] for i in range(n)}


def pause():
    """No session is open: deliver no event until :func:`resume`, keeping the installation
    (decisions, the sys.monitoring tool, the drain's state) for the next session.

    The profile-function source leaves every thread, so the program between sessions runs
    unprofiled and a profiler the program starts meanwhile has the slot to itself; sys.monitoring
    stays registered (its idle callbacks return at once; excluded code stays disabled).
    """
    if _source_kind == 2:
        _take_profile_function()


def resume():
    """The first session after :func:`pause`: deliver events again, on every thread."""
    if _source_kind == 2:
        _put_profile_function()


def uninstall():
    """Stop delivering events; leave no callback, local event or disabled location behind."""
    global _source_kind, _tool_id
    if _source_kind == 1 and _tool_id is not None:
        release_sysmon(_tool_id, _local_codes)
    elif _source_kind == 2:
        _take_profile_function()
    _tool_id = None
    _source_kind = 0


def set_policy(policy):
    """Use new filter rules; every code object is decided again (reusing the decision
    where the rules it depends on are unchanged)."""
    global _policy, _previewer, _generation, _capture, _bounded, _budget, _key_id
    _bounded = bool(policy.config.bounded_memory)
    _budget = <size_t>policy.config.max_buffer_bytes
    _policy = policy
    _set_previewer(policy.previewer)
    _capture = 1 if policy.capture >= ARGS else 0
    _key_id = _key_ids.setdefault(policy.decision_key, len(_key_ids) + 1)
    _generation += 1
    _set_fast_tstate(policy.config.fast_tstate)
    if _tool_id is not None:
        sys.monitoring.restart_events()


cdef void _set_fast_tstate(bint on) noexcept:
    # HANDIT_FAST_TSTATE (GIL held; the callbacks read ts.fast_tstate only with the GIL):
    # off takes every thread to the getter now; on gives the fast read back to the threads
    # that proved it, and lets threads checked from now on prove it
    cdef TState* ts
    handit_set_fast_tstate(on)
    handit_q_lock()
    ts = _all_states
    while ts != NULL:
        ts.fast_tstate = on and ts.fast_tstate_proven == 1
        ts = ts.next_all
    handit_q_unlock()


def set_backlog_hook(hook):
    """Call ``hook()`` (no arguments; a drain) from a recording thread whose records wait past
    HANDIT_MAX_BUFFER_BYTES, instead of letting them pile up; None: no hook."""
    global _backlog_hook
    _backlog_hook = hook


def activate(int slot):
    """Let records for ``slot`` through."""
    _active[slot] = 1
    _invalidate_all()


cdef inline void _enc_lock_holding_gil() noexcept:
    # the GIL is let go only if the drain thread holds the lock (releasing and taking the
    # GIL back costs more than a session's start and stop otherwise spend here)
    if not handit_enc_trylock():
        with nogil:
            handit_enc_lock()


def take_counts(int slot):
    """``(calls, exceptions, dropped)`` for ``slot`` since the last call; resets them."""
    _enc_lock_holding_gil()  # the drain thread counts the calls it encodes
    out = (_n_calls[slot], _n_exceptions[slot], _n_dropped[slot])
    _gen_keys_free(slot)  # a new session (or none) on this slot: its keys start again
    _n_calls[slot] = 0
    _n_exceptions[slot] = 0
    _n_dropped[slot] = 0
    handit_enc_unlock()
    return out


def deactivate(int slot):
    """Drop records for ``slot`` from now on (work outliving its session)."""
    _active[slot] = 0
    _invalidate_all()


cdef void _invalidate() noexcept:
    # handit set its ContextVar in this thread: read it again on the next event
    cdef TState* ts = <TState*>handit_get_tls()
    if ts != NULL:
        ts.ctx = _NO_CTX


cdef void _invalidate_all() noexcept:
    # a session slot was switched on or off: every thread reads its slot again on its next
    # event (the fast paths trust TState.slot_tail, which says whether it is active)
    cdef TState* ts
    handit_q_lock()  # (the list, not the fields: those are read and written with the GIL)
    ts = _all_states
    while ts != NULL:
        ts.ctx = _NO_CTX
        ts = ts.next_all
    handit_q_unlock()


def set_slot(int slot):
    """Make ``slot`` the current thread's or task's session; returns a token for reset_slot."""
    token = session_var.set(slot)
    _invalidate()
    return token


def reset_slot(token):
    """Undo a set_slot (raises ValueError if made in another context)."""
    try:
        session_var.reset(token)
    finally:
        _invalidate()


def mark_internal_thread():
    """The calling thread is handit's own: never record it."""
    cdef TState* ts = _tstate()
    if ts != NULL:
        ts.busy = 1
        ts.internal = 1
    if _source_kind == 2:  # not even the profile function's call: this thread is never traced
        PyEval_SetProfile(NULL, NULL)
    set_slot(0)


def background_chunks():
    """How many full chunks the drain thread has encoded without the GIL so far."""
    return _n_background


def fast_thread_state():
    """Whether the calling thread reads CPython's thread state straight from its TLS slot."""
    cdef TState* ts = _tstate()
    return ts != NULL and ts.fast_tstate != 0


def code_info(index):
    """The CodeInfo stored under ``index``."""
    return _codes[index]


def code_count():
    """How many code infos the table holds."""
    return len(_codes)


def codes_since(start):
    """Code infos added at or after ``start``."""
    return _codes[start:]


def source():
    """The installed event source, or None."""
    return {1: "sysmon", 2: "setprofile"}.get(_source_kind)


def tool_id():
    """The sys.monitoring tool id in use, or None."""
    return _tool_id


handit_q_cond_init()
handit_exit_key_init()


def _reinit_sync_in_child():
    # the drain thread may have held a lock at fork(), with or without a session open;
    # of the parent's threads only the forking one lives on here
    cdef TState* me = <TState*>handit_get_tls()
    cdef TState* ts = _all_states
    handit_sync_reinit()
    while ts != NULL:
        if ts != me:
            ts.exited = 1
        ts = ts.next_all


def after_fork_in_child():
    """Start clean after fork(): new locks, no pending records, no active session.

    Called first in the child by handit.lifecycle: the locks are re-initialised before
    anything else may take one.
    """
    global _held, _held_peak, _pre_total
    cdef TState* ts = _all_states
    cdef int i
    _reinit_sync_in_child()
    for i in range(65536):
        _active[i] = 0
    while ts != NULL:
        ts.ctx = _NO_CTX  # no session is active here (the slot is read again)
        ts.head = NULL  # the parent's records (and their references) stay the parent's
        ts.qlast = NULL
        _set_tail(ts, NULL)
        ts.nchunks = 0
        for i in range(ts.nout):
            free(ts.out[i].data)
        ts.nout = 0
        for i in range(ts.nready):
            free(ts.ready[i].data)
        ts.nready = 0
        ts.pre_bytes = 0
        ts = ts.next_all
    _held = _held_peak = _pre_total = 0


# ---- drain: records -> encoded blocks (block format: handit/records.py, handit/reader.py) ------

cdef int _reserve(OutBuf* b, size_t extra) noexcept nogil:
    cdef size_t cap
    cdef char* p
    if b.len + extra <= b.cap:
        return 0
    cap = b.cap * 2 if b.cap else 4096
    while cap < b.len + extra:
        cap *= 2
    p = <char*>realloc(b.data, cap)
    if p == NULL:
        return -1
    b.data = p
    b.cap = cap
    return 0


cdef inline char* _put_varint_at(char* p, uint64_t n) noexcept nogil:
    # writes n as a LEB128 varint at p (10 bytes at most); returns the byte after it
    while n > 0x7F:
        p[0] = <char>((n & 0x7F) | 0x80)
        p += 1
        n >>= 7
    p[0] = <char>n
    return p + 1


cdef inline void _put_varint(OutBuf* b, uint64_t n) noexcept nogil:
    # caller reserved 10 bytes
    b.len = _put_varint_at(b.data + b.len, n) - b.data


cdef inline uint64_t _zigzag(int64_t v) noexcept nogil:
    return <uint64_t>((v << 1) ^ (v >> 63))


cdef int _put_string(OutBuf* b, object text) except -1:
    cdef Py_ssize_t n = 0
    cdef const char* p = PyUnicode_AsUTF8AndSize(text, &n)  # cached; ASCII: no copy
    cdef bytes data
    if p == NULL:  # lone surrogates: escaped, as the fallback does
        PyErr_Clear()
        data = text.encode("utf-8", "backslashreplace")
        p = <const char*>data
        n = len(data)
    if _reserve(b, n + 10) < 0:
        raise MemoryError
    _put_varint(b, n)
    memcpy(b.data + b.len, p, n)
    b.len += n
    return 0


ctypedef struct FloatText:
    double value
    int length
    char text[32]

cdef long long _INT_LIMIT = 1000000000000  # ints previewed without Python: |i| < 10**12 (typed: a bare literal this big is a Python int to Cython)
cdef FloatText _float_cache[256]  # formatted floats by value: repeated values are formatted once


cdef inline int _format_int(char* out, long long i) noexcept:
    # decimal digits of |i| < 10**12, with its sign; returns the length
    cdef char rev[24]
    cdef int n = 0, k = 0
    cdef unsigned long long u = <unsigned long long>(-i) if i < 0 else <unsigned long long>i
    while True:
        rev[n] = <char>(48 + u % 10)
        n += 1
        u //= 10
        if u == 0:
            break
    if i < 0:
        out[k] = b'-'
        k += 1
    while n > 0:
        n -= 1
        out[k] = rev[n]
        k += 1
    return k


include "_args.pxi"


cdef inline OutBuf* _buf_for(OutBuf* bufs, int* nbufs, uint16_t slot, int64_t t, unsigned long ident) noexcept nogil:
    # the block being built for `slot`; NULL when 64 other slots hold every buffer
    cdef int j
    cdef OutBuf* b
    for j in range(nbufs[0]):
        if bufs[j].slot == slot:
            return &bufs[j]
    if nbufs[0] == 64:
        return NULL
    b = &bufs[nbufs[0]]
    nbufs[0] += 1
    b.data = NULL
    b.len = 0
    b.cap = 0
    b.slot = slot
    b.last = t
    if _reserve(b, 32) == 0:
        _put_varint(b, ident)
        _put_varint(b, <uint64_t>t)
    return b


cdef inline int64_t _epoch_ns(uint64_t ticks, int64_t epoch0, uint64_t ticks0, double inv) noexcept nogil:
    return epoch0 + <int64_t>((<int64_t>(ticks - ticks0)) * inv)


cdef size_t BLOCK_BYTES = 1 << 16  # records.BLOCK_BYTES


cdef int _encode_plain(Chunk* chunk, int i, OutBuf* bufs, int* nbufs, int64_t epoch0, uint64_t ticks0,
                       double inv, unsigned long ident) noexcept nogil:
    # Encodes records from i on while they need no Python object (all but unwinds and gaps):
    # pure C, run without the GIL so the drain thread works beside the traced program.
    # Returns the index it stopped at: such a record, a block of BLOCK_BYTES or more to cut
    # (so no block grows past it by more than a record), or no buffer free.
    cdef Record* r
    cdef OutBuf* b = NULL
    cdef int64_t t
    cdef char* p
    cdef int n = chunk.n
    while i < n:
        r = &chunk.recs[i]
        if r.ext and (r.kind == K_UNWIND or r.kind == K_GAP):
            return i
        t = _epoch_ns(r.ts, epoch0, ticks0, inv)
        if b == NULL or b.slot != r.slot:
            b = _buf_for(bufs, nbufs, r.slot, t, ident)
            if b == NULL:
                return i
        if r.ext:  # a key (generator), a blob of previews or a pause: no Python object
            _encode_keyed(b, r, <RecordExt*>(r + 1), t, inv)
            i += 2
            if b.len >= BLOCK_BYTES:
                return i
            continue
        i += 1
        if b.len + 24 > b.cap and _reserve(b, 24) < 0:
            continue
        p = b.data + b.len
        p[0] = <char>r.kind
        p += 1
        if r.kind == K_CALL:
            _n_calls[r.slot] += 1
            p = _put_varint_at(p, r.code)
        p = _put_varint_at(p, _zigzag(t - b.last))
        b.last = t
        b.len = p - b.data
        if b.len >= BLOCK_BYTES:
            return i
    return i


cdef int64_t _cal_epoch0 = 0      # the calibration the drain thread encodes with (enc lock)
cdef uint64_t _cal_ticks0 = 0
cdef double _cal_inv = 0.0


cdef bint _out_ready(TState* ts) noexcept nogil:
    # the thread's encoded-block buffers exist (enc lock held)
    if ts.out == NULL:
        ts.out = <OutBuf*>calloc(64, sizeof(OutBuf))
    return ts.out != NULL


cdef size_t _pre_bytes(TState* ts) noexcept nogil:
    # bytes encoded for the thread and not yet handed to sessions (enc lock held)
    cdef size_t n = 0
    cdef int j
    for j in range(ts.nout):
        n += ts.out[j].len
    for j in range(ts.nready):
        n += ts.ready[j].len
    return n


cdef int _cut_ready(TState* ts) noexcept nogil:
    # Drain thread (enc lock): the thread's blocks of BLOCK_BYTES or more are finished, to be
    # handed out as they are by the next drain() (before anything newer of the thread).
    # Returns how many; -1 when out of memory.
    cdef int j = 0, moved = 0
    cdef ReadyBlock* grown
    while j < ts.nout:
        if ts.out[j].len >= BLOCK_BYTES:
            if ts.nready == ts.capready:
                grown = <ReadyBlock*>realloc(ts.ready, (ts.capready * 2 + 8) * sizeof(ReadyBlock))
                if grown == NULL:
                    return -1
                ts.ready = grown
                ts.capready = ts.capready * 2 + 8
            ts.ready[ts.nready].data = ts.out[j].data
            ts.ready[ts.nready].len = ts.out[j].len
            ts.ready[ts.nready].slot = ts.out[j].slot
            ts.nready += 1
            moved += 1
            ts.nout -= 1
            ts.out[j] = ts.out[ts.nout]
        else:
            j += 1
    return moved


cdef Chunk* _take_plain(TState* ts) noexcept nogil:
    # the oldest queued chunk if it holds only timing records, else NULL (takes the q lock)
    cdef Chunk* c
    handit_q_lock()
    c = ts.head
    if c != NULL and not c.has_ext:
        ts.head = c.next
        if ts.head == NULL:
            ts.qlast = NULL
        ts.nchunks -= 1
    else:
        c = NULL
    handit_q_unlock()
    return c


cdef void _encode_queued_plain() noexcept nogil:
    global _n_background, _pre_total
    # Drain thread, no GIL: encode every thread's queued chunks without unwinds or gaps into
    # blocks (handed to sessions by the next drain()), cut at BLOCK_BYTES. Stops at a chunk
    # with those, or when what waits encoded reaches the budget (the records wait then, and
    # a recording thread past the budget drains them itself).
    cdef TState* ts
    cdef Chunk* c
    cdef int i
    cdef size_t before, grown
    handit_enc_lock()
    handit_q_lock()
    ts = _all_states
    handit_q_unlock()
    while ts != NULL:
        while _out_ready(ts) and _pre_total < _budget:
            c = _take_plain(ts)
            if c == NULL:
                break
            before = _pre_bytes(ts)
            i = c.start
            while True:
                i = _encode_plain(c, i, ts.out, &ts.nout, _cal_epoch0, _cal_ticks0, _cal_inv, ts.ident)
                if _cut_ready(ts) <= 0 and i < c.n:  # 64 sessions hold every buffer: the rest waits for drain()
                    break
                if i >= c.n:
                    break
            grown = _pre_bytes(ts) - before
            ts.pre_bytes += grown
            _pre_total += grown
            _hold(grown)
            handit_q_lock()
            if i < c.n:
                c.start = i
                c.next = ts.head
                ts.head = c
                if ts.qlast == NULL:
                    ts.qlast = c
                ts.nchunks += 1
                handit_q_unlock()
                break
            _release_chunk(c)
            handit_q_unlock()
            _n_background += 1
        ts = ts.next_all
    handit_enc_unlock()


def encode_while_waiting(double seconds, calibration):
    """Drain thread: for ``seconds``, encode full timing-only chunks as they are queued.

    Runs without the GIL, beside the traced program, converting times with
    ``calibration`` (a :class:`handit.clock.Calibration`); what it encodes reaches the
    sessions with the next :func:`drain`.
    """
    global _cal_epoch0, _cal_ticks0, _cal_inv
    cdef uint64_t deadline = handit_mono_ns() + <uint64_t>(seconds * 1e9)
    cdef uint64_t seen = _n_queued - 1
    cdef uint64_t now
    cdef int64_t epoch0 = calibration.epoch0
    cdef uint64_t ticks0 = calibration.ticks0
    cdef double inv = 1.0 / calibration.scale
    with nogil:
        handit_enc_lock()
        _cal_epoch0, _cal_ticks0, _cal_inv = epoch0, ticks0, inv
        handit_enc_unlock()
        handit_q_lock()
        while True:
            now = handit_mono_ns()
            if now >= deadline:
                break
            if _n_queued == seen:  # nothing new: sleep until a chunk is queued or time is up
                handit_q_wait(<double>(deadline - now) / 1e9)
                continue
            seen = _n_queued
            handit_q_unlock()
            _encode_queued_plain()
            handit_q_lock()
        handit_q_unlock()


cdef OutBuf* _buf_or_flush(TState* ts, uint16_t slot, int64_t t, list out) noexcept:
    # the block being built for `slot` on this thread (never NULL); with more live sessions
    # on one thread than buffers, one block is handed out early to make room
    cdef OutBuf* b = _buf_for(ts.out, &ts.nout, slot, t, ts.ident)
    if b == NULL:
        _flush_buf(&ts.out[63], out)
        ts.nout = 63
        b = _buf_for(ts.out, &ts.nout, slot, t, ts.ident)
    return b


cdef uint64_t MAX_GEN_KEYS = 65536  # records.MAX_GEN_KEYS


ctypedef struct GenKeys:
    # One session's small generator keys: frame -> number from 1, as records.GenKeys (the pure
    # twin, which says why); an open-addressing table (linear probing, backward-shift delete)
    # because every suspend and resume goes through it
    uint64_t* frames      # 0: empty
    uint32_t* numbers
    size_t cap            # a power of two
    size_t count
    uint32_t* free        # numbers given back, reused first
    size_t nfree
    size_t capfree
    uint64_t next


cdef GenKeys* _gen_keys[65536]  # per session slot (the enc lock held: drain() or the drain thread)


cdef inline size_t _gen_hash(uint64_t frame, size_t cap) noexcept nogil:
    return <size_t>((frame >> 4) * <uint64_t>0x9E3779B97F4A7C15 >> 20) & (cap - 1)


cdef void _gen_keys_free(int slot) noexcept nogil:
    cdef GenKeys* g = _gen_keys[slot]
    if g != NULL:
        free(g.frames)
        free(g.numbers)
        free(g.free)
        free(g)
        _gen_keys[slot] = NULL


cdef int _gen_grow(GenKeys* g) noexcept nogil:
    # doubles the table; -1 when out of memory
    cdef size_t cap = g.cap * 2 if g.cap else 64
    cdef uint64_t* frames = <uint64_t*>calloc(cap, sizeof(uint64_t))
    cdef uint32_t* numbers = <uint32_t*>malloc(cap * sizeof(uint32_t))
    cdef size_t i, h
    if frames == NULL or numbers == NULL:
        free(frames)
        free(numbers)
        return -1
    for i in range(g.cap):
        if g.frames[i]:
            h = _gen_hash(g.frames[i], cap)
            while frames[h]:
                h = (h + 1) & (cap - 1)
            frames[h] = g.frames[i]
            numbers[h] = g.numbers[i]
    free(g.frames)
    free(g.numbers)
    g.frames, g.numbers, g.cap = frames, numbers, cap
    return 0


cdef uint64_t _gen_key(int slot, uint64_t frame) noexcept nogil:
    # the number of the generator at `frame` (a new one if it has none); 0 when out of memory
    cdef GenKeys* g = _gen_keys[slot]
    cdef size_t h
    cdef uint32_t k
    if g == NULL:
        g = _gen_keys[slot] = <GenKeys*>calloc(1, sizeof(GenKeys))
        if g == NULL:
            return 0
        g.next = 1
    if (g.count + 1) * 2 > g.cap and _gen_grow(g) < 0:
        return 0
    h = _gen_hash(frame, g.cap)
    while g.frames[h]:
        if g.frames[h] == frame:
            return g.numbers[h]
        h = (h + 1) & (g.cap - 1)
    if g.nfree:
        g.nfree -= 1
        k = g.free[g.nfree]
    else:
        if g.next > MAX_GEN_KEYS:  # abandoned generators piled up: start again
            memset(g.frames, 0, g.cap * sizeof(uint64_t))
            g.count = 0
            g.next = 1
            h = _gen_hash(frame, g.cap)
        k = <uint32_t>g.next
        g.next += 1
    g.frames[h] = frame
    g.numbers[h] = k
    g.count += 1
    return k


cdef void _gen_release(int slot, uint64_t frame) noexcept nogil:
    # the generator at `frame` has finished: its number is free
    cdef GenKeys* g = _gen_keys[slot]
    cdef size_t h, j, home
    cdef uint32_t* grown
    if g == NULL or g.cap == 0:
        return
    h = _gen_hash(frame, g.cap)
    while g.frames[h] != frame:
        if not g.frames[h]:
            return
        h = (h + 1) & (g.cap - 1)
    if g.nfree == g.capfree:
        grown = <uint32_t*>realloc(g.free, (g.capfree * 2 + 16) * sizeof(uint32_t))
        if grown != NULL:
            g.free = grown
            g.capfree = g.capfree * 2 + 16
    if g.nfree < g.capfree:
        g.free[g.nfree] = g.numbers[h]
        g.nfree += 1
    g.frames[h] = 0
    g.count -= 1
    j = h
    while True:  # backward shift: entries after the hole that may sit in it move back
        j = (j + 1) & (g.cap - 1)
        if not g.frames[j]:
            return
        home = _gen_hash(g.frames[j], g.cap)
        if (j > h and (home <= h or home > j)) or (j < h and home <= h and home > j):
            g.frames[h] = g.frames[j]
            g.numbers[h] = g.numbers[j]
            g.frames[j] = 0
            h = j


cdef double _enc_inv = 1.0  # ns per clock tick, for the pauses drain() encodes


cdef inline void _take_blob(OutBuf* b, Record* r, PyObject* blob) noexcept nogil:
    # a record's blob appended to a block (room reserved); freed unless it is in the chunk
    cdef uint32_t n
    if r.ext == 1:
        _put_blob(b, blob)
        return
    memcpy(&n, blob, 4)
    memcpy(b.data + b.len, (<char*>blob) + 4, n)
    b.len += n


cdef void _encode_keyed(OutBuf* b, Record* r, RecordExt* ext, int64_t t, double inv) noexcept nogil:
    # a call, return, yield, resume, throw or pause with a key, a blob or a pause's ticks
    # (no Python object): encoded without the GIL, so generators' and previews' records are
    # encoded beside the program too. Takes the record's blob.
    cdef PyObject* raux = ext.aux
    cdef uint64_t rkey = ext.key
    cdef int64_t dts
    cdef uint8_t tag = r.kind
    cdef uint32_t size = 0
    if raux != NULL and _holds_blob(r.kind):
        memcpy(&size, raux, 4)
    if _reserve(b, 40 + size) < 0:  # room for all of it: nothing below can fail
        if _holds_blob(r.kind) and r.ext == 1:  # (2: the blob is in the chunk, see _keep_blob)
            free(raux)
        return
    dts = t - b.last
    b.last = t
    if rkey and r.kind < K_HANDOFF:  # a generator's frame: written as its small key (a hand-over's token as it is)
        if r.kind == K_RETURN:
            _gen_release(r.slot, rkey)  # its final exit: the key is free again
            rkey = 0
        else:
            rkey = _gen_key(r.slot, rkey)
    if r.kind == K_CALL:
        _n_calls[r.slot] += 1
        if raux != NULL:
            tag |= 0x80
        if rkey:
            tag |= 0x40
        b.data[b.len] = <char>tag
        b.len += 1
        _put_varint(b, r.code)
        _put_varint(b, _zigzag(dts))
        if rkey:
            _put_varint(b, rkey)
        if raux != NULL:
            _take_blob(b, r, raux)  # (room reserved above)
    elif r.kind == K_RETURN:
        if raux != NULL:
            tag |= 0x80
        b.data[b.len] = <char>tag
        b.len += 1
        _put_varint(b, _zigzag(dts))
        if raux != NULL:
            _take_blob(b, r, raux)
    else:
        b.data[b.len] = <char>tag
        b.len += 1
        _put_varint(b, _zigzag(dts))
        _put_varint(b, rkey)
        if r.kind == K_PAUSE or r.kind == K_STEP:  # then the time suspended or running, in ns
            _put_varint(b, <uint64_t>(<double>(<uintptr_t>raux) * inv))
        elif r.kind == K_TASK or r.kind == K_RENAME:  # then its name (records.task_name_ref)
            _put_varint(b, r.code)


cdef int _encode_valued(OutBuf* b, Record* r, RecordExt* ext, int64_t t) except -1:
    # one record with a value or key: an unwind (its texts are Python strings, so this runs
    # with the GIL) or a gap here; the others go to _encode_keyed
    cdef PyObject* raux = ext.aux
    cdef int64_t dts
    cdef object aux
    if r.kind != K_UNWIND and r.kind != K_GAP:
        _encode_keyed(b, r, ext, t, _enc_inv)
        return 0
    if _reserve(b, 40) < 0:
        _free_aux(r.kind, raux)
        return 0
    if raux != NULL:
        aux = <object>raux
        Py_DECREF(aux)  # the record's reference; `aux` holds one
    dts = t - b.last
    b.last = t
    b.data[b.len] = <char>r.kind
    b.len += 1
    _put_varint(b, _zigzag(dts))
    if r.kind == K_GAP:
        _put_varint(b, ext.key)  # how many records were dropped
        return 0
    if ext.key:  # a generator's final exit: its key is free again
        _gen_release(r.slot, ext.key)
    _n_exceptions[r.slot] += 1
    _put_string(b, "<unknown>" if raux == NULL else aux[0])
    _put_string(b, "" if raux == NULL else aux[1])
    return 0


cdef uint64_t _MAX_HOLD_NS = 100000000  # 100 ms: a thread stopped in C right after an unwind
cdef double _RESOLVE_WAIT_S = 1.0  # what a session's drain waits at most for a message being made


cdef bint _unwinds_unresolved(TState* ts, bint periodic) noexcept:
    # PY310/PY311, another thread's records in drain(): whether they stay for the next drain,
    # because an unwind among them waits for its type and message (issue 11.4). Taken, it
    # would keep <unknown>, or a type and no message. The periodic drain leaves them while
    # the text is being made (standard-library code: it ends), and while exc_trace waits for
    # the caller's exception event (for at most _MAX_HOLD_NS); any other drain (a session's
    # stop or read) waits, the GIL released, for a text being made, then takes them.
    # Never raises.
    cdef uint64_t now = handit_mono_ns()
    cdef uint64_t deadline
    if periodic and ts.resolving:
        return 1
    if periodic and ts.npending and ts.waiting_exc:
        if ts.held_since == 0:
            ts.held_since = now
        if now - ts.held_since < _MAX_HOLD_NS:
            return 1
    ts.held_since = 0
    deadline = now + <uint64_t>(_RESOLVE_WAIT_S * 1e9)
    while ts.resolving and handit_mono_ns() < deadline:  # (checked holding the GIL: the thread is stopped then)
        with nogil:
            handit_q_lock()
            handit_q_wait(0.0005)
            handit_q_unlock()
    return 0


cdef Chunk* _take_all(TState* ts) noexcept:
    # every chunk of the thread, oldest first: the queued ones, then the one being written
    # (its writer is stopped: drain() holds the GIL)
    cdef Chunk* chunk
    cdef Chunk* cur
    _sync_tail(ts)
    handit_q_lock()
    chunk = ts.head
    cur = ts.tail
    if chunk == NULL:
        chunk = cur
    elif cur != NULL:
        ts.qlast.next = cur
    ts.head = NULL
    ts.qlast = NULL
    _set_tail(ts, NULL)
    ts.nchunks = 0
    handit_q_unlock()
    ts.npending = 0  # pending unwinds point into the chunks taken here: their wait ends
    ts.waiting_exc = 0
    ts.held_since = 0  # (a drain of its own thread does not pass _unwinds_unresolved: a stale
                       # start would end the next wait at once)
    ts.drains += 1
    return chunk


def drain(calibration, previewer, route=None):
    """Turn every pending record into encoded blocks, one per (session slot, thread).

    Args:
        calibration: a :class:`handit.clock.Calibration` for this engine's clock.
        previewer: turns kept values into redacted preview strings.
        route: called with ``(slot, block)`` for each block, in order, each block made
            just before its call (the encoded bytes wait in memory Python does not
            allocate: under ``tracemalloc`` a drain shows one block at most).
    Returns:
        ``(slot, block)`` pairs in the block format of :mod:`handit.records`; with
        ``route``, the number of blocks routed.
    """
    cdef TState* ts
    cdef Chunk* chunk
    cdef Chunk* nxt
    cdef Record* r
    cdef OutBuf* b
    cdef int i, j
    cdef int64_t t
    cdef double inv
    cdef int64_t epoch0
    cdef uint64_t ticks0
    cdef list out = []
    cdef list states
    cdef TState* me = <TState*>handit_get_tls()
    cdef bint periodic = (me != NULL and me.busy) or is_internal_thread()  # handit's drain thread (or a thread handing over)
    global _enc_inv
    calibration.refine()
    inv = 1.0 / calibration.scale
    _enc_inv = inv
    ticks0 = calibration.ticks0
    epoch0 = calibration.epoch0
    with nogil:
        handit_enc_lock()  # the drain thread may be encoding a chunk: wait for it
    try:
        # oldest thread first (the list is newest first): work handed to a newer thread is read
        # after the HANDOFF marker of the thread that handed it over (reader.TraceBuilder);
        # states are freed only below (_free_exited_states), under the enc lock held here
        states = []
        handit_q_lock()
        ts = _all_states
        while ts != NULL:
            states.append(<uintptr_t>ts)
            ts = ts.next_all
        handit_q_unlock()
        for state in reversed(states):
            ts = <TState*><uintptr_t>state
            if ts != me and _unwinds_unresolved(ts, periodic):
                continue
            if not _out_ready(ts):
                raise MemoryError
            for j in range(ts.nready):  # the drain thread's finished blocks come first
                _flush_ready(&ts.ready[j], out)
            ts.nready = 0
            chunk = _take_all(ts)
            Py_XDECREF(ts.last_exc)
            Py_XDECREF(ts.last_exc_text)
            ts.last_exc = NULL
            ts.last_exc_text = NULL
            while chunk != NULL:
                i = chunk.start
                while i < chunk.n:
                    if chunk.has_ext:
                        i = _encode_plain(chunk, i, ts.out, &ts.nout, epoch0, ticks0, inv, ts.ident)
                    else:
                        with nogil:
                            i = _encode_plain(chunk, i, ts.out, &ts.nout, epoch0, ticks0, inv, ts.ident)
                    _cut_full(ts, out)  # (where it stopped for a block that is full)
                    if i >= chunk.n:
                        break
                    r = &chunk.recs[i]
                    t = _epoch_ns(r.ts, epoch0, ticks0, inv)
                    b = _buf_or_flush(ts, r.slot, t, out)
                    if not r.ext:  # a plain record that found no free buffer: room is made now
                        continue
                    _encode_valued(b, r, <RecordExt*>&chunk.recs[i + 1], t)
                    i += 2
                    if b.len >= BLOCK_BYTES:  # previews make big records: cut at the record
                        _cut_full(ts, out)
                nxt = chunk.next
                handit_q_lock()
                _release_chunk(chunk)
                handit_q_unlock()
                chunk = nxt
                _cut_full(ts, out)
            if ts.gap_count:  # records dropped after the last one taken: the gap ends the block
                t = _epoch_ns(handit_ticks(), epoch0, ticks0, inv)
                b = _buf_or_flush(ts, <uint16_t>ts.gap_slot, t, out)
                if _reserve(b, 24) == 0:
                    b.data[b.len] = <char>K_GAP
                    b.len += 1
                    _put_varint(b, _zigzag(t - b.last))
                    _put_varint(b, ts.gap_count)
                    b.last = t
                ts.gap_count = 0
            for j in range(ts.nout):
                _flush_buf(&ts.out[j], out)
            ts.nout = 0
            _unhold_pre(ts)
        _free_exited_states()
    finally:
        handit_enc_unlock()
    return _hand_out(out, route)


cdef object _hand_out(list out, object route):
    # the encoded blocks (slot, address, length) as bytes: to `route` one at a time, each
    # freed before the next is made, or as a list; whatever is not handed out is freed
    cdef Py_ssize_t k = 0, n = len(out)
    cdef list blocks = []
    try:
        while k < n:
            slot, addr, size = out[k]
            block = PyBytes_FromStringAndSize(<char*><size_t>addr, size)
            free(<void*><size_t>addr)
            out[k] = None
            k += 1
            if route is None:
                blocks.append((slot, block))
            else:
                route(slot, block)
            block = None
    finally:
        for rest in out[k:]:
            if rest is not None:
                free(<void*><size_t>rest[1])
    return blocks if route is None else n


cdef void _cut_full(TState* ts, list out) noexcept:
    # blocks of BLOCK_BYTES or more are handed out now (a chunk's worth past it at most): the
    # next record of their slot starts a new block, so no reader or writer holds a huge one
    cdef int j = 0
    while j < ts.nout:
        if ts.out[j].len >= BLOCK_BYTES:
            _flush_buf(&ts.out[j], out)
            ts.nout -= 1
            ts.out[j] = ts.out[ts.nout]
        else:
            j += 1


cdef void _free_exited_states() noexcept:
    # drain(), enc lock and GIL held: the state of a thread that has exited is unlinked and
    # freed after two drains in a row found nothing of it (a thread that comes and goes
    # must not leave its state behind for the life of the process)
    global _all_states
    cdef TState* ts
    cdef TState* prev = NULL
    cdef TState* nxt
    cdef TState* gone = NULL
    handit_q_lock()
    ts = _all_states
    while ts != NULL:
        nxt = ts.next_all
        if (handit_has_exited(&ts.exited) and ts.head == NULL and ts.tail == NULL and ts.nout == 0
                and ts.nready == 0 and ts.npending == 0 and ts.gap_count == 0):
            ts.idle_drains += 1
            if ts.idle_drains >= 2:
                if prev == NULL:
                    _all_states = nxt
                else:
                    prev.next_all = nxt
                ts.next_all = gone
                gone = ts
                ts = nxt
                continue
        prev = ts
        ts = nxt
    handit_q_unlock()
    while gone != NULL:  # outside the q lock: a decref may run Python code that records
        nxt = gone.next_all
        Py_XDECREF(gone.last_exc)
        Py_XDECREF(gone.last_exc_text)
        free(gone.out)
        free(gone.ready)
        free(gone)
        gone = nxt


def pending():
    """Whether drain() has work: records, blocks encoded by the drain thread, or the state of
    a thread that exited to free."""
    cdef TState* ts
    cdef bint found = False
    _enc_lock_holding_gil()  # the drain thread may be encoding a chunk it took: its blocks count
    handit_q_lock()
    ts = _all_states
    while ts != NULL and not found:
        found = (ts.head != NULL or (ts.tail != NULL and ts.wp != ts.tail.recs) or ts.nout > 0
                 or ts.nready > 0 or ts.gap_count > 0 or handit_has_exited(&ts.exited))
        ts = ts.next_all
    handit_q_unlock()
    handit_enc_unlock()
    return found


def thread_states():
    """How many threads' states the engine holds (threads that exited are freed once drained)."""
    cdef TState* ts
    cdef int n = 0
    handit_q_lock()
    ts = _all_states
    while ts != NULL:
        n += 1
        ts = ts.next_all
    handit_q_unlock()
    return n


cdef void _unhold_pre(TState* ts) noexcept:
    # drain() (enc lock) has handed out what the drain thread encoded ahead for the thread
    global _pre_total
    _pre_total -= ts.pre_bytes
    handit_atomic_sub(&_held, ts.pre_bytes)
    ts.pre_bytes = 0


cdef void _flush_ready(ReadyBlock* r, list out) noexcept:
    # a block the drain thread finished, handed to `out`
    _hand_block(out, r.slot, r.data, r.len)
    r.data = NULL


def held_bytes():
    """What the engine holds for the drain: ``(now, peak)`` in bytes (chunks of records, their
    previews, blocks encoded ahead), all threads together; the peak since :func:`reset_held_peak`."""
    return _held, _held_peak


def reset_held_peak():
    """Start measuring the peak of :func:`held_bytes` again from what is held now."""
    global _held_peak
    handit_q_lock()
    _held_peak = _held
    handit_q_unlock()


cdef void _hand_block(list out, int slot, char* data, size_t size) noexcept:
    # a finished block handed to `out` as (slot, address, length): drain() makes the bytes
    try:
        out.append((slot, <size_t>data, size))
    except BaseException:
        PyErr_Clear()
        free(data)


cdef void _flush_buf(OutBuf* b, list out) noexcept:
    _hand_block(out, b.slot, b.data, b.len)
    b.data = NULL


# ---- the floor benchmarks compare against: callbacks that do nothing ------------------------

cdef int _noop_profile(PyObject* obj, PyFrameObject* frame, int what, PyObject* arg) noexcept:
    return 0


def set_noop_profile(bint on):
    """Install (or remove) a C profile function that does nothing, on this thread (benchmark floor)."""
    if on:
        PyEval_SetProfile(_noop_profile, NULL)
    else:
        PyEval_SetProfile(NULL, NULL)


# ---- marker records: asyncio tasks and work handed to other threads (instrument/asyncio_tasks) ----
# Integers only (a frame's address, a name's reference, a token): the drain thread encodes
# them without the GIL, and no task or frame is kept alive by a record.

cdef dict _task_names = {}  # task name -> its reference (records.task_name_ref)


cdef int _marker_slot(TState** ts_out) noexcept:
    # the session slot the calling thread's markers go to (0: none); never raises
    cdef TState* ts = _tstate()
    if ts == NULL or ts.busy:
        return 0
    ts_out[0] = ts
    return _current_slot(ts, handit_tstate_for(ts.fast_tstate))


def _task_entry(index, name):
    return CodeInfo(index, TASK_MODULE, name, "", 0, False, (), ())


def task_name_ref(str name):
    """The reference a TASK record names ``name`` by (a new code-table entry for a new name).

    Args:
        name: the task's name.
    Returns:
        an integer (see :func:`handit.records.task_name_ref`).
    """
    return task_name_ref_in(name, _task_names, _codes, _task_entry)


def mark_task(frame, uint32_t name_ref):
    """Record that an asyncio task whose coroutine runs ``frame`` is created here.

    Args:
        frame: the coroutine's frame (``coro.cr_frame``); only its identity is kept.
        name_ref: the task's name, from :func:`task_name_ref` (0: not known).
    Returns:
        whether it was recorded (the calling thread or task is in a session).
    """
    cdef TState* ts = NULL
    cdef int slot = _marker_slot(&ts)
    cdef uint64_t key
    if slot == 0 or frame is None:
        return False
    # keyed as the coroutine's own records are: its interpreter frame under sys.monitoring (PY312+)
    key = <uint64_t>handit_frame_iframe(<PyFrameObject*>frame) if _source_kind == 1 else <uint64_t><PyObject*>frame
    _record(ts, K_TASK, slot, name_ref, NULL, key)
    return True


def mark_handoff(int kind, uint64_t token):
    """Record work handed to another thread (HANDOFF, here) or its start or end there (ENTER, LEAVE).

    Args:
        kind: ``records.HANDOFF``, ``records.ENTER`` or ``records.LEAVE``.
        token: the same number (not 0) in the three records of one hand-over.
    """
    cdef TState* ts = NULL
    cdef int slot
    if token == 0 or kind < K_HANDOFF or kind > K_LEAVE:
        return
    slot = _marker_slot(&ts)
    if slot != 0:
        _record(ts, <uint8_t>kind, slot, 0, NULL, token)


def rename_task(uint32_t old_ref, uint32_t new_ref):
    """Record that the asyncio task created with name ``old_ref`` is now named ``new_ref`` (``Task.set_name``).

    Args:
        old_ref: the name its TASK record gave it (:func:`task_name_ref`; not 0).
        new_ref: its name now (:func:`task_name_ref`; not 0).
    """
    cdef TState* ts = NULL
    cdef int slot
    if old_ref == 0 or new_ref == 0 or old_ref == new_ref:
        return
    slot = _marker_slot(&ts)
    if slot != 0:
        _record(ts, K_RENAME, slot, new_ref, NULL, old_ref)
