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
    void PyErr_SetInterrupt()
    unsigned long PyType_GetFlags(void*)
    unsigned long Py_TPFLAGS_HEAPTYPE
    unsigned long Py_TPFLAGS_TYPE_SUBCLASS

cdef enum:
    _ITEM_CAP = 144          # one item's text: a 64-character string fully escaped, quoted
    _TEXT_CAP = 1024         # a container's text previewed in C (longer: the previewer)
    _SCAN_MAX = 16           # strings of one container checked by the secret scan
    _SCAN_FREE = 11          # strings this short without = or : hold no secret (redact._SHORT)
    _ITEM_STR = 64           # longest string inside a container formatted in C

cdef object _scan = None           # redact._SCAN: the one combined search of every value format
cdef object _names = None          # the redactor's name cache: name -> is it secret
cdef object _registry = None       # preview._registry: registered previews (C path off when any)
cdef void* _stdlib_types[16]       # types preview.py formats by value (not as <TypeName>)
cdef int _n_stdlib = 0
cdef int _pv_str = 256             # the previewer's max_str, max_items and max_depth
cdef int _pv_items = 8
cdef int _pv_depth = 3
cdef bint _pv_repr = False         # HANDIT_PREVIEW=repr: user __repr__ runs (the previewer's job)
cdef PyObject* _type_cache_tp[256]     # type -> b"<TypeName>" (both owned)
cdef PyObject* _type_cache_text[256]
cdef const char* _REDACTED_TEXT = b"<redacted>"


cdef void _set_previewer(object previewer) noexcept:
    # the settings the C previews follow (set_policy; Python allowed)
    global _previewer, _scan, _names, _registry, _pv_str, _pv_items, _pv_depth, _pv_repr, _n_stdlib
    import datetime, decimal, uuid
    from . import preview, redact
    _previewer = previewer
    _scan = redact._SCAN
    _names = previewer.redactor._names
    _registry = preview._registry
    _n_stdlib = 0
    for tp in (datetime.datetime, datetime.date, datetime.time, datetime.timedelta, decimal.Decimal, uuid.UUID):
        if id(tp) in preview._STDLIB and _n_stdlib < 16:
            _stdlib_types[_n_stdlib] = <void*>tp
            _n_stdlib += 1
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

# Character classes of printable ASCII, one table lookup a character: not printable
# ASCII, the quotes and backslash (repr escapes them), and where a value format of
# redact.py may start (see _trigger_at).
cdef enum:
    _CC_BAD = 1
    _CC_SQ = 2
    _CC_DQ = 4
    _CC_BS = 8
    _CC_TRIG = 16

cdef unsigned char _CC[256]


cdef void _init_classes() noexcept:
    cdef int c
    cdef const unsigned char* trig = b"-_.:=AJBb23456"
    for c in range(256):
        _CC[c] = _CC_BAD if (c < 0x20 or c > 0x7E) else 0
    _CC[0x27] |= _CC_SQ
    _CC[0x22] |= _CC_DQ
    _CC[0x5C] |= _CC_BS
    for c in range(14):
        _CC[trig[c]] |= _CC_TRIG


_init_classes()


cdef inline bint _at(const unsigned char* d, Py_ssize_t n, Py_ssize_t i, const char* lit, Py_ssize_t k) noexcept nogil:
    # d[i:i+k] == lit, within bounds
    return i >= 0 and i + k <= n and memcmp(d + i, lit, k) == 0


cdef bint _trigger_at(const unsigned char* d, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    # Whether a value format of redact.py may start at d[i]: every branch of its combined
    # pattern starts at one of the _CC_TRIG characters, in the context checked here (the
    # branch's literal prefix and lookbehind). tests/test_preview_fast.py checks it
    # against the pattern.
    cdef unsigned char e, c = d[i]
    if c == 0x3A or c == 0x3D:  # ':' '=': key/value pairs, URL credentials
        return True
    if c == 0x2D:  # '-'
        return (_at(d, n, i + 1, b"----", 4) or _at(d, n, i - 2, b"sk", 2) or _at(d, n, i - 4, b"xox", 3)
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
    if 0x32 <= c <= 0x36 and i + 1 < n:  # '2'-'6' then digits: a card number
        e = d[i + 1]
        return 0x30 <= e <= 0x39 or ((e == 0x20 or e == 0x2D) and i + 2 < n and 0x30 <= d[i + 2] <= 0x39)
    return False


cdef inline bint _triggers_in(const unsigned char* d, Py_ssize_t n, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
    # whether a value format may start in d[start:end]
    cdef Py_ssize_t i
    for i in range(start, end):
        if (_CC[d[i]] & _CC_TRIG) and _trigger_at(d, n, i):
            return True
    return False


def _may_hold_secret_text(str s):
    """Test hook: whether the C prefilter sends an ASCII string to the secret scan."""
    cdef bytes data = s.encode("ascii")
    return _triggers_in(<const unsigned char*><char*>data, len(data), 0, len(data))


cdef Py_ssize_t _str_repr(char* out, Py_ssize_t cap, PyObject* s, bint* scan) noexcept:
    # repr() of a printable-ASCII str into out (quote ' unless it holds ' and no "), or -1
    # when it is not printable ASCII or its repr passes `cap` bytes. *scan: a value format
    # may match, the regex must look (one pass over the characters decides both).
    cdef Py_ssize_t i = 0, n = 0, length = PyUnicode_GET_LENGTH(s)
    cdef const unsigned char* d
    cdef unsigned char c, cls, flags = 0, quote = 0x27
    cdef bint may = False
    if not PyUnicode_IS_ASCII(s) or length + 2 > cap:
        return -1
    d = <const unsigned char*>PyUnicode_DATA(s)
    # eight characters a step, their classes or-ed (~2 instructions a character); a step
    # holding a character a format may start at is looked at one character at a time
    while i + 8 <= length:
        cls = (_CC[d[i]] | _CC[d[i + 1]] | _CC[d[i + 2]] | _CC[d[i + 3]]
               | _CC[d[i + 4]] | _CC[d[i + 5]] | _CC[d[i + 6]] | _CC[d[i + 7]])
        flags |= cls
        if (cls & _CC_TRIG) and not may:
            may = _triggers_in(d, length, i, i + 8)
        i += 8
    if i < length:
        for n in range(i, length):
            flags |= _CC[d[n]]
        if not may:
            may = _triggers_in(d, length, i, length)
    if flags & _CC_BAD:
        return -1
    scan[0] = may
    if (flags & _CC_SQ) and not (flags & _CC_DQ):
        quote = 0x22
    out[0] = <char>quote
    if not (flags & (_CC_SQ | _CC_DQ | _CC_BS)):
        memcpy(out + 1, d, length)
        out[length + 1] = <char>quote
        return length + 2
    n = 1
    for i in range(length):
        c = d[i]
        if c == 0x5C or c == quote:
            if n + 3 > cap:
                return -1
            out[n] = 0x5C
            n += 1
        elif n + 2 > cap:
            return -1
        out[n] = <char>c
        n += 1
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


cdef int _item_text(char* out, PyObject* v, PyObject** scan, int* nscan) noexcept:
    # an item of a container: a scalar, or a printable-ASCII str of up to 64 characters
    # (kept in `scan`, a new reference, when the secret search must look at it); -1 for
    # anything else
    cdef int n = _scalar_text(out, v)
    cdef bint may = False
    if n >= 0 or not PyUnicode_CheckExact(v) or PyUnicode_GET_LENGTH(v) > _ITEM_STR:
        return n
    n = <int>_str_repr(out, _ITEM_CAP, v, &may)
    if n >= 0 and may:
        if nscan[0] == _SCAN_MAX:
            return -1
        Py_INCREF(<object>v)
        scan[nscan[0]] = v
        nscan[0] += 1
    return n


cdef int _join_text(char* out, int used, int shown, Py_ssize_t n, char close, bint one_tuple) noexcept:
    # closes a container's text as preview._join does; `used` bytes are written (the
    # opening bracket and the items, ", " between them). Returns the length.
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


cdef int _container_text(char* out, PyObject* v, PyObject** scan, int* nscan) noexcept:
    # a list, tuple, set or dict of scalars and short strings, as the previewer writes it
    # (items cut at max_items; the whole within max_str); -1 for anything else. No Python
    # code runs here: the items are exact builtin scalars, the keys exact str.
    cdef Py_ssize_t n, i = 0, pos = 0
    cdef int used = 1, shown = 0, k, budget = _pv_str
    cdef PyObject* item
    cdef PyObject* key
    cdef PyObject* it
    cdef PyObject* secret
    cdef char close
    cdef bint is_dict = False
    cdef char tmp[_ITEM_CAP]
    if budget > _TEXT_CAP - 32:
        return -1
    if PyList_CheckExact(v):
        n = PyList_GET_SIZE(v)
        out[0] = b'['
        close = b']'
    elif PyTuple_CheckExact(v):
        n = PyTuple_GET_SIZE(v)
        out[0] = b'('
        close = b')'
    elif PyDict_CheckExact(v):
        n = PyDict_GET_SIZE(v)
        out[0] = b'{'
        close = b'}'
        is_dict = True
    elif type(<object>v) is set:
        n = len(<object>v)
        if n == 0:
            memcpy(out, b"set()", 5)
            return 5
        out[0] = b'{'
        close = b'}'
    else:
        return -1
    if n == 0:
        out[1] = close
        return 2
    if _pv_depth < 1 or n > 1000000:
        return -1
    if is_dict:
        while shown < _pv_items and PyDict_Next(v, &pos, &key, &item):
            secret = NULL
            if not PyUnicode_CheckExact(key):
                k = _scalar_text(tmp, key)
            else:
                secret = PyDict_GetItem(<PyObject*>_names, key)  # the redactor's cached decision
                if secret == NULL:
                    return -1  # not decided yet: the previewer decides (and caches) it
                k = _item_text(tmp, key, scan, nscan)
            if k < 0 or used + k + 4 > budget:
                return -1
            if shown:
                memcpy(out + used, b", ", 2)
                used += 2
            memcpy(out + used, tmp, k)
            used += k
            memcpy(out + used, b": ", 2)
            used += 2
            if secret == Py_True:
                memcpy(out + used, _REDACTED_TEXT, 10)
                used += 10
            else:
                k = _item_text(tmp, item, scan, nscan)
                if k < 0 or used + k + 2 > budget:
                    return -1
                memcpy(out + used, tmp, k)
                used += k
            shown += 1
    elif close == b'}':  # a set: items in its iteration order
        it = PyObject_GetIter(v)
        if it == NULL:
            PyErr_Clear()
            return -1
        k = 0
        while shown < _pv_items:
            item = PyIter_Next(it)
            if item == NULL:
                break
            k = _item_text(tmp, item, scan, nscan)
            Py_DECREF(<object>item)
            if k < 0 or used + k + 2 > budget:
                k = -1
                break
            if shown:
                memcpy(out + used, b", ", 2)
                used += 2
            memcpy(out + used, tmp, k)
            used += k
            shown += 1
        Py_DECREF(<object>it)
        if k < 0 or PyErr_Occurred() != NULL:
            PyErr_Clear()
            return -1
    else:
        for i in range(n if n < _pv_items else _pv_items):
            item = PyList_GET_ITEM(v, i) if close == b']' else PyTuple_GET_ITEM(v, i)
            k = _item_text(tmp, item, scan, nscan)
            if k < 0 or used + k + 2 > budget:
                return -1
            if shown:
                memcpy(out + used, b", ", 2)
                used += 2
            memcpy(out + used, tmp, k)
            used += k
            shown += 1
    # the previewer stops adding items once 2 + sum(len(item) + 2) reaches max_str
    if used + 1 + 2 > budget:
        return -1
    return _join_text(out, used, shown, n, close, close == b')' and n == 1)


cdef int _type_text(OutBuf* b, PyObject* v) noexcept:
    # "<TypeName>" of an instance of a class (safe mode, no registered previews): 1 when
    # written, 0 when the previewer must look at it, -1 when memory runs out
    cdef void* tp = Py_TYPE(v)
    cdef unsigned long flags = PyType_GetFlags(tp)
    cdef int h
    cdef PyObject* text
    if _pv_repr or not (flags & Py_TPFLAGS_HEAPTYPE) or (flags & Py_TPFLAGS_TYPE_SUBCLASS):
        return 0
    if len(_registry):
        return 0
    for h in range(_n_stdlib):
        if _stdlib_types[h] == tp:
            return 0
    h = <int>((<size_t>tp >> 4) & 255)
    if _type_cache_tp[h] != <PyObject*>tp:
        try:
            name = ("<" + type_name(<object>tp) + ">").encode("utf-8")
        except BaseException:
            PyErr_Clear()
            return 0
        Py_XDECREF(_type_cache_tp[h])
        Py_XDECREF(_type_cache_text[h])
        Py_INCREF(<object>tp)
        Py_INCREF(name)
        _type_cache_tp[h] = <PyObject*>tp
        _type_cache_text[h] = <PyObject*>name
    text = _type_cache_text[h]
    return -1 if _put_raw(b, PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text)) < 0 else 1


cdef int _scan_clean(PyObject** scan, int nscan) noexcept:
    # 1 when no value format matches any of the strings (and drops them), else 0
    cdef int k, clean = 1
    cdef PyObject* m
    for k in range(nscan):
        if clean:
            m = PyObject_CallOneArg(<PyObject*>_scan, scan[k])
            if m == NULL:
                PyErr_Clear()
                clean = 0
            else:
                if m != Py_None:
                    clean = 0
                Py_DECREF(<object>m)
        Py_DECREF(<object>scan[k])
    return clean


cdef int _put_preview(TState* ts, OutBuf* b, PyObject* v) noexcept:
    # the preview of v appended to b as a block string (never raises; 0, or -1 when memory
    # runs out). C first; anything else through the previewer, user code contained.
    cdef char text[_TEXT_CAP]
    cdef PyObject* scan[_SCAN_MAX]
    cdef int nscan = 0, n = -1, done
    cdef bint may = False
    if _pv_str >= 16:  # the C formats assume a short string is never cut (config allows >= 16)
        n = _scalar_text(text, v)
    if _pv_str < 16:
        pass
    elif n < 0 and PyUnicode_CheckExact(v) and PyUnicode_GET_LENGTH(v) <= _pv_str:
        # a str within max_str: its repr, when printable ASCII and no secret format matches
        n = <int>_str_repr(text, min(_pv_str + 2, _TEXT_CAP), v, &may)
        if n >= 0 and may:
            Py_INCREF(<object>v)
            scan[0] = v
            nscan = 1
    elif n < 0:
        n = _container_text(text, v, scan, &nscan)
        if n < 0:
            for done in range(nscan):
                Py_DECREF(<object>scan[done])
            nscan = 0
            done = _type_text(b, v)
            if done:
                return 0 if done > 0 else -1
    if n >= 0 and (nscan == 0 or _scan_clean(scan, nscan)):
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
    if _blob_start(&b, 16 + 16 * n) < 0:
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
