/* Version- and platform-specific pieces of the compiled engine, behind one small C interface. */
#ifndef HANDIT_COMPAT_H
#define HANDIT_COMPAT_H

#include <Python.h>
#include <frameobject.h>
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__) || defined(_M_X64)
#include <x86intrin.h>
#endif
#include <time.h>

typedef Py_tracefunc handit_tracefunc;

/* Raw clock: the TSC on x86-64 (~7-10 ns to read; calibrated against the monotonic clock
   in the drain), CLOCK_MONOTONIC elsewhere. */
static inline uint64_t handit_ticks(void) {
#if defined(__x86_64__) || defined(_M_X64)
    return (uint64_t)__rdtsc();
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
#endif
}

/* A record's second half (code, kind, ext, slot: handit/_tracer.pxd Record after `ts`) as
   one 64-bit word, in the record's own byte order. The fast paths keep it precomputed in
   two parts whose fields do not overlap (the code's and kind's per code object, the slot's
   per thread), OR them and store the word with one 8-byte store after the clock's: a
   timing-only record is two stores, not five. */
typedef struct { uint32_t code; uint8_t kind; uint8_t ext; uint16_t slot; } handit_tail_fields;
static inline uint64_t handit_tail(uint32_t code, uint8_t kind, uint16_t slot) {
    handit_tail_fields f = {code, kind, 0, slot};
    uint64_t w;
    memcpy(&w, &f, sizeof w);
    return w;
}
static inline void handit_put_tail(void *at, uint64_t tail) { memcpy(at, &tail, sizeof tail); }

static inline int handit_ticks_are_ns(void) {
#if defined(__x86_64__) || defined(_M_X64)
    return 0;
#else
    return 1;
#endif
}

/* Hand-off between the threads writing records (GIL held) and the drain thread encoding
   full chunks without the GIL: handit_q_lock guards the queues of full chunks and the free
   list (held for a few instructions a chunk); handit_enc_lock lets one encoder at a time
   write the encoded buffers (the drain thread, or a drain run with the GIL). Neither is
   ever held while waiting for the GIL. */
#include <pthread.h>
static pthread_mutex_t handit_q_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t handit_enc_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t handit_q_cond = PTHREAD_COND_INITIALIZER;
/* The condition variable times its waits on the monotonic clock where it can (a wall-clock
   step must not stretch a wait); handit_q_clock says which. */
static clockid_t handit_q_clock = CLOCK_REALTIME;
static inline void handit_q_cond_init(void) {
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
#if defined(__linux__)
    if (pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0) handit_q_clock = CLOCK_MONOTONIC;
#endif
    pthread_cond_init(&handit_q_cond, &attr);
    pthread_condattr_destroy(&attr);
}
static inline void handit_q_lock(void) { pthread_mutex_lock(&handit_q_mutex); }
static inline void handit_q_unlock(void) { pthread_mutex_unlock(&handit_q_mutex); }
static inline void handit_enc_lock(void) { pthread_mutex_lock(&handit_enc_mutex); }
static inline void handit_enc_unlock(void) { pthread_mutex_unlock(&handit_enc_mutex); }
static inline int handit_enc_trylock(void) { return pthread_mutex_trylock(&handit_enc_mutex) == 0; }
static inline void handit_q_signal(void) { pthread_cond_signal(&handit_q_cond); }
/* Waits (q lock held) until signalled or `seconds` from now have passed; 1 when the time is up. */
static inline int handit_q_wait(double seconds) {
    struct timespec ts;
    clock_gettime(handit_q_clock, &ts);
    long long ns = (long long)ts.tv_nsec + (long long)(seconds * 1e9);
    ts.tv_sec += (time_t)(ns / 1000000000LL);
    ts.tv_nsec = (long)(ns % 1000000000LL);
    return pthread_cond_timedwait(&handit_q_cond, &handit_q_mutex, &ts) != 0;
}
static inline uint64_t handit_mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
/* After fork() the child has one thread: locks held by another thread of the parent
   would never be released there. */
static inline void handit_sync_reinit(void) {
    pthread_mutex_init(&handit_q_mutex, NULL);
    pthread_mutex_init(&handit_enc_mutex, NULL);
    handit_q_cond_init();
}

/* A thread's exit is told to the engine (a pthread key destructor, run without the GIL
   after the thread's last Python code) so its state can be freed once drained. */
static pthread_key_t handit_exit_key;
static int handit_exit_key_ok = 0;
static void handit_on_thread_exit(void *flag) { __atomic_store_n((int *)flag, 1, __ATOMIC_RELEASE); }
static inline void handit_exit_key_init(void) {
    handit_exit_key_ok = pthread_key_create(&handit_exit_key, handit_on_thread_exit) == 0;
}
/* flag: set to 1 when the calling thread exits */
static inline void handit_exit_key_set(int *flag) {
    if (handit_exit_key_ok) pthread_setspecific(handit_exit_key, flag);
}
static inline int handit_has_exited(int *flag) { return __atomic_load_n(flag, __ATOMIC_ACQUIRE); }

/* busy == 0 and fast_tstate == 1 (both 0 or 1), read as one word where they lie side by
   side (the first two ints of TState; the comparison of their addresses is folded at
   compile time): the callbacks' first test, two instructions fewer an event. */
static inline int handit_fast_and_idle(const int *busy, const int *fast_tstate) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if ((const char *)fast_tstate == (const char *)busy + sizeof(int) && sizeof(int) == 4) {
        uint64_t word;
        memcpy(&word, busy, 8);
        return word == ((uint64_t)1 << 32);
    }
#endif
    return *busy == 0 && *fast_tstate == 1;
}

/* One pointer of per-thread engine state (a C thread-local: no dict lookup). */
/* initial-exec: a direct %fs-relative load instead of a __tls_get_addr call (~3 ns a callback). */
/* A thread without a state points at handit_no_state (busy, not fast), so the callbacks'
   first test (handit_fast_and_idle) needs no NULL test before it; handit_get_tls still
   gives NULL there, handit_get_tls_raw (the fast paths only) the placeholder. */
static int handit_no_state[2] = {1, 0};
static __thread void *handit_tls_state __attribute__((tls_model("initial-exec"))) = handit_no_state;
static inline void *handit_get_tls_raw(void) { return handit_tls_state; }
static inline void *handit_get_tls(void) {
    void *p = handit_tls_state;
    return p == (void *)handit_no_state ? NULL : p;
}
static inline void handit_set_tls(void *p) { handit_tls_state = p ? p : (void *)handit_no_state; }

/* Per-code-object slot for the engine's decision (co_extra). */
#if PY_VERSION_HEX >= 0x030C0000  /* PY312+ */
#define handit_request_code_extra_index(f) PyUnstable_Eval_RequestCodeExtraIndex(f)
#define handit_code_get_extra(c, i, p) PyUnstable_Code_GetExtra((c), (i), (p))
#define handit_code_set_extra(c, i, p) PyUnstable_Code_SetExtra((c), (i), (p))
#else
#define handit_request_code_extra_index(f) _PyEval_RequestCodeExtraIndex(f)
#define handit_code_get_extra(c, i, p) _PyCode_GetExtra((c), (i), (p))
#define handit_code_set_extra(c, i, p) _PyCode_SetExtra((c), (i), (p))
#endif

/* The engine's co_extra slot of a code object, read inline: the per-call lookup of a
   traced code. Equivalent to PyUnstable_Code_GetExtra without the call and checks. */
typedef struct { Py_ssize_t ce_size; void *ce_extras[1]; } handit_code_extra;
static inline void *handit_code_extra_fast(PyObject *code, Py_ssize_t index) {
    handit_code_extra *e = (handit_code_extra *)((PyCodeObject *)code)->co_extra;
    if (e == NULL || index >= e->ce_size) return NULL;
    return e->ce_extras[index];
}
/* The same for index 0 (handit's when no other tool took a co_extra index before it): a
   code object's co_extra, when it has one, holds that index (its size is at least 1). */
static inline void *handit_code_extra_first(PyObject *code) {
    handit_code_extra *e = (handit_code_extra *)((PyCodeObject *)code)->co_extra;
    return e == NULL ? NULL : e->ce_extras[0];
}

/* None as a callback's result: 3.12+ None is immortal, so no reference is taken (what
   Py_RETURN_NONE does there). */
static inline PyObject *handit_return_none(void) {
#if PY_VERSION_HEX >= 0x030C0000
    return Py_None;
#else
    Py_INCREF(Py_None);
    return Py_None;
#endif
}

/* Callbacks as plain METH_FASTCALL builtins: the cheapest call sys.monitoring can make. */
typedef PyObject *(*handit_fastcall)(PyObject *, PyObject **, Py_ssize_t);
static inline PyObject *handit_make_fastcall(PyMethodDef *def, handit_fastcall fn, const char *name, const char *doc) {
    def->ml_name = name;
    def->ml_meth = (PyCFunction)(void (*)(void))fn;  /* METH_FASTCALL: called as handit_fastcall */
    def->ml_flags = METH_FASTCALL;
    def->ml_doc = doc;
    return PyCFunction_New(def, NULL);
}

/* The running thread state, and its context identity: (context object, context_ver)
   changes whenever the thread switches contexts (asyncio tasks, Context.run). */
static inline PyThreadState *handit_tstate(void) {
#if PY_VERSION_HEX >= 0x030D0000  /* PY313+ */
    return PyThreadState_GetUnchecked();
#else
    return _PyThreadState_UncheckedGet();
#endif
}

/* PY312+ keeps the running thread state in a thread-local of libpython (_Py_tss_tstate),
   which the exported getter reaches through __tls_get_addr when libpython is a shared
   library (~35 instructions, twice a call). When libpython was loaded with the program
   its TLS block lies in the static TLS area, at one fixed %fs offset in every thread, and
   the fast read loads the word there. When it was loaded with dlopen (embedding hosts,
   plugin hosts) its blocks are allocated per thread anywhere in the heap and no fixed
   offset exists: reading one found in the first thread from another thread crashed
   (issue 17.1). So each thread proves the offset before using it: the dynamic linker's
   own address of this thread's TLS block of libpython (dl_iterate_phdr) must lie at the
   offset found first, and the word there must be what the getter returns
   (handit_tstate_fast_ok); otherwise, or with HANDIT_FAST_TSTATE=0, the getter is used. */
#if PY_VERSION_HEX >= 0x030C0000 && defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__)
#define HANDIT_FAST_TSTATE 1
#include <link.h>
#include <string.h>
static int handit_fast_tstate_on = 1;  /* HANDIT_FAST_TSTATE: 0 never reads the TLS slot */
static int handit_tstate_found = 0;    /* 0 not searched yet, 1 found, -1 not usable */
static long handit_tstate_off = 0;     /* %fs offset of the thread-state word, where found */
static size_t handit_tstate_word = 0;  /* offset of that word in libpython's TLS block */
static inline char *handit_fs_base(void) {
    char *base;
    __asm__ volatile("movq %%fs:0, %0" : "=r"(base));  /* the TCB points to itself */
    return base;
}
static inline PyThreadState *handit_tstate_tls(void) {
    PyThreadState *t;
    __asm__ volatile("movq %%fs:(%1), %0" : "=r"(t) : "r"(handit_tstate_off));
    return t;
}
/* The calling thread's TLS block of the object that defines the thread-state getter
   (libpython, or the executable when it is linked in), and its size. */
typedef struct { uintptr_t code; char *block; size_t memsz; } handit_tls_probe;
static int handit_tls_probe_one(struct dl_phdr_info *info, size_t size, void *data) {
    handit_tls_probe *probe = (handit_tls_probe *)data;
    int holds_code = 0;
    size_t memsz = 0;
    (void)size;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t start = (uintptr_t)info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && probe->code >= start && probe->code - start < ph->p_memsz) holds_code = 1;
        if (ph->p_type == PT_TLS) memsz = ph->p_memsz;
    }
    if (!holds_code) return 0;
    probe->block = (char *)info->dlpi_tls_data;  /* NULL: not allocated in this thread (yet) */
    probe->memsz = memsz;
    return 1;
}
static inline char *handit_tstate_block(size_t *memsz) {
#if PY_VERSION_HEX >= 0x030D0000  /* PY313+ */
    handit_tls_probe probe = {(uintptr_t)&PyThreadState_GetUnchecked, NULL, 0};
#else
    handit_tls_probe probe = {(uintptr_t)&_PyThreadState_UncheckedGet, NULL, 0};
#endif
    dl_iterate_phdr(handit_tls_probe_one, &probe);
    *memsz = probe.memsz;
    return probe.block;
}
/* Finds the word once (GIL held): the one word of libpython's TLS block that holds the
   current thread state; 1 if found. */
static inline int handit_find_tstate_tls(PyThreadState *want) {
    size_t memsz = 0;
    char *block = handit_tstate_block(&memsz);
    int n = 0;
    size_t at = 0;
    if (block == NULL) return 0;
    for (size_t off = 0; off + sizeof(void *) <= memsz; off += sizeof(void *)) {
        void *word;
        memcpy(&word, block + off, sizeof word);
        if (word == (void *)want) { at = off; n++; }
    }
    if (n != 1) return 0;  /* none, or ambiguous: keep the getter */
    handit_tstate_word = at;
    handit_tstate_off = (long)(block + at - handit_fs_base());
    return handit_tstate_off != 0;
}
#endif

/* 1 if this thread may read the thread state with handit_tstate_tls, 0 if not, -1 if not
   checked (HANDIT_FAST_TSTATE=0). Once a thread, GIL held; never reads through an offset
   it has not proven for this thread. */
static inline int handit_tstate_fast_ok(void) {
#ifdef HANDIT_FAST_TSTATE
    PyThreadState *t = handit_tstate();
    size_t memsz = 0;
    char *block;
    if (!handit_fast_tstate_on) return -1;
    if (t == NULL) return 0;
    if (handit_tstate_found == 0) handit_tstate_found = handit_find_tstate_tls(t) ? 1 : -1;
    if (handit_tstate_found != 1) return 0;
    block = handit_tstate_block(&memsz);
    if (block == NULL || handit_tstate_word + sizeof(void *) > memsz) return 0;
    if (block + handit_tstate_word != handit_fs_base() + handit_tstate_off) return 0;  /* not static TLS here */
    return handit_tstate_tls() == t;
#else
    return 0;
#endif
}

/* HANDIT_FAST_TSTATE: whether threads checked from now on may use the fast read. */
static inline void handit_set_fast_tstate(int on) {
#ifdef HANDIT_FAST_TSTATE
    handit_fast_tstate_on = on;
#else
    (void)on;
#endif
}

/* The running thread state: the fast read where this thread checked it, else the getter. */
static inline PyThreadState *handit_tstate_for(int fast) {
#ifdef HANDIT_FAST_TSTATE
    if (fast) return handit_tstate_tls();
#else
    (void)fast;
#endif
    return handit_tstate();
}

static inline void *handit_context_ptr(PyThreadState *t) { return (void *)t->context; }
static inline uint64_t handit_context_ver(PyThreadState *t) { return t->context_ver; }

/* The frame's last instruction, in 2-byte code units (-1 before the first). */
static inline int handit_frame_lasti_units(PyFrameObject *f) {
#if PY_VERSION_HEX >= 0x030B0000  /* PY311+ */
    int lasti = PyFrame_GetLasti(f);
    return lasti < 0 ? -1 : lasti / 2;
#else
    return f->f_lasti;
#endif
}

/* Fast locals of a running frame, read in place: no frame object, no locals dict.
   PY311+: the interpreter frame (_PyInterpreterFrame, Include/internal/pycore_frame.h) starts
   with eight pointers, an int and two small fields before `localsplus` in 3.11, 3.12 and
   3.13 alike; this mirror gives the same offset (72 on 64-bit), and the differential tests
   compare every argument read here with frame.f_locals. */
#if PY_VERSION_HEX >= 0x030B0000
typedef struct { void *head[8]; int stacktop; uint16_t small; char owner; PyObject *localsplus[1]; } handit_iframe;
typedef struct { PyObject_HEAD PyObject *f_back; handit_iframe *f_frame; } handit_frame_head;
#endif

/* The CPython versions whose internal structures this file mirrors (the interpreter frame
   above, the frame object's head, PyThreadState's frame and context fields, co_extra):
   3.10 to 3.13 with the GIL. On any other (3.14 tags the locals and moves them; a
   free-threaded build changes every object's head) the engine must not run: setup.py
   builds no extension there, and a build made anyway refuses to initialise (issue 17.2). */
#if PY_VERSION_HEX >= 0x030A0000 && PY_VERSION_HEX < 0x030E0000 && !defined(Py_GIL_DISABLED)
#define HANDIT_KNOWN_LAYOUT 1
#else
#define HANDIT_KNOWN_LAYOUT 0
#endif
#ifdef Py_GIL_DISABLED
#define HANDIT_FREE_THREADED 1
#else
#define HANDIT_FREE_THREADED 0
#endif

#if PY_VERSION_HEX >= 0x030D0000 && PY_VERSION_HEX < 0x030E0000 && !defined(Py_GIL_DISABLED)  /* PY313 */
#include <stddef.h>
#include <string.h>
/* PY313: CPython publishes the offsets of its own structures at the start of _PyRuntime
   (_Py_DebugOffsets, Include/internal/pycore_runtime.h; its layout is fixed within a minor
   version). This is its 3.13 head, up to the fields the engine relies on. */
typedef struct {
    char cookie[8];
    uint64_t version;
    uint64_t free_threaded;
    uint64_t runtime_state[3];
    uint64_t interpreter_state[13];
    struct { uint64_t size, prev, next, interp, current_frame, thread_id, native_thread_id, datastack_chunk, status; } thread_state;
    struct { uint64_t size, previous, executable, instr_ptr, localsplus, owner; } interpreter_frame;
} handit_debug_offsets;
extern handit_debug_offsets _PyRuntime;
/* The first offset that differs from this file's mirror, named; NULL if all agree. */
static inline const char *handit_debug_offsets_problem(void) {
    const handit_debug_offsets *d = &_PyRuntime;
    if (memcmp(d->cookie, "xdebugpy", 8) != 0) return "_PyRuntime does not start with _Py_DebugOffsets";
    if ((d->version >> 16) != (PY_VERSION_HEX >> 16)) return "_Py_DebugOffsets.version is not 3.13";
    if (d->free_threaded) return "_Py_DebugOffsets.free_threaded is set";
    if (d->thread_state.current_frame != offsetof(PyThreadState, current_frame)) return "_Py_DebugOffsets.thread_state.current_frame differs";
    if (d->interpreter_frame.executable != 0) return "_Py_DebugOffsets.interpreter_frame.executable differs";
    if (d->interpreter_frame.localsplus != offsetof(handit_iframe, localsplus)) return "_Py_DebugOffsets.interpreter_frame.localsplus differs";
    if (d->interpreter_frame.owner != offsetof(handit_iframe, owner)) return "_Py_DebugOffsets.interpreter_frame.owner differs";
    return NULL;
}
#define HANDIT_CHECKS_DEBUG_OFFSETS 1
#else
#define HANDIT_CHECKS_DEBUG_OFFSETS 0
#endif

/* Why this build must not run in the interpreter that loads it, or NULL. runtime_hex: that
   interpreter's version (sys.hexversion); free_threaded: it is a free-threaded build. Both
   are the real ones, or what a test pretends. */
static inline const char *handit_layout_problem(unsigned long runtime_hex, int free_threaded) {
    if (free_threaded) return "free-threaded builds (Py_GIL_DISABLED) are not supported yet";
    if (!HANDIT_KNOWN_LAYOUT || runtime_hex < 0x030A0000 || runtime_hex >= 0x030E0000)
        return "it reads CPython's internal frame layout, known for 3.10 to 3.13 only";
    if ((runtime_hex >> 16) != ((unsigned long)PY_VERSION_HEX >> 16)) return "it was built for another Python version";
#if HANDIT_CHECKS_DEBUG_OFFSETS
    return handit_debug_offsets_problem();
#else
    return NULL;
#endif
}

/* Before 3.12 a C profile function's "return" carries NULL when an exception unwinds the
   frame (the return value otherwise); 3.12+ emulates profile functions over sys.monitoring
   and passes None for both, so there the stopped instruction tells them apart. */
#define HANDIT_UNWIND_ARG_IS_NULL (PY_VERSION_HEX < 0x030C0000)

/* Borrowed code object of a frame, read in place (the interpreter frame's first word on
   3.12/3.13, its fifth on 3.11): what PyFrame_GetCode returns, without the call and the
   reference count. */
static inline PyObject *handit_frame_code_fast(PyFrameObject *f) {
#if PY_VERSION_HEX >= 0x030C0000
    return (PyObject *)((handit_frame_head *)f)->f_frame->head[0];
#elif PY_VERSION_HEX >= 0x030B0000
    return (PyObject *)((handit_frame_head *)f)->f_frame->head[4];
#else
    return (PyObject *)f->f_code;
#endif
}

/* The interpreter frame running now in thread state t (PY312+: the callee inside a
   sys.monitoring callback). */
static inline void *handit_current_iframe(PyThreadState *t) {
#if PY_VERSION_HEX >= 0x030D0000
    return (void *)t->current_frame;
#elif PY_VERSION_HEX >= 0x030C0000
    return (void *)t->cframe->current_frame;
#else
    (void)t;
    return NULL;
#endif
}

/* What a coroutine's records are keyed by under sys.monitoring (its interpreter frame, PY311+;
   the frame object itself before 3.11, where there is no other): for a TASK marker. */
static inline void *handit_frame_iframe(PyFrameObject *f) {
#if PY_VERSION_HEX >= 0x030B0000
    return (void *)((handit_frame_head *)f)->f_frame;
#else
    return (void *)f;
#endif
}

/* Local number i of a frame (the frame object, or on 3.12+ the interpreter frame when
   f is NULL): a new reference, or NULL. A cell (an argument an inner function closes
   over) gives its contents. */
static inline PyObject *handit_frame_arg(PyFrameObject *f, void *iframe, int i) {
    PyObject *v;
#if PY_VERSION_HEX >= 0x030B0000
    handit_iframe *fr = f != NULL ? ((handit_frame_head *)f)->f_frame : (handit_iframe *)iframe;
    if (fr == NULL) return NULL;
    v = fr->localsplus[i];
#else
    (void)iframe;
    if (f == NULL) return NULL;
    v = f->f_localsplus[i];
#endif
    if (v != NULL && PyCell_Check(v)) v = PyCell_GET(v);
    Py_XINCREF(v);
    return v;
}

/* The exception being handled in this thread (an except or finally block), new reference or NULL. */
static inline PyObject *handit_handled_exception(void) {
#if PY_VERSION_HEX >= 0x030B0000
    PyObject *exc = PyErr_GetHandledException();
    if (exc == Py_None) { Py_DECREF(exc); return NULL; }
    return exc;
#else
    PyObject *t, *v, *tb;
    PyErr_GetExcInfo(&t, &v, &tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    if (v == Py_None) { Py_DECREF(v); return NULL; }
    return v;
#endif
}

/* PY310/PY311: a profile function is not told which exception unwinds a frame (the
   'return' event has NULL arg, the exception fetched away by call_trace_protected), and the
   handler that catches it may run no event at all (`except E as e: return f"{e.code}"`), so
   the unwind stayed <unknown> (issue 11.4). A trace function is told: ceval calls
   tstate->c_tracefunc with PyTrace_EXCEPTION (type, value, tb) when the exception reaches
   the caller's frame. After a traced unwind on a thread with no trace function, handit's
   is set until the exception reaches the caller (use_tracing is already on: the profile
   function is); it takes itself out at the first event of that frame, whatever the event. The fields are set directly, as
   _PyEval_SetTrace does minus its audit event: an audit hook is the user's code. PY312+
   routes the trace function through sys.monitoring, whose PY_UNWIND gives the exception.
   Returns 2 when handit's is the thread's trace function from now on, 1 when it already was
   (an earlier unwind still waits), 0 when the thread has another. */
static inline int handit_arm_exc_trace(Py_tracefunc func) {
#if PY_VERSION_HEX < 0x030C0000
    PyThreadState *t = handit_tstate();
    if (t == NULL || t->c_traceobj != NULL) return 0;
    if (t->c_tracefunc == func) return 1;  /* armed by an earlier unwind: still waiting */
    if (t->c_tracefunc != NULL) return 0;
    t->c_tracefunc = func;
    return 2;
#else
    (void)func;
    return 0;
#endif
}

static inline void handit_disarm_exc_trace(Py_tracefunc func) {
#if PY_VERSION_HEX < 0x030C0000
    PyThreadState *t = handit_tstate();
    if (t != NULL && t->c_tracefunc == func && t->c_traceobj == NULL) {
        t->c_tracefunc = NULL;
        /* call_trace recomputes use_tracing when the callback returns */
    }
#else
    (void)func;
#endif
}

/* Profile source: the C function behind generators' and coroutines' close() (gen_close: both
   types' method tables name it), learnt once from a generator's bound close. A C call is
   told to be a close by one type and one pointer compared (issue 11.7: the name compared
   with strcmp cost the profile function ~14 instructions a C call, callgrind, 3.10). */
static PyCFunction handit_gen_close_meth = NULL;
static inline void handit_learn_gen_close(PyObject *bound) {
    if (bound != NULL && PyCFunction_Check(bound))
        handit_gen_close_meth = ((PyCFunctionObject *)bound)->m_ml->ml_meth;
}

/* Profile source: the same for throw() (gen_throw). */
static PyCFunction handit_gen_throw_meth = NULL;
static inline void handit_learn_gen_throw(PyObject *bound) {
    if (bound != NULL && PyCFunction_Check(bound))
        handit_gen_throw_meth = ((PyCFunctionObject *)bound)->m_ml->ml_meth;
}

/* 1 if a C call is a generator's or coroutine's close(), 2 if its throw(), else 0. */
static inline int handit_gen_method(PyObject *callable) {
    PyCFunction m;
    if (!Py_IS_TYPE(callable, &PyCFunction_Type)) return 0;
    m = ((PyCFunctionObject *)callable)->m_ml->ml_meth;
    return m == handit_gen_close_meth ? 1 : m == handit_gen_throw_meth ? 2 : 0;
}

/* Profile source: whether frame f is a plain generator's (not a coroutine's, nor a
   generator-based coroutine's) being closed by its finalizer: collected while suspended,
   its close() is called from C (no C_CALL event) while the generator is held by nothing but
   the deallocation (a reference count of 1, Objects/object.c PyObject_CallFinalizerFromDealloc)
   or by the cyclic collector that marked it finalized first (Modules/gcmodule.c
   finalize_garbage). Asked only when an exception leaves a generator at a yield. */
static inline int handit_gen_finalizing(PyFrameObject *f, PyObject *code) {
#if PY_VERSION_HEX >= 0x030B0000
    PyObject *gen;
    int out;
    if (((PyCodeObject *)code)->co_flags & CO_ITERABLE_COROUTINE) return 0;
    gen = PyFrame_GetGenerator(f);  /* a new reference */
    if (gen == NULL) return 0;
    out = PyGen_CheckExact(gen) && (Py_REFCNT(gen) == 2 || PyObject_GC_IsFinalized(gen));
    Py_DECREF(gen);
    return out;
#else
    PyObject *gen = (PyObject *)f->f_gen;  /* borrowed */
    if (((PyCodeObject *)code)->co_flags & CO_ITERABLE_COROUTINE) return 0;
    return gen != NULL && PyGen_CheckExact(gen) && (Py_REFCNT(gen) == 1 || PyObject_GC_IsFinalized(gen));
#endif
}

/* Profile source: the generator or coroutine frame a close() or throw() (handit_gen_method)
   is about to throw into, or NULL (not a reference). */
static inline void *handit_closing_frame(PyObject *callable) {
    PyObject *self, *frame;
    void *out;
    self = PyCFunction_GET_SELF(callable);
    if (self == NULL || !(PyGen_CheckExact(self) || PyCoro_CheckExact(self))) return NULL;
    frame = PyObject_GetAttrString(self, PyGen_CheckExact(self) ? "gi_frame" : "cr_frame");
    if (frame == NULL) { PyErr_Clear(); return NULL; }
    out = frame == Py_None ? NULL : (void *)frame;
    Py_DECREF(frame);  /* the generator holds it while close() runs */
    return out;
}

/* handit's own Python work inside a callback (a code object's decision, a preview, the text
   of an exception) runs on the user's stack. At the user's recursion limit it failed with
   RecursionError (the call lost, the unwind typed <unknown>: issue 10.8), and near it took
   frames the user counts on. Around that work the thread gets HANDIT_HEADROOM more frames,
   as CPython gives itself 50 to raise a RecursionError (tstate->recursion_headroom); the
   user's own limit is unchanged. more: 1 before the work, 0 after it. */
#define HANDIT_HEADROOM 50
static inline void handit_headroom(int more) {
    PyThreadState *t = handit_tstate();
    int n = more ? HANDIT_HEADROOM : -HANDIT_HEADROOM;
    if (t == NULL) return;
#if PY_VERSION_HEX >= 0x030C0000  /* PY312+: Python frames and C recursion counted apart */
    t->py_recursion_remaining += n;
    t->c_recursion_remaining += n;
#elif PY_VERSION_HEX >= 0x030B0000  /* PY311 */
    t->recursion_remaining += n;
#else
    t->recursion_depth -= n;
#endif
}

/* Profile function on every thread that exists now.
   PY310/PY311: cProfile and other profilers also use the one profile-function slot, so a
   profile function already installed on a thread is remembered and called first by ours
   (handit_prev_profile), and put back when handit stops. On 3.12+ cProfile uses
   sys.monitoring and the slot is free. */
typedef struct { unsigned long ident; Py_tracefunc func; PyObject *obj; } handit_prev_entry;
#define HANDIT_MAX_PREV 64
static handit_prev_entry handit_prev[HANDIT_MAX_PREV];
static int handit_nprev = 0;

static inline void handit_set_profile_all(Py_tracefunc func, const unsigned long *skip, int nskip) {
#if PY_VERSION_HEX >= 0x030C0000
    (void)skip; (void)nskip;  /* PY312+: handit's own threads are given it too (the busy path) */
    PyEval_SetProfileAllThreads(func, NULL);
#else
    PyThreadState *me = PyThreadState_Get();
    PyThreadState *t = PyInterpreterState_ThreadHead(me->interp);
    for (; t != NULL; t = PyThreadState_Next(t)) {
        if (t->c_profilefunc == func) continue;  /* still ours: its previous one is remembered */
        int own = 0;  /* handit's own threads (skip): never profiled */
        for (int i = 0; i < nskip; i++) own |= skip[i] == t->thread_id;
        if (own) continue;
        if (t->c_profilefunc != NULL && handit_nprev < HANDIT_MAX_PREV) {
            handit_prev_entry *e = &handit_prev[handit_nprev++];
            e->ident = t->thread_id;
            e->func = t->c_profilefunc;
            e->obj = t->c_profileobj;
            Py_XINCREF(e->obj);
        }
        _PyEval_SetProfile(t, func, NULL);
    }
#endif
}

/* Undo handit_set_profile_all(ours): the threads that still have ours get back the profile
   function they had before (PY310/PY311; none on 3.12+); a thread whose profile function
   was replaced since keeps the new one (the program's profiler, set between or during
   sessions). */
static inline void handit_remove_profile_all(Py_tracefunc ours) {
#if PY_VERSION_HEX >= 0x030C0000
    (void)ours;
    PyEval_SetProfileAllThreads(NULL, NULL);
#else
    PyThreadState *me = PyThreadState_Get();
    PyThreadState *t = PyInterpreterState_ThreadHead(me->interp);
    for (; t != NULL; t = PyThreadState_Next(t)) {
        if (t->c_profilefunc != ours) continue;
        Py_tracefunc restore = NULL;
        PyObject *obj = NULL;
        for (int i = 0; i < handit_nprev; i++) {
            if (handit_prev[i].ident == t->thread_id) { restore = handit_prev[i].func; obj = handit_prev[i].obj; }
        }
        _PyEval_SetProfile(t, restore, obj);
    }
    for (int i = 0; i < handit_nprev; i++) Py_XDECREF(handit_prev[i].obj);
    handit_nprev = 0;
#endif
}

/* The profile function this thread had before handit's (PY310/PY311), or NULL. */
/* The ids of the threads whose profile function is `func` now (up to `cap` of them, into
   `out`); returns how many (tests: which threads handit's profile function is on). */
static inline int handit_profiled_threads(Py_tracefunc func, unsigned long *out, int cap) {
    PyThreadState *me = PyThreadState_Get();
    PyThreadState *t = PyInterpreterState_ThreadHead(me->interp);
    int n = 0;
    for (; t != NULL && n < cap; t = PyThreadState_Next(t)) {
        if (t->c_profilefunc == func) out[n++] = t->thread_id;
    }
    return n;
}

static inline Py_tracefunc handit_prev_profile(unsigned long ident, PyObject **obj) {
    for (int i = 0; i < handit_nprev; i++) {
        if (handit_prev[i].ident == ident) { *obj = handit_prev[i].obj; return handit_prev[i].func; }
    }
    return NULL;
}

#endif
