# Values path of the compiled engine (included by _tracer.pyx): argument and return values
# -> their previews, taken at the event and encoded into a malloc'd blob that the record
# points to. No reference to a user's object outlives the call, and nothing of it is
# Python memory (tracemalloc does not see plain malloc). Values whose preview is their
# repr() and that no secret format can match are formatted here in C, byte for byte what
# Previewer.preview gives (tests/test_preview_fast.py compares them); the rest goes
# through the Python previewer.

cdef extern from "Python.h":
    PyObject* PyObject_CallOneArg(PyObject*, PyObject*)
    bint PyList_CheckExact(PyObject*)
    bint PyTuple_CheckExact(PyObject*)
    bint PyDict_CheckExact(PyObject*)
    bint PyDict_Next(PyObject*, Py_ssize_t*, PyObject**, PyObject**)
    PyObject* PyDict_GetItem(PyObject*, PyObject*)
    Py_ssize_t PyDict_GET_SIZE(PyObject*)
    Py_ssize_t PyList_GET_SIZE(PyObject*)
    PyObject* PyList_GET_ITEM(PyObject*, Py_ssize_t)
    PyObject* PyObject_GetIter(PyObject*)
    PyObject* PyIter_Next(PyObject*)
    bint PyUnicode_Check(PyObject*)
    PyObject* Py_False
    object PyUnicode_DecodeASCII(const char*, Py_ssize_t, const char*)
    void PyErr_SetInterrupt()

cdef enum:
    _TEXT_CAP = 1024         # a value's text previewed in C (max_str above ~960: the previewer)
    _SCAN_MAX = 16           # strings of one value the redactor is asked about
    _PATH_MAX = 8            # container nesting previewed in C

cdef object _redact_text = None    # the previewer's Redactor.redact_text (returns its argument when clean)
cdef object _names = None          # the redactor's name cache: name -> is it secret
cdef object _registry = None       # preview._registry: registered previews (C path off when any)
cdef object _type_decision = None  # preview._type_text: "<TypeName>", or None when the previewer writes it
cdef int _pv_str = 256             # the previewer's max_str, max_items and max_depth
cdef int _pv_items = 8
cdef int _pv_depth = 3
cdef bint _pv_repr = False         # HANDIT_PREVIEW=repr: user __repr__ runs (the previewer's job)
cdef PyObject* _type_cache_tp[1024]    # type -> b"<TypeName>" or None (both owned); 1024: a
cdef PyObject* _type_cache_text[1024]  # test suite's hundreds of TestCase classes thrashed 256


cdef void _set_previewer(object previewer) noexcept:
    # the settings the C previews follow (set_policy; Python allowed)
    global _previewer, _redact_text, _names, _registry, _type_decision, _pv_str, _pv_items, _pv_depth, _pv_repr
    from . import preview
    _previewer = previewer
    _redact_text = previewer.redactor.redact_text
    _names = previewer.redactor._names
    _registry = preview._registry
    _type_decision = preview._type_text
    _pv_str = previewer.max_str
    _pv_items = previewer.max_items
    _pv_depth = previewer.max_depth
    _pv_repr = previewer.mode == "repr"


cdef inline void _interrupt_again() noexcept:
    # a KeyboardInterrupt caught inside a callback (a Ctrl-C, or a user __repr__ raising it
    # on the main thread): delivered again, so the program is still interrupted once the
    # callback returns (a no-op when SIGINT is ignored, as a real Ctrl-C would be)
    PyErr_SetInterrupt()


# ---- blobs: a record's encoded values -------------------------------------------------------

cdef inline int _blob_start(OutBuf* b, size_t cap) noexcept:
    # a blob is a 4-byte length, then the block-format bytes of the values
    b.data = <char*>malloc(cap)
    if b.data == NULL:
        return -1
    b.cap = cap
    b.len = 4
    return 0


cdef inline PyObject* _blob_end(OutBuf* b) noexcept:
    cdef uint32_t n = <uint32_t>(b.len - 4)
    memcpy(b.data, &n, 4)
    return <PyObject*>b.data


cdef inline bint _holds_blob(uint8_t kind) noexcept nogil:
    # calls and returns carry a blob; unwinds a (type name, message) tuple
    return kind == K_CALL or kind == K_RETURN


cdef inline void _free_aux(uint8_t kind, PyObject* aux) noexcept:
    if _holds_blob(kind):
        free(aux)
    elif kind != K_PAUSE and kind != K_STEP:  # their aux is a count of clock ticks
        Py_XDECREF(aux)


cdef inline int _put_blob(OutBuf* b, PyObject* blob) noexcept nogil:
    # a blob's bytes appended to a block; frees the blob. 0, or -1 when memory runs out
    cdef uint32_t n
    memcpy(&n, blob, 4)
    if _reserve(b, n) < 0:
        free(blob)
        return -1
    memcpy(b.data + b.len, (<char*>blob) + 4, n)
    b.len += n
    free(blob)
    return 0


cdef inline int _put_raw(OutBuf* b, const char* text, Py_ssize_t n) noexcept:
    if _reserve(b, n + 10) < 0:
        return -1
    _put_varint(b, n)
    memcpy(b.data + b.len, text, n)
    b.len += n
    return 0


# ---- previews in C --------------------------------------------------------------------------

# Character classes of ASCII, one table lookup a character: what repr escapes (control
# characters and DEL as \t \n \r \xNN, the quotes, backslash), where a value format of
# redact.py may start (see _trigger_at), and the characters of a key before "=" or ":".
cdef enum:
    _CC_ESC = 1
    _CC_SQ = 2
    _CC_DQ = 4
    _CC_BS = 8
    _CC_TRIG = 16
    _CC_KEY = 32
    _CC_SEP = 64

cdef unsigned char _CC[256]
cdef const char* _REDACTED_TEXT = b"<redacted>"
cdef const char* _HEX = b"0123456789abcdef"


cdef void _init_classes() noexcept:
    cdef int c
    cdef const unsigned char* trig = b"-_.:=AJBb23456"
    cdef const unsigned char* key = b"_.-0123456789"
    for c in range(256):
        _CC[c] = _CC_ESC if (c < 0x20 or c > 0x7E) else 0
        if 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A:
            _CC[c] |= _CC_KEY
    _CC[0x27] |= _CC_SQ
    _CC[0x22] |= _CC_DQ
    _CC[0x5C] |= _CC_BS
    _CC[0x3A] |= _CC_SEP
    _CC[0x3D] |= _CC_SEP
    for c in range(14):
        _CC[trig[c]] |= _CC_TRIG
    for c in range(13):
        _CC[key[c]] |= _CC_KEY


_init_classes()


cdef inline bint _at(const unsigned char* d, Py_ssize_t n, Py_ssize_t i, const char* lit, Py_ssize_t k) noexcept nogil:
    # d[i:i+k] == lit, within bounds
    return i >= 0 and i + k <= n and memcmp(d + i, lit, k) == 0


cdef inline bint _is_digit(unsigned char c) noexcept nogil:
    return 0x30 <= c <= 0x39


cdef bint _key_may_be_secret(const unsigned char* d, Py_ssize_t i) noexcept:
    # The key/value branches of redact.py at the separator d[i]: the key is read backwards
    # as redact._KEY_BACKWARDS reads it (up to 8 blanks, 3 quotes or backslashes, then 1-64
    # key characters) and looked up in the redactor's name cache. False only when there is
    # no key or the cache says it is not secret (redact_text would leave the value alone);
    # a name not decided yet goes to the previewer, which decides and caches it.
    cdef Py_ssize_t j = i, end, stop
    cdef int k = 0
    cdef PyObject* hit
    while k < 8 and j > 0 and (d[j - 1] == 0x20 or d[j - 1] == 0x09):
        j -= 1
        k += 1
    k = 0
    while k < 3 and j > 0 and (d[j - 1] == 0x22 or d[j - 1] == 0x27 or d[j - 1] == 0x5C):
        j -= 1
        k += 1
    end = j
    stop = end - 64 if end > 64 else 0
    while j > stop and (_CC[d[j - 1]] & _CC_KEY):
        j -= 1
    if j == end:
        return False
    if _names is None:
        return True
    try:
        key = PyUnicode_DecodeASCII(<const char*>(d + j), end - j, NULL)
    except BaseException:
        PyErr_Clear()
        return True
    hit = PyDict_GetItem(<PyObject*>_names, <PyObject*>key)
    return hit != Py_False


cdef int _card_at(const unsigned char* d, Py_ssize_t n, Py_ssize_t i, Py_ssize_t* end) noexcept nogil:
    # redact.py's card branch at the digit d[i]: 0 when it does not match; else *end is
    # where the match ends and the result is 1 when the Luhn check fails (redact_text
    # leaves it and searches on from *end), 2 when it passes (redacted). The branch: not
    # after a digit or '.', then 12-18 digits each after at most one ' ' or '-', not
    # followed by a digit (the regex backtracks to the longest such run).
    cdef Py_ssize_t ends[19]
    cdef Py_ssize_t j = i + 1
    cdef int groups = 0, k, total = 0, digit
    cdef bint odd = False
    if i > 0 and (_is_digit(d[i - 1]) or d[i - 1] == 0x2E):
        return 0
    while groups < 18 and j < n:
        if (d[j] == 0x20 or d[j] == 0x2D) and j + 1 < n and _is_digit(d[j + 1]):
            j += 2
        elif _is_digit(d[j]):
            j += 1
        else:
            break
        groups += 1
        ends[groups] = j
    for k in range(groups, 11, -1):
        if ends[k] < n and _is_digit(d[ends[k]]):
            continue
        for j in range(ends[k] - 1, i - 1, -1):
            if _is_digit(d[j]):
                digit = d[j] - 0x30
                if odd:
                    digit *= 2
                    if digit > 9:
                        digit -= 9
                total += digit
                odd = not odd
        end[0] = ends[k]
        return 2 if total % 10 == 0 else 1
    return 0


cdef int _trigger_at(const unsigned char* d, Py_ssize_t n, Py_ssize_t i) noexcept:
    # Whether a value format of redact.py may start at d[i] and change the text (1; 2 for a
    # card number that passes the Luhn check, which _str_repr redacts itself): every
    # branch of its combined pattern starts at one of the _CC_TRIG characters, in the
    # context checked here (the branch's literal prefix and lookbehind; a key/value pair
    # only under a key that may be secret). tests/test_preview_fast.py checks it against
    # the redactor.
    cdef unsigned char c = d[i]
    cdef Py_ssize_t end
    if c == 0x3A:  # ':': "://" of URL credentials, or key: value
        if i + 1 < n and (d[i + 1] == 0x3A or d[i + 1] == 0x2F):
            return _at(d, n, i + 1, b"//", 2)
        return _key_may_be_secret(d, i)
    if c == 0x3D:  # '=': key=value
        if i + 1 < n and d[i + 1] == 0x3D:
            return False
        return _key_may_be_secret(d, i)
    if c == 0x2D:  # '-'
        return (_at(d, n, i, b"-----BEGIN", 10) or _at(d, n, i - 2, b"sk", 2) or _at(d, n, i - 4, b"xox", 3)
                or _at(d, n, i - 4, b"xapp", 4) or _at(d, n, i - 4, b"pypi", 4) or _at(d, n, i - 4, b"gl", 2)
                or _at(d, n, i - 5, b"gl", 2) or _at(d, n, i - 6, b"gl", 2))
    if c == 0x5F:  # '_'
        return (_at(d, n, i - 2, b"sk", 2) or _at(d, n, i - 2, b"rk", 2) or _at(d, n, i - 5, b"whsec", 5)
                or _at(d, n, i - 2, b"hf", 2) or _at(d, n, i - 3, b"gh", 2) or _at(d, n, i - 6, b"github", 6)
                or _at(d, n, i - 3, b"npm", 3) or _at(d, n, i - 5, b"shp", 3) or _at(d, n, i - 3, b"do", 2))
    if c == 0x2E:  # '.'
        return _at(d, n, i - 2, b"SG", 2) or _at(d, n, i + 1, b"slack.com/", 10) or _at(d, n, i + 1, b"com/api/webhooks/", 17)
    if c == 0x41:  # 'A': AKIA, ASIA, AIza
        return _at(d, n, i + 1, b"KIA", 3) or _at(d, n, i + 1, b"SIA", 3) or _at(d, n, i + 1, b"Iza", 3)
    if c == 0x4A:  # 'J' of eyJ
        return _at(d, n, i - 2, b"ey", 2)
    if c == 0x42 or c == 0x62:  # 'B' 'b': Bearer, Basic
        return (_at(d, n, i + 1, b"earer", 5) or _at(d, n, i + 1, b"asic", 4)
                or (c == 0x42 and (_at(d, n, i + 1, b"EARER", 5) or _at(d, n, i + 1, b"ASIC", 4))))
    if 0x32 <= c <= 0x36:  # '2'-'6': a card number
        return 2 if _card_at(d, n, i, &end) == 2 else 0
    return False


cdef inline int _triggers_in(const unsigned char* d, Py_ssize_t n, Py_ssize_t start, Py_ssize_t end) noexcept:
    # the value formats that may start in d[start:end]: 1 (the redactor must look), 2 (only
    # card numbers), or 0
    cdef Py_ssize_t i
    cdef int found = 0
    for i in range(start, end):
        if _CC[d[i]] & _CC_TRIG:
            found |= _trigger_at(d, n, i)
            if found & 1:
                return found
    return found


def _may_hold_secret_text(str s):
    """Test hook: whether the C prefilter sends an ASCII string to the redactor."""
    cdef bytes data = s.encode("ascii")
    return _triggers_in(<const unsigned char*><char*>data, len(data), 0, len(data)) != 0


cdef inline Py_ssize_t _put_escaped(char* out, Py_ssize_t n, Py_ssize_t cap, unsigned char c, unsigned char quote) noexcept nogil:
    # one character of an ASCII str as repr writes it, at out[n]; the new n, or -1 past cap
    # (one byte is kept for the closing quote)
    if c == 0x5C or c == quote:
        if n + 3 > cap:
            return -1
        out[n] = 0x5C
        out[n + 1] = <char>c
        return n + 2
    if _CC[c] & _CC_ESC:
        if n + 5 > cap:
            return -1
        out[n] = 0x5C
        if c == 0x09 or c == 0x0A or c == 0x0D:
            out[n + 1] = b't' if c == 0x09 else (b'n' if c == 0x0A else b'r')
            return n + 2
        out[n + 1] = b'x'
        out[n + 2] = _HEX[c >> 4]
        out[n + 3] = _HEX[c & 15]
        return n + 4
    if n + 2 > cap:
        return -1
    out[n] = <char>c
    return n + 1


cdef Py_ssize_t _str_repr(char* out, Py_ssize_t cap, PyObject* s, bint* scan) noexcept:
    # repr() of an ASCII str into out (quote ' unless it holds ' and no "), with card
    # numbers redacted as redact_text redacts them, or -1 when it is not ASCII or its repr
    # passes `cap` bytes. *scan: another value format may match, the redactor must look
    # (one pass over the characters decides both).
    cdef Py_ssize_t i = 0, n = 0, end = 0, length = PyUnicode_GET_LENGTH(s)
    cdef const unsigned char* d
    cdef unsigned char c, cls, flags = 0, quote = 0x27
    cdef int may = 0, card
    if not PyUnicode_IS_ASCII(s) or length + 2 > cap:
        return -1
    d = <const unsigned char*>PyUnicode_DATA(s)
    # eight characters a step, their classes or-ed (~2 instructions a character); a step
    # holding a character a format may start at is looked at one character at a time
    while i + 8 <= length:
        cls = (_CC[d[i]] | _CC[d[i + 1]] | _CC[d[i + 2]] | _CC[d[i + 3]]
               | _CC[d[i + 4]] | _CC[d[i + 5]] | _CC[d[i + 6]] | _CC[d[i + 7]])
        flags |= cls
        if (cls & _CC_TRIG) and not (may & 1):
            may |= _triggers_in(d, length, i, i + 8)
        i += 8
    if i < length:
        for n in range(i, length):
            flags |= _CC[d[n]]
        if not (may & 1):
            may |= _triggers_in(d, length, i, length)
    if may == 2 and (flags & _CC_SEP):
        may = 1  # a key before a separator would be read up to the redacted card: the redactor's job
    scan[0] = may == 1
    if (flags & _CC_SQ) and not (flags & _CC_DQ):
        quote = 0x22
    out[0] = <char>quote
    if may != 2 and not (flags & (_CC_SQ | _CC_DQ | _CC_BS | _CC_ESC)):
        memcpy(out + 1, d, length)
        out[length + 1] = <char>quote
        return length + 2
    n = 1
    i = 0
    while i < length:
        c = d[i]
        if may == 2 and 0x32 <= c <= 0x36:
            # redact_text's search: a card that passes is replaced, one that fails is skipped
            card = _card_at(d, length, i, &end)
            if card == 2:
                if n + 11 > cap:
                    return -1
                memcpy(out + n, _REDACTED_TEXT, 10)
                n += 10
                i = end
                continue
            if card == 1:
                while i < end:
                    n = _put_escaped(out, n, cap, d[i], quote)
                    if n < 0:
                        return -1
                    i += 1
                continue
        n = _put_escaped(out, n, cap, c, quote)
        if n < 0:
            return -1
        i += 1
    out[n] = <char>quote
    return n + 1


cdef int _scalar_text(char* out, PyObject* v) noexcept:
    # repr() of None, a bool, an int or float below 10**12 (a card number has 13+ digits),
    # into out (40 bytes); -1 for anything else
    cdef uint64_t bits
    cdef FloatText* slot
    cdef int n, overflow = 0
    cdef long long i
    cdef double d
    cdef char* text
    if v == Py_None:
        memcpy(out, b"None", 4)
        return 4
    if PyBool_Check(v):
        if v == Py_True:
            memcpy(out, b"True", 4)
            return 4
        memcpy(out, b"False", 5)
        return 5
    if PyLong_CheckExact(v):
        i = PyLong_AsLongLongAndOverflow(v, &overflow)
        if overflow != 0 or not (-_INT_LIMIT < i < _INT_LIMIT):
            PyErr_Clear()
            return -1
        return _format_int(out, i)
    if PyFloat_CheckExact(v):
        d = PyFloat_AS_DOUBLE(v)
        if not (-1e12 < d < 1e12):
            return -1
        memcpy(&bits, &d, sizeof(double))
        slot = &_float_cache[(bits ^ (bits >> 29) ^ (bits >> 47)) & 255]
        if slot.length > 0 and memcmp(&d, &slot.value, sizeof(double)) == 0:
            memcpy(out, slot.text, slot.length)
            return slot.length
        text = PyOS_double_to_string(d, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
        if text == NULL:
            PyErr_Clear()
            return -1
        n = <int>strlen(text)
        if n < 32:
            memcpy(out, text, n)
            memcpy(slot.text, text, n)
            slot.value = d
            slot.length = n
        PyMem_Free(text)
        return n if n < 32 else -1
    return -1


cdef struct PreviewWork:
    # one C preview under way: strings the redactor must look at (new references), the
    # containers on the path (cycles), the deepest container level reached
    PyObject* scan[_SCAN_MAX]
    int nscan
    PyObject* path[_PATH_MAX]


cdef int _join_text(char* out, int used, int shown, Py_ssize_t n, char close, bint one_tuple) noexcept:
    # closes a container's text as preview._join does; `used` bytes are written (the
    # opening bracket and the items, ", " between them). Returns the length (at most 30
    # bytes more than `used`).
    if shown == n:
        if one_tuple:
            out[used] = b','
            used += 1
        out[used] = close
        return used + 1
    if shown:
        memcpy(out + used, b", ", 2)
        used += 2
    memcpy(out + used, b"\xe2\x80\xa6", 3)  # ELLIPSIS
    used += 3
    out[used] = close
    used += 1
    memcpy(out + used, b" (len=", 6)
    used += 6
    used += _format_int(out + used, n)
    out[used] = b')'
    return used + 1


cdef int _item_text(char* out, int room, PyObject* v, int depth, PreviewWork* w) noexcept:
    # v's preview as preview.Previewer._any writes it at `depth` when nothing is cut, into
    # out[:room]; its length, or -1 when the previewer must write it (or it passes room)
    cdef char tmp[40]
    cdef int n
    cdef Py_ssize_t k
    cdef bint may = False
    n = _scalar_text(tmp, v)
    if n >= 0:
        if n > room:
            return -1
        memcpy(out, tmp, n)
        return n
    if PyUnicode_CheckExact(v):
        k = _str_repr(out, room, v, &may)
        if k >= 0 and may:
            if w.nscan == _SCAN_MAX:
                return -1
            Py_INCREF(<object>v)
            w.scan[w.nscan] = v
            w.nscan += 1
        return <int>k
    n = _container_text(out, room, v, depth, w)
    if n == -2:
        return _type_text(out, room, v)
    return n


cdef int _container_text(char* out, int room, PyObject* v, int depth, PreviewWork* w) noexcept:
    # A list, tuple, dict, set or frozenset at `depth`, as the previewer writes it when
    # nothing is cut: items are scalars, ASCII strings, other containers and objects
    # shown as <TypeName>. -2 when v is not one of those containers, -1 when the
    # previewer must write it. No Python code runs: the items are read with the C API.
    cdef Py_ssize_t n, i = 0, pos = 0
    cdef int used = 1, shown = 0, k, limit, lead = 0
    cdef PyObject* item
    cdef PyObject* key
    cdef PyObject* it
    cdef PyObject* secret
    cdef char close
    cdef int kind  # 0 list, 1 tuple, 2 dict, 3 set
    if PyList_CheckExact(v):
        n = PyList_GET_SIZE(v)
        kind = 0
        close = b']'
    elif PyTuple_CheckExact(v):
        n = PyTuple_GET_SIZE(v)
        kind = 1
        close = b')'
    elif PyDict_CheckExact(v):
        n = PyDict_GET_SIZE(v)
        kind = 2
        close = b'}'
    elif type(<object>v) is set or type(<object>v) is frozenset:
        n = len(<object>v)
        kind = 3
        close = b'}'
        if type(<object>v) is frozenset:
            lead = 10
            if n == 0:
                if room < 11:
                    return -1
                memcpy(out, b"frozenset()", 11)
                return 11
        elif n == 0:
            if room < 5:
                return -1
            memcpy(out, b"set()", 5)
            return 5
    else:
        return -2
    if room < lead + 40:
        return -1
    if lead:
        memcpy(out, b"frozenset(", 10)
        out += lead
        room -= lead + 1
    out[0] = b'{' if close == b'}' else (b'[' if close == b']' else b'(')
    if n == 0:
        out[1] = close
        return 2
    for i in range(depth):
        if w.path[i] == v:
            depth = _pv_depth  # a cycle: shown as the previewer shows it, "[...]"
            break
    if depth >= _pv_depth:
        memcpy(out + 1, b"...", 3)
        out[4] = close
        if lead:
            out[5] = b')'
        return 5 + (lead + 1 if lead else 0)
    if depth >= _PATH_MAX or n > 1000000:
        return -1
    w.path[depth] = v
    room -= 32  # _join_text's "…) (len=N)"
    if depth == 0 and room > _pv_str - 2 + 1:
        # nothing is cut anywhere when the body is within max_str - 2 (each nested part
        # then fits the limit the previewer gives it): longer goes to the previewer
        room = _pv_str - 2 + 1
    if kind == 2:
        while shown < _pv_items and PyDict_Next(v, &pos, &key, &item):
            if shown:
                if used + 2 > room:
                    return -1
                memcpy(out + used, b", ", 2)
                used += 2
            secret = NULL
            if PyUnicode_CheckExact(key):
                secret = PyDict_GetItem(<PyObject*>_names, key)  # the redactor's cached decision
                if secret == NULL:
                    return -1  # not decided yet: the previewer decides (and caches) it
            elif PyUnicode_Check(key):
                return -1  # a str subclass: its name is checked too
            k = _item_text(out + used, room - used, key, depth + 1, w)
            if k < 0 or used + k + 2 > room:
                return -1
            used += k
            memcpy(out + used, b": ", 2)
            used += 2
            if secret == Py_True:
                if used + 10 > room:
                    return -1
                memcpy(out + used, _REDACTED_TEXT, 10)
                used += 10
            else:
                k = _item_text(out + used, room - used, item, depth + 1, w)
                if k < 0:
                    return -1
                used += k
            shown += 1
    elif kind == 3:  # a set: items in its iteration order
        it = PyObject_GetIter(v)
        if it == NULL:
            PyErr_Clear()
            return -1
        k = 0
        while shown < _pv_items:
            item = PyIter_Next(it)
            if item == NULL:
                break
            if shown:
                if used + 2 > room:
                    Py_DECREF(<object>item)
                    k = -1
                    break
                memcpy(out + used, b", ", 2)
                used += 2
            k = _item_text(out + used, room - used, item, depth + 1, w)
            Py_DECREF(<object>item)
            if k < 0:
                break
            used += k
            shown += 1
        Py_DECREF(<object>it)
        if k < 0 or PyErr_Occurred() != NULL:
            PyErr_Clear()
            return -1
    else:
        for i in range(n if n < _pv_items else _pv_items):
            if shown:
                if used + 2 > room:
                    return -1
                memcpy(out + used, b", ", 2)
                used += 2
            item = PyList_GET_ITEM(v, i) if kind == 0 else PyTuple_GET_ITEM(v, i)
            k = _item_text(out + used, room - used, item, depth + 1, w)
            if k < 0:
                return -1
            used += k
            shown += 1
    k = _join_text(out, used, shown, n, close, kind == 1 and n == 1)
    if lead:
        out[k] = b')'
        k += lead + 1
    return k


cdef int _type_text(char* out, int room, PyObject* v) noexcept:
    # "<TypeName>" of an object the previewer shows so in safe mode (preview._type_text
    # decides once per type: not a builtin container or scalar, a standard-library value,
    # a class, a function, a dataclass, a named tuple or an enum member) into out[:room];
    # its length, or -1 when the previewer must write it
    cdef void* tp = Py_TYPE(v)
    cdef int h
    cdef PyObject* text
    if _pv_repr or PyDict_GET_SIZE(<PyObject*>_registry):
        return -1
    h = <int>(((<size_t>tp >> 4) ^ (<size_t>tp >> 14)) & 1023)
    if _type_cache_tp[h] != <PyObject*>tp:
        try:
            decided = _type_decision(<object>tp)
            name = None if decided is None else decided.encode("utf-8")
        except BaseException:
            PyErr_Clear()
            return -1
        Py_XDECREF(_type_cache_tp[h])
        Py_XDECREF(_type_cache_text[h])
        Py_INCREF(<object>tp)
        Py_INCREF(name)
        _type_cache_tp[h] = <PyObject*>tp
        _type_cache_text[h] = <PyObject*>name
    text = _type_cache_text[h]
    if text == Py_None or PyBytes_GET_SIZE(text) > room:
        return -1
    memcpy(out, PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text))
    return <int>PyBytes_GET_SIZE(text)


cdef int _scan_clean(PyObject** scan, int nscan) noexcept:
    # 1 when the redactor leaves every one of the strings as it is (and drops them), else 0
    cdef int k, clean = 1
    cdef PyObject* m
    for k in range(nscan):
        if clean:
            m = PyObject_CallOneArg(<PyObject*>_redact_text, scan[k])
            if m == NULL:
                PyErr_Clear()
                clean = 0
            else:
                if m != scan[k]:
                    clean = 0
                Py_DECREF(<object>m)
        Py_DECREF(<object>scan[k])
    return clean


cdef int _put_preview(TState* ts, OutBuf* b, PyObject* v) noexcept:
    # the preview of v appended to b as a block string (never raises; 0, or -1 when memory
    # runs out). C first; anything else through the previewer, user code contained.
    cdef char text[_TEXT_CAP]
    cdef PreviewWork w
    cdef int n = -1, k
    cdef bint may = False
    w.nscan = 0
    if _pv_str < 16:  # the C formats assume a short string is never cut (config allows >= 16)
        return _put_previewed(ts, b, v)
    n = _scalar_text(text, v)
    if n >= 0:
        return _put_raw(b, text, n)
    if PyUnicode_CheckExact(v):
        if PyUnicode_GET_LENGTH(v) <= _pv_str:
            # a str within max_str: its repr, when ASCII and the redactor leaves it alone
            n = <int>_str_repr(text, min(_pv_str + 2, _TEXT_CAP), v, &may)
            if n >= 0 and may:
                Py_INCREF(<object>v)
                w.scan[0] = v
                w.nscan = 1
    elif _pv_str <= _TEXT_CAP - 64:
        n = _container_text(text, _TEXT_CAP - 8, v, 0, &w)
        if n == -2:
            n = _type_text(text, _TEXT_CAP, v)  # an object: never cut
    if n < 0:
        for k in range(w.nscan):
            Py_DECREF(<object>w.scan[k])
    elif w.nscan == 0 or _scan_clean(w.scan, w.nscan):
        return _put_raw(b, text, n)
    return _put_previewed(ts, b, v)


cdef int _put_previewed(TState* ts, OutBuf* b, PyObject* v) noexcept:
    # the previewer's text of v appended to b (user code contained: whatever it raises
    # gives a placeholder, a KeyboardInterrupt is delivered again); 0, or -1 when memory
    # runs out. Apart from _put_preview, whose C paths then need no exception frame.
    cdef int n
    ts.busy = 1
    try:
        _put_string(b, _previewer.preview(<object>v))
        n = 0
    except KeyboardInterrupt:
        _interrupt_again()
        n = _put_raw(b, b"<unpreviewable: KeyboardInterrupt>", 34)
    except BaseException:
        n = _put_raw(b, b"<unpreviewable>", 15)
    ts.busy = 0
    return n


cdef inline void _forget_exception(TState* ts) noexcept:
    # the exception cached for unwinds through several frames is not kept alive (with its
    # traceback, frames and their locals) once the thread calls or returns normally again
    if ts.last_exc != NULL:
        Py_DECREF(<object>ts.last_exc)
        ts.last_exc = NULL
        Py_XDECREF(ts.last_exc_text)
        ts.last_exc_text = NULL


cdef PyObject* _value_blob(TState* ts, PyObject* value) noexcept:
    # a return value's preview as a blob, or NULL when memory runs out; never raises
    cdef OutBuf b
    if _blob_start(&b, 64) < 0:
        return NULL
    if _put_preview(ts, &b, value) < 0:
        free(b.data)
        return NULL
    return _blob_end(&b)


cdef PyObject* _args(TState* ts, CInfo* ci, PyFrameObject* frame, void* iframe) noexcept:
    # the arguments' previews as a blob (a count, then one string each), or NULL when
    # memory runs out; never raises. Secret-named arguments are never read.
    cdef Py_ssize_t i, n = ci.nargs
    cdef PyObject* secret = PyTuple_GET_ITEM(ci.info, 7)
    cdef PyObject* v
    cdef OutBuf b
    cdef int failed = 0
    _forget_exception(ts)
    if _blob_start(&b, 256 + 16 * n) < 0:  # a string near max_str fits without a realloc
        return NULL
    _put_varint(&b, n)
    for i in range(n):
        if PyTuple_GET_ITEM(secret, i) == Py_True:
            failed = _put_raw(&b, _REDACTED_TEXT, 10)
        else:
            v = handit_frame_arg(frame, iframe, <int>i)
            if v == NULL:  # not bound yet (a cell, or deleted): an empty string
                failed = _put_raw(&b, b"", 0)
            else:
                failed = _put_preview(ts, &b, v)
                Py_DECREF(<object>v)
        if failed < 0:
            free(b.data)
            return NULL
    return _blob_end(&b)

