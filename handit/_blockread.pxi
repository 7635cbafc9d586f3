# Shared by the compiled block readers (_blocks.pyx, _walk.pyx): growing C arrays, reading varints.


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
