# Shared by the compiled block readers (_blocks.pyx, _walk.pyx): growing C arrays, reading
# varints and records, the stacks of calls and the stash of suspended generators.

cdef enum:
    DIRECT_KEYS = 1 << 17  # generator keys below this are looked up in an array; others in a dict


ctypedef struct Rec:          # one record of a block, as _next_record read it (records.py: the kinds)
    int tag
    int kind
    int64_t ts                # absolute: the block's base plus every delta so far
    uint64_t code             # CALL
    uint64_t key              # CALL (0: none), YIELD .. THROW, PAUSE, STEP, TASK, RENAME
    uint64_t n                # PAUSE, STEP: nanoseconds; GAP: records dropped; TASK, HANDOFF .. RENAME
    Py_ssize_t vpos           # CALL: its argument previews; RETURN: its value; UNWIND: its type
                              # name then message; -1 when it has none


cdef int _grow(void** p, Py_ssize_t* cap, Py_ssize_t need, size_t item) except -1:
    cdef Py_ssize_t n = cap[0] if cap[0] else 16
    cdef void* q
    if need <= cap[0]:
        return 0
    while n < need:
        n *= 2
    q = realloc(p[0], n * item)
    if q == NULL:
        raise MemoryError
    memset(<char*>q + cap[0] * item, 0, (n - cap[0]) * item)
    p[0] = q
    cap[0] = n
    return 0


cdef inline int _varint(const unsigned char* d, Py_ssize_t* pos, Py_ssize_t end, uint64_t* out) noexcept:
    # an unsigned LEB128 varint at pos; -1 when cut or longer than 64 bits
    cdef uint64_t v = 0
    cdef int shift = 0
    cdef unsigned char b
    while True:
        if pos[0] >= end or shift > 63:
            return -1
        b = d[pos[0]]
        pos[0] += 1
        v |= (<uint64_t>(b & 0x7F)) << shift
        if b < 0x80:
            out[0] = v
            return 0
        shift += 7


cdef inline int _skip_strings(const unsigned char* d, Py_ssize_t* pos, Py_ssize_t end, uint64_t count) noexcept:
    # step over `count` block strings (varint length, bytes); -1 when the block ends inside one
    cdef uint64_t i, size
    for i in range(count):
        if _varint(d, pos, end, &size) < 0 or size > <uint64_t>(end - pos[0]):
            return -1
        pos[0] += <Py_ssize_t>size
    return 0


cdef inline int _next_record(const unsigned char* d, Py_ssize_t* pos, Py_ssize_t end, Rec* r) noexcept:
    # the record at pos into r (r.ts carries the running clock, as the pure twins' loops do:
    # past the record's time even when the rest of it is cut); -1 when cut, damaged or of a
    # kind this reader does not know
    cdef uint64_t z, count
    cdef int kind
    r.tag = d[pos[0]]
    pos[0] += 1
    kind = r.tag & 0x0F
    r.kind = kind
    r.vpos = -1
    if kind == 1 and (_varint(d, pos, end, &r.code) < 0 or r.code > 0x7FFFFFFF):
        return -1
    if _varint(d, pos, end, &z) < 0:
        return -1
    r.ts += <int64_t>((z >> 1) ^ (0 - (z & 1)))
    if kind == 1:  # CALL
        r.key = 0
        if r.tag & 0x40 and _varint(d, pos, end, &r.key) < 0:
            return -1
        if r.tag & 0x80:  # argument previews
            r.vpos = pos[0]
            if _varint(d, pos, end, &count) < 0 or count > <uint64_t>(end - pos[0]):
                return -1
            return _skip_strings(d, pos, end, count)
        return 0
    if kind == 2:  # RETURN
        if r.tag & 0x80:
            r.vpos = pos[0]
            return _skip_strings(d, pos, end, 1)
        return 0
    if kind == 3:  # UNWIND: type name, message
        r.vpos = pos[0]
        return _skip_strings(d, pos, end, 2)
    if 4 <= kind <= 6:  # YIELD, RESUME, THROW
        return _varint(d, pos, end, &r.key)
    if kind == 7 or 11 <= kind <= 13:  # GAP; HANDOFF, ENTER, LEAVE
        return _varint(d, pos, end, &r.n)
    if 8 <= kind <= 10 or kind == 14:  # PAUSE, STEP, TASK, RENAME
        if _varint(d, pos, end, &r.key) < 0:
            return -1
        return _varint(d, pos, end, &r.n)
    return -1


cdef inline str _string_at(bytes data, Py_ssize_t* pos):
    # the block string at pos (checked by _next_record), pos moved past it
    cdef uint64_t size
    _varint(<const unsigned char*>data, pos, len(data), &size)
    pos[0] += <Py_ssize_t>size
    return data[pos[0] - <Py_ssize_t>size : pos[0]].decode("utf-8", "replace")


cdef inline int _push_index(int32_t** items, int32_t* n, int32_t* cap, int32_t e) except -1:
    # e on top of a stack of pool indices
    cdef Py_ssize_t c = cap[0]
    if n[0] >= c:
        _grow(<void**>items, &c, n[0] + 1, sizeof(int32_t))
        cap[0] = <int32_t>c
    items[0][n[0]] = e
    n[0] += 1
    return 0


cdef inline int32_t _stash_take(int32_t* direct, Py_ssize_t cap, dict big, uint64_t key) except -2:
    # the pool index of the generator suspended under key (-1: none), taken out of the stash
    cdef int32_t e
    if key < DIRECT_KEYS:
        if <Py_ssize_t>key >= cap:
            return -1
        e = direct[key] - 1
        direct[key] = 0
        return e
    return <int32_t>big.pop(key, -1)


cdef inline int _stash_keep(int32_t** direct, Py_ssize_t* cap, dict big, uint64_t key, int32_t e) except -1:
    # the generator at pool index e suspended under key
    if key < DIRECT_KEYS:
        _grow(<void**>direct, cap, <Py_ssize_t>key + 1, sizeof(int32_t))
        direct[0][key] = e + 1
    else:
        big[key] = e
    return 0
