# The compiled engine's C-level interface: the record layout (mirrors handit/records.py).
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from cpython.object cimport PyObject

cdef enum:
    K_CALL = 1
    K_RETURN = 2
    K_UNWIND = 3
    K_YIELD = 4
    K_RESUME = 5
    K_THROW = 6
    K_GAP = 7
    K_PAUSE = 8   # a yield and the resume right after it, folded: aux = ticks suspended
    K_STEP = 9    # a resume and the yield right after it, folded: aux = ticks running
    K_TASK = 10     # an asyncio task: key = its coroutine's frame, code = its name (records.TASK)
    K_HANDOFF = 11  # work handed to another thread: key = a token
    K_ENTER = 12    # handed-over work starts on this thread: key = its token
    K_LEAVE = 13    # handed-over work ends on this thread: key = its token
    K_RENAME = 14   # an asyncio task renamed: key = the name it was created with, code = its new name (records.RENAME)

cdef enum:
    CHUNK_RECORDS = 16384       # a chunk while the records waiting are well within the budget (256 KiB)
    SMALL_CHUNK_RECORDS = 1024  # past half of it (16 KiB): a hundred threads do not hold 25 MB of chunks

# 16 bytes: a timing-only call is two of these (one cache line holds two calls)
ctypedef struct Record:
    uint64_t ts       # raw clock ticks
    uint32_t code     # index in the code table
    uint8_t kind      # K_*
    uint8_t ext       # 1: the next slot is a RecordExt
    uint16_t slot     # session slot

# the value and key of the record before it, when it has either
ctypedef struct RecordExt:
    PyObject* aux     # calls, returns: a malloc'd blob of encoded previews (_args.pxi); unwinds: owned reference; or NULL
    uint64_t key      # generator/coroutine identity

ctypedef struct Chunk:
    Chunk* next
    int n
    int has_ext       # some record here has a value or key (needs the GIL to drain)
    int start         # records before this one are encoded already
    int cap           # records it has room for (CHUNK_RECORDS or SMALL_CHUNK_RECORDS)
    int budget_cut    # 1: cut short for the budget (_count_blob); 2: written on after that
    size_t blobs      # bytes of the previews its records hold (counted by its writer)
    size_t held       # bytes of it counted in the engine's budget (q lock)
    Record recs[1]    # `cap` of them (allocated with the chunk)

# a block encoded ahead of drain() by the drain thread, cut at BLOCK_BYTES
ctypedef struct ReadyBlock:
    char* data
    size_t len
    int slot

# a block being encoded for one session slot of one thread
ctypedef struct OutBuf:
    char* data
    size_t len
    size_t cap
    int64_t last      # time of the last record written (ns since the epoch)
    int slot

# what a callback reads comes first: one cache line, each field one load from the state
ctypedef struct TState:
    int busy          # handit's own work or an internal thread: record nothing
    int fast_tstate   # this thread reads CPython's thread state from its TLS slot directly
    void* ctx              # the context the cached slot was read in
    uint64_t ctx_ver
    int ctx_slot           # the session slot read from handit's ContextVar there
    uint64_t slot_tail     # that slot as a record's tail (handit_tail), 0 if no session is active in it
    Record* wp        # where the next record goes in `tail` (NULL without one); tail.n is
    Record* wend      # brought up to date from it when the chunk is handed on (_sync_tail)
    Chunk* tail       # chunk being written (its thread only, or a drain holding the GIL)
    unsigned long ident
    Chunk* head       # oldest full chunk waiting for the drain (q lock)
    Chunk* qlast      # newest full chunk waiting for the drain (q lock)
    OutBuf* out       # blocks encoded but not yet handed to sessions (enc lock), 64 of them
    int nout
    int fast_tstate_proven  # 1: that read was proven valid on this thread; 0: not; -1: not checked (switched off)
    int exited        # the thread has exited (set without the GIL at its exit)
    int idle_drains   # drains since it exited that found nothing of it left
    TState* next_all
    PyObject* last_exc
    PyObject* last_exc_text
    int nchunks            # full chunks waiting for the drain (q lock; bounded-memory mode caps it)
    uint64_t gap_count     # records dropped since the last one written (bounded-memory mode)
    int gap_slot
    uint32_t drains        # drain() runs that took this thread's chunks
    int npending           # profile source: unwinds whose exception is not known yet
    void* pending_ext[8]   # their RecordExt (filled in when the exception is seen handled)
    void* pending_frame[8] # the frames they unwound
    int pending_lasti[8]   # where each stopped (code units): a frame's address alone is reused
    int waiting_exc        # PY310/PY311: exc_trace is armed for them (their caller's exception event is next)
    int exc_depth          # PY310/PY311: frames started since exc_trace was armed and not yet left
    int resolving          # their text is being made (Python code: the GIL can switch); see _match_unwinds
    uint64_t held_since    # when the periodic drain began to leave this thread's records for them (0: not)
    void* closing_frame    # profile source: the frame of the generator whose close() runs (not a reference)
    void* throwing_frame   # profile source: the frame of the generator or coroutine whose throw() runs (not a reference)
    void* gen_call         # that close or throw method, called from Python (not a reference)
    uint32_t prev_generation  # install generation prev_profile was looked up for
    void* prev_profile        # the profile function this thread had before ours (PY310/PY311)
    PyObject* prev_profile_obj
    ReadyBlock* ready         # blocks the drain thread finished ahead of drain() (enc lock)
    int nready
    int capready
    size_t pre_bytes          # bytes encoded ahead of drain(), in `ready` and `out` (enc lock)
    int internal              # handit's own thread (mark_internal_thread): never given the profile function

ctypedef struct CInfo:
    uint32_t index
    uint32_t generation
    uint8_t traced
    uint8_t suspendable
    uint16_t nargs
    uint8_t plain          # a call records time only (not suspendable, no arguments kept)
    uint32_t call_gen      # `generation` if a call takes the sysmon fast path (traced and plain), else 0
    uint32_t return_gen    # `generation` if a return does (traced, plain and timing-only capture), else 0
    uint64_t call_tail     # a call record's tail but its slot (code, kind; handit_tail): ORed with TState.slot_tail
    uint64_t return_tail   # and a return record's
    uint32_t first_yield   # code unit of the first yield (profile source)
    uint32_t key_id        # the decision rules it was decided under
    PyObject* info         # the CodeInfo tuple (owned)
    PyObject* exit_kinds   # bytes, per code unit (owned; profile source)
