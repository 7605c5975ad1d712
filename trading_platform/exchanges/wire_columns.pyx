# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# (cdivision: C's division and modulo, without Python's sign handling: every operand here is non-negative.)
"""Wire structs' fields -> Arrow columns, in compiled code: the kernel of every exchange's field mapping.

A tick's trades arrive as thousands of msgspec structs. Built in Python, each column was a list comprehension
over them and a conversion of that list to Arrow: two passes per column, a Python list per column, an Arrow
converter inspecting every value, and every struct (with its strings and floats) alive until the tick's end.
Here each field is read straight from its struct slot (the offset its member descriptor records, which is how
``getattr`` reads it too, without the lookup) and appended to its column's buffer, all columns in one pass.
The decode appends each chunk's trades as soon as its messages are handled (``WireColumns.extend``), so the
structs are freed while still in the CPU cache, and the columns become Arrow arrays once per tick (``take``).
Measured on the benchmark's Coinbase frames (a tick of 5,000 frames, ~6,900 trades): the Python mapping took
2.9 ms of a 9.9 ms tick; reading the fields here takes 0.4 ms and the mapping left in Python 0.2 ms.

Only what that needs is here: text, float64, int64 and bool columns from struct fields, and RFC3339 times read
from text into UTC microseconds. Anything else (a value of another type, a name that is no struct field) raises,
naming the field: a wire struct's types are fixed by its decoder, so that is a bug, not bad input. A time is
parsed here only in the shape every feed prints (``YYYY-MM-DDTHH:MM:SS``, up to nine fraction digits, ``Z``);
any other text is left null for ``conversions.rfc3339_timestamps`` to judge, so both agree on every text.

The frames of an exchange's common trade message can skip the structs too: ``WireColumns.scan`` reads their JSON
straight into the columns, for frames of a ``FrameShape`` the exchange declares (``Exchange.trade_frame``). After
the field mapping, the typed decode was the largest cost left (Coinbase: 3.5 ms of a 6.9 ms tick, a str, two floats
and a struct per trade, freed again at once); the scan makes no object at all: a Coinbase tick took 1.6x less time.
It reads only what it can read exactly as msgspec would: no escape, no byte above ASCII, no number of more than 19
significant digits or beyond the normal doubles, no key given twice; a frame off the shape in any of these, or in
any other detail, is left whole to the typed decode, which accepts, rejects or classifies it by its own rules.
"""

cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset

import types

import pyarrow as pa

from trading_platform.exchanges.conversions import UTC_US


cdef extern from "Python.h":
    ctypedef struct PyObject
    ctypedef struct PyMemberDef:
        const char* name
        int type
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member
    PyObject* Py_TYPE_PTR "(PyObject *)Py_TYPE"(PyObject*)
    PyObject* PyList_GET_ITEM(object, Py_ssize_t)
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL
    bint PyUnicode_IS_COMPACT_ASCII(PyObject*)
    void* PyUnicode_DATA(PyObject*)
    Py_ssize_t PyUnicode_GET_LENGTH(PyObject*)
    bint PyUnicode_CheckExact(PyObject*)
    bint PyFloat_CheckExact(PyObject*)
    double PyFloat_AS_DOUBLE(PyObject*)
    bint PyLong_CheckExact(PyObject*)
    long long PyLong_AsLongLong(object) except? -1
    PyObject* Py_True
    PyObject* Py_False
    double PyOS_string_to_double(const char*, char**, PyObject*) except? -1.0
    bint PyBytes_CheckExact(PyObject*)
    char* PyBytes_AS_STRING(PyObject*)
    Py_ssize_t PyBytes_GET_SIZE(PyObject*)


cdef extern from "structmember.h":
    int T_OBJECT_EX  # a field slot holding an object (AttributeError when unset): what msgspec's fields are


cdef enum Kind:
    TEXT
    FLOAT
    INT
    FLAG
    TIME


cdef dict _KINDS = {pa.string(): TEXT, pa.float64(): FLOAT, pa.int64(): INT, pa.bool_(): FLAG, UTC_US: TIME}
# 10000-01-01T00:00:00Z in µs since the epoch: the first time past what RFC3339 (and msgspec) can spell.
cdef int64_t _YEAR_10000_US = 253402300800000000
_MEMBER = types.MemberDescriptorType


cdef struct Buffer:
    char* data
    Py_ssize_t size  # bytes in use (bits: the bytes the rows' bits reach)
    Py_ssize_t capacity


cdef inline int _digits(const char* text, int first, int count) noexcept nogil:
    """The number ``count`` ASCII digits from ``first`` spell, or -1."""
    cdef int value = 0
    cdef int at
    cdef char c
    for at in range(first, first + count):
        c = text[at]
        if c < 48 or c > 57:
            return -1
        value = value * 10 + (c - 48)
    return value


cdef bint _rfc3339_us(const char* text, Py_ssize_t length, int64_t* micros) noexcept nogil:
    """``YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`` -> µs since the epoch (fractions rounded half-up to the µs, as msgspec
    rounds); False for any other text, or a date or time out of range."""
    cdef int year, month, day, hour, minute, second, digits, fraction, days_in_month, at
    cdef int64_t nanos = 0, era_year, era, year_of_era, day_of_year, day_of_era, days
    if length < 20 or text[length - 1] != 90:  # "Z"
        return False
    if text[4] != 45 or text[7] != 45 or text[10] != 84 or text[13] != 58 or text[16] != 58:  # "-", "-", "T", ":"
        return False
    year, month, day = _digits(text, 0, 4), _digits(text, 5, 2), _digits(text, 8, 2)
    hour, minute, second = _digits(text, 11, 2), _digits(text, 14, 2), _digits(text, 17, 2)
    if year < 1 or month < 1 or month > 12 or day < 1 or hour < 0 or hour > 23 or minute < 0 or minute > 59:
        return False
    if second < 0 or second > 59:
        return False
    if month == 2:
        days_in_month = 29 if (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)) else 28
    else:
        days_in_month = 30 if month in (4, 6, 9, 11) else 31
    if day > days_in_month:
        return False
    if length > 20:
        digits = length - 21
        if text[19] != 46 or digits < 1 or digits > 9:  # "."
            return False
        fraction = _digits(text, 20, digits)
        if fraction < 0:
            return False
        nanos = fraction
        for at in range(9 - digits):
            nanos *= 10
    # Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    era_year = year - (1 if month <= 2 else 0)
    era = era_year // 400
    year_of_era = era_year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = era * 146097 + day_of_era - 719468
    micros[0] = ((days * 86400 + hour * 3600 + minute * 60 + second) * 1000000) + (nanos + 500) // 1000
    return micros[0] < _YEAR_10000_US


cdef inline const char* _utf8(PyObject* text, Py_ssize_t* length) except NULL:
    """A str's UTF-8 bytes: an ASCII str's own characters (what exchanges send), with no call."""
    if PyUnicode_IS_COMPACT_ASCII(text):
        length[0] = PyUnicode_GET_LENGTH(text)
        return <const char*>PyUnicode_DATA(text)
    return PyUnicode_AsUTF8AndSize(<object>text, length)


cdef inline int _reserve(Buffer* buffer, Py_ssize_t wanted) except -1:
    """Room for ``wanted`` bytes in all; new bytes are zeroed (bool columns only set their true bits)."""
    if wanted <= buffer.capacity:
        return 0
    return _grow(buffer, wanted)


cdef int _grow(Buffer* buffer, Py_ssize_t wanted) except -1:
    cdef Py_ssize_t capacity
    cdef char* grown
    capacity = max(2 * buffer.capacity, wanted, 256)
    grown = <char*>realloc(buffer.data, capacity)
    if not grown:
        raise MemoryError()
    memset(grown + buffer.capacity, 0, capacity - buffer.capacity)
    buffer.data = grown
    buffer.capacity = capacity
    return 0


# --- JSON tokens, for the scan of frames of a known shape (``FrameShape``, ``WireColumns.scan``) ----------------
# Each reader returns the byte after its token, or NULL for anything it does not read: the scan then leaves the
# frame to the typed decode, which accepts, rejects or classifies it by its own rules. So these read a strict
# subset of JSON, only ever reading a text the decode would read the same way: no escapes, no byte above ASCII,
# numbers of at most 19 significant digits.

cdef enum:
    MAX_DEPTH = 32  # nesting a skipped value may have
    MAX_SIGNIFICANT = 19  # digits: what a uint64 mantissa holds
    MAX_NUMBER_TEXT = 64  # bytes of a number the slow conversion copies


cdef uint64_t MAX_INT = <uint64_t>1 << 53  # the largest int a scan reads (see WireColumns._value)


cdef double[23] _EXACT_POWERS = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14,
                                 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22]


cdef struct Decimal:
    uint64_t mantissa  # the significant digits
    int significant  # how many (leading zeros are not)
    int exponent  # value = mantissa * 10 ** exponent
    bint negative
    bint integral  # no fraction, no exponent
    bint exact  # at most MAX_SIGNIFICANT significant digits and a short exponent: read into the fields above


cdef inline const char* _ws(const char* p, const char* end) noexcept nogil:
    while p < end and (p[0] == 32 or p[0] == 10 or p[0] == 13 or p[0] == 9):
        p += 1
    return p


cdef bint[256] _PLAIN  # the bytes a scanned string holds as they are: printable ASCII but '"' and '\\'


cdef void _plain_bytes() noexcept:
    cdef int byte
    for byte in range(256):
        _PLAIN[byte] = 32 <= byte < 128 and byte != 34 and byte != 92


_plain_bytes()


cdef inline const char* _text(const char* p, const char* end, const char** start, Py_ssize_t* length) noexcept nogil:
    """A string with no escape, control or non-ASCII byte; ``start``/``length``: its characters."""
    if p >= end or p[0] != 34:  # '"'
        return NULL
    p += 1
    start[0] = p
    while p < end and _PLAIN[<unsigned char>p[0]]:
        p += 1
    if p >= end or p[0] != 34:  # an escape, a control or non-ASCII byte, or no end
        return NULL
    length[0] = p - start[0]
    return p + 1


cdef inline const char* _literal(const char* p, const char* end, const char* word, Py_ssize_t length) noexcept nogil:
    if end - p < length or memcmp(p, word, length) != 0:
        return NULL
    return p + length


cdef const char* _decimal(const char* p, const char* end, Decimal* number) noexcept nogil:
    """A number in JSON's grammar (``-? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?``)."""
    cdef int exponent = 0, exponent_digits = 0
    cdef bint exponent_negative = False
    number.mantissa, number.significant, number.exponent = 0, 0, 0
    number.negative, number.integral, number.exact = False, True, True
    if p < end and p[0] == 45:  # "-"
        number.negative = True
        p += 1
    if p >= end or p[0] < 48 or p[0] > 57:
        return NULL
    if p[0] == 48:  # "0": no digit may follow
        p += 1
    else:
        while p < end and 48 <= p[0] <= 57:
            _digit(number, p[0] - 48, False)
            p += 1
    if p < end and p[0] == 46:  # "."
        number.integral = False
        p += 1
        if p >= end or p[0] < 48 or p[0] > 57:
            return NULL
        while p < end and 48 <= p[0] <= 57:
            _digit(number, p[0] - 48, True)
            p += 1
    if p < end and (p[0] == 101 or p[0] == 69):  # "e", "E"
        number.integral = False
        p += 1
        if p < end and (p[0] == 43 or p[0] == 45):
            exponent_negative = p[0] == 45
            p += 1
        if p >= end or p[0] < 48 or p[0] > 57:
            return NULL
        while p < end and 48 <= p[0] <= 57:
            if exponent_digits < 4:
                exponent = exponent * 10 + (p[0] - 48)
            exponent_digits += 1
            p += 1
        if exponent_digits > 4:
            number.exact = False
        number.exponent += -exponent if exponent_negative else exponent
    return p


cdef inline void _digit(Decimal* number, int digit, bint fraction) noexcept nogil:
    if fraction:
        number.exponent -= 1
    if digit == 0 and number.significant == 0:  # a leading zero
        return
    if number.significant == MAX_SIGNIFICANT:
        number.exact = False
        return
    number.mantissa = number.mantissa * 10 + digit
    number.significant += 1


cdef int _double(Decimal* number, const char* text, Py_ssize_t length, double* value) except -1:
    """The double nearest to the number (``text``: its JSON spelling); 0: left to the decode (too many digits,
    beyond the normal doubles' range, a negative zero)."""
    cdef char[MAX_NUMBER_TEXT + 1] copy
    if not number.exact:
        return 0
    if number.mantissa == 0:
        if number.negative:
            return 0
        value[0] = 0.0
        return 1
    if number.mantissa <= (<uint64_t>1 << 53) and -22 <= number.exponent <= 22:
        # Both operands exact doubles, so the one rounding of the product or quotient is the correct one (Clinger).
        if number.exponent >= 0:
            value[0] = <double>number.mantissa * _EXACT_POWERS[number.exponent]
        else:
            value[0] = <double>number.mantissa / _EXACT_POWERS[-number.exponent]
        if number.negative:
            value[0] = -value[0]
        return 1
    if number.exponent < -290 or number.exponent + number.significant > 300 or length > MAX_NUMBER_TEXT:
        return 0
    # The text, sign and all, correctly rounded, as msgspec reads it (Python's reader, also David Gay's algorithm).
    memcpy(copy, text, length)
    copy[length] = 0
    value[0] = PyOS_string_to_double(copy, NULL, NULL)
    return 1


cdef inline const char* _opened(const char* p, const char* end, char opening, char closing,
                                bint* closed) noexcept nogil:
    """Past a container's opening byte and the whitespace after it; ``closed``: it is empty, and ``p`` past it."""
    if p >= end or p[0] != opening:
        return NULL
    p = _ws(p + 1, end)
    closed[0] = p < end and p[0] == closing
    return p + 1 if closed[0] else p


cdef inline const char* _member_key(const char* p, const char* end, const char** key,
                                    Py_ssize_t* length) noexcept nogil:
    """An object member's ``"key":`` and the whitespace around: where its value starts."""
    p = _text(p, end, key, length)
    if p == NULL:
        return NULL
    p = _ws(p, end)
    if p >= end or p[0] != 58:  # ":"
        return NULL
    return _ws(p + 1, end)


cdef inline const char* _after(const char* p, const char* end, char closing, bint* closed) noexcept nogil:
    """After a container's member or element: past its "," (and whitespace), or past the container's end
    (``closed``)."""
    p = _ws(p, end)
    if p < end and p[0] == 44:  # ","
        closed[0] = False
        return _ws(p + 1, end)
    if p < end and p[0] == closing:
        closed[0] = True
        return p + 1
    return NULL


cdef const char* _skip(const char* p, const char* end, int depth) noexcept nogil:
    """Any JSON value (a field the shape does not name), read for its validity only."""
    cdef const char* start
    cdef Py_ssize_t length
    cdef Decimal number
    cdef char closing
    cdef bint closed
    if p >= end:
        return NULL
    if p[0] == 34:
        return _text(p, end, &start, &length)
    if p[0] == 123 or p[0] == 91:  # "{", "["
        if depth == MAX_DEPTH:
            return NULL
        closing = 125 if p[0] == 123 else 93
        p = _opened(p, end, p[0], closing, &closed)
        while not closed:
            if closing == 125:
                p = _member_key(p, end, &start, &length)
                if p == NULL:
                    return NULL
            p = _skip(p, end, depth + 1)
            if p == NULL:
                return NULL
            p = _after(p, end, closing, &closed)
            if p == NULL:
                return NULL
        return p
    if p[0] == 116:
        return _literal(p, end, b"true", 4)
    if p[0] == 102:
        return _literal(p, end, b"false", 5)
    if p[0] == 110:
        return _literal(p, end, b"null", 4)
    return _decimal(p, end, &number)


cdef enum:
    STRING_TOKEN
    NUMBER_TOKEN
    TRUE_TOKEN
    FALSE_TOKEN


cdef inline uint64_t _all(int count) noexcept nogil:
    """The bits of ``count`` (0 to 64) keys, all seen."""
    return 0 if count == 0 else (~<uint64_t>0) >> (64 - count)


cdef struct Text:
    const char* text
    Py_ssize_t length


cdef inline int _place(const Text* texts, int count, const char* text, Py_ssize_t length) noexcept nogil:
    """Where ``text`` is among ``texts``; -1: nowhere. (A few keys each: a look at each beats a hash.)"""
    cdef int place
    for place in range(count):
        if texts[place].length == length and memcmp(texts[place].text, text, length) == 0:
            return place
    return -1


cdef inline void _bit(char* bits, Py_ssize_t row, bint on) noexcept nogil:
    if on:
        (<uint8_t*>bits)[row >> 3] |= <uint8_t>(1 << (row & 7))
    else:
        (<uint8_t*>bits)[row >> 3] &= <uint8_t>~(1 << (row & 7))


# --- frame shapes ----------------------------------------------------------------------------------------------

class _Marker:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


class _Trades(_Marker):
    """Trade objects; called with keys, those whose keys also hold these strings: ``TRADE(e="trade")``."""

    def __init__(self, name, constants=None):
        super().__init__(name)
        self.constants = dict(constants or {})

    def __call__(self, **constants):
        return _Trades(self.name, constants)

    def __repr__(self):
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.constants.items())})"


SEQUENCE = _Marker("SEQUENCE")  # the frame's sequence number: a non-negative JSON integer
TRADES = _Trades("TRADES")  # an array of one or more trade objects
TRADE = _Trades("TRADE")  # one trade object

cdef enum NodeKind:
    OBJECT  # its members required (each once), other keys skipped
    CONSTANT  # exactly this string
    NUMBERED  # SEQUENCE
    ONE  # an array of exactly one element
    TRADE_ARRAY  # TRADES
    TRADE_OBJECT  # TRADE


cdef struct Node:
    int kind
    int first  # OBJECT, TRADE_*: its first member in ``member_keys``/``member_nodes``; ONE: its element's node
    int count  # OBJECT, TRADE_*: its members (a trade object's: the strings it holds besides its fields)
    Text constant  # CONSTANT: the string


cdef struct Field:  # a key of the trade objects
    uint64_t columns  # the columns its value goes to (bit per column)
    int first_choice  # the strings it may hold, in ``choices`` (none: any)
    int choice_count


cdef class FrameShape:
    """The shape of the frames the compiled scan reads (``WireColumns.scan``): nested dicts (a JSON object with
    these keys, each once; other keys skipped), a one-element list (an array of exactly one such element), a
    str (exactly that string), ``SEQUENCE`` (the frame's sequence number) and ``TRADES`` or ``TRADE`` (an array
    of trade objects, or one): objects holding every name of ``trade_fields`` (the columns' fields), each value
    of its column's type (an int from 0 to 2**53), and, called with keys (``TRADE(e="trade")``), those strings too.
    ``choices``: a field's allowed strings (a Literal of the wire struct). ``lax``: a float column also reads a
    number spelled as a string, as msgspec's lax decoders (``strict=False``) do."""

    cdef Node* nodes
    cdef Text* member_keys  # the OBJECT nodes' keys, each object's together
    cdef int* member_nodes  # the node of each one's value
    cdef Text* field_keys
    cdef Field* fields
    cdef Text* choices
    cdef int field_count
    cdef int root
    cdef readonly bint numbered  # it holds a SEQUENCE
    cdef readonly bint lax
    cdef readonly tuple trade_fields
    cdef list _texts  # the bytes the pointers above point into

    def __cinit__(self, layout, trade_fields, choices=None, *, lax=False):
        cdef int index
        self.trade_fields = tuple(trade_fields)
        self.lax = lax
        self._texts = []
        nodes, members = [], []
        self.root = self._compile(layout, nodes, members)
        names = list(dict.fromkeys(name for name, _ in self.trade_fields))
        if len(self.trade_fields) > 64 or len(names) > 64:
            raise ValueError("a frame shape reads at most 64 trade fields")
        choices = dict(choices or {})
        unknown = set(choices) - set(names)
        if unknown:
            raise ValueError(f"choices for fields that are not trade fields: {sorted(unknown)}")
        allowed = [text for name in names for text in choices.get(name, ())]
        self.nodes = <Node*>malloc(max(len(nodes), 1) * sizeof(Node))
        self.member_keys = <Text*>malloc(max(len(members), 1) * sizeof(Text))
        self.member_nodes = <int*>malloc(max(len(members), 1) * sizeof(int))
        self.field_keys = <Text*>malloc(max(len(names), 1) * sizeof(Text))
        self.fields = <Field*>malloc(max(len(names), 1) * sizeof(Field))
        self.choices = <Text*>malloc(max(len(allowed), 1) * sizeof(Text))
        if not (self.nodes and self.member_keys and self.member_nodes and self.field_keys and self.fields
                and self.choices):
            raise MemoryError()
        for index, (kind, first, count, constant) in enumerate(nodes):
            self.nodes[index] = Node(kind, first, count, self._text(constant or ""))
        for index, (key, node) in enumerate(members):
            self.member_keys[index], self.member_nodes[index] = self._text(key), node
        self.field_count = len(names)
        first_choice = 0
        for index, name in enumerate(names):
            columns = sum(1 << column for column, (field, _) in enumerate(self.trade_fields) if field == name)
            self.field_keys[index] = self._text(name)
            self.fields[index] = Field(columns, first_choice, len(choices.get(name, ())))
            first_choice += len(choices.get(name, ()))
        for index, text in enumerate(allowed):
            self.choices[index] = self._text(text)

    def __dealloc__(self):
        free(self.nodes)
        free(self.member_keys)
        free(self.member_nodes)
        free(self.field_keys)
        free(self.fields)
        free(self.choices)

    cdef Text _text(self, str text) except *:
        data = text.encode("ascii")  # a scanned key or string is ASCII, so only such a one can match
        self._texts.append(data)
        return Text(<const char*>data, len(data))

    def _compile(self, layout, list nodes, list members):
        """The node index of ``layout``; its children compiled first, so an object's members lie together."""
        if isinstance(layout, dict):
            if len(layout) > 64:
                raise ValueError("a frame shape's object names at most 64 keys")
            children = [(key, self._compile(value, nodes, members)) for key, value in layout.items()]
            nodes.append((OBJECT, len(members), len(children), None))
            members.extend(children)
        elif isinstance(layout, str):
            nodes.append((CONSTANT, 0, 0, layout))
        elif isinstance(layout, list) and len(layout) == 1:
            nodes.append((ONE, self._compile(layout[0], nodes, members), 0, None))
        elif layout is SEQUENCE:
            self.numbered = True
            nodes.append((NUMBERED, 0, 0, None))
        elif isinstance(layout, _Trades):
            if any(not isinstance(value, str) for value in layout.constants.values()) or len(layout.constants) > 64:
                raise TypeError(f"a trade object's keys besides its fields hold strings (at most 64): {layout!r}")
            constants = [(key, self._compile(value, nodes, members)) for key, value in layout.constants.items()]
            nodes.append((TRADE_ARRAY if layout.name == "TRADES" else TRADE_OBJECT, len(members), len(constants),
                          None))
            members.extend(constants)
        else:
            raise TypeError(f"not a frame shape: {layout!r}")
        return len(nodes) - 1


@cython.final  # its C methods called directly, not through a table: the per-row helpers inline
cdef class WireColumns:
    """Columns filled from batches of structs (``extend``) and taken as Arrow arrays (``take``), each row with
    the index of the frame it came from. The buffers are C memory, kept for the next rows after a take."""

    cdef tuple names
    cdef list arrow_types
    cdef int count
    cdef int* kinds
    cdef Buffer* values  # per column: float64 / int64 values (times: µs), bits (bool) or the texts' UTF-8
    cdef Buffer* text_offsets  # per text column: rows + 1 int32 offsets; per time column: validity bits
    cdef Buffer frames  # int64 frame index per row
    cdef Py_ssize_t rows
    cdef object item_type  # the struct type of the last row, whose slot offsets are in ``offsets``
    cdef Py_ssize_t* offsets
    cdef FrameShape shape  # the last shape scanned, known to be of these fields

    def __cinit__(self, fields):
        cdef int column
        self.names = tuple(name for name, _ in fields)
        self.arrow_types = [arrow_type for _, arrow_type in fields]
        self.count = len(self.names)
        self.kinds = <int*>malloc(max(self.count, 1) * sizeof(int))
        self.offsets = <Py_ssize_t*>malloc(max(self.count, 1) * sizeof(Py_ssize_t))
        self.values = <Buffer*>malloc(max(self.count, 1) * sizeof(Buffer))
        self.text_offsets = <Buffer*>malloc(max(self.count, 1) * sizeof(Buffer))
        if not (self.kinds and self.offsets and self.values and self.text_offsets):
            raise MemoryError()
        for column in range(self.count):
            self.values[column] = Buffer(NULL, 0, 0)
            self.text_offsets[column] = Buffer(NULL, 0, 0)
        self.frames = Buffer(NULL, 0, 0)
        for column in range(self.count):
            arrow_type = self.arrow_types[column]
            if arrow_type not in _KINDS:
                raise TypeError(f"field {self.names[column]!r}: {arrow_type} columns are not supported")
            self.kinds[column] = _KINDS[arrow_type]
        self._empty()

    def __dealloc__(self):
        cdef int column
        if self.values and self.text_offsets:
            for column in range(self.count):
                free(self.values[column].data)
                free(self.text_offsets[column].data)
        free(self.frames.data)
        free(self.kinds)
        free(self.offsets)
        free(self.values)
        free(self.text_offsets)

    cdef int _empty(self) except -1:
        cdef int column
        self.rows = 0
        self.frames.size = 0
        for column in range(self.count):
            if self.kinds[column] == FLAG:
                memset(self.values[column].data, 0, self.values[column].size)
            elif self.kinds[column] == TIME:
                memset(self.text_offsets[column].data, 0, self.text_offsets[column].size)
                self.text_offsets[column].size = 0
            self.values[column].size = 0
            if self.kinds[column] == TEXT:
                _reserve(&self.text_offsets[column], sizeof(int32_t))
                (<int32_t*>self.text_offsets[column].data)[0] = 0
                self.text_offsets[column].size = sizeof(int32_t)
        return 0

    def __len__(self):
        return self.rows

    cdef int _layout(self, PyObject* item_type) except -1:
        """The slot offset of each field in ``item_type``'s instances."""
        cdef PyMemberDescrObject* member
        cdef int column
        struct_type = <object>item_type
        self.item_type = None  # until every offset is in: a type refused half-way must not keep another's layout
        for column in range(self.count):
            descriptor = getattr(struct_type, self.names[column], None)
            if type(descriptor) is not _MEMBER:
                raise TypeError(f"{struct_type.__name__}.{self.names[column]} is not a struct field")
            member = <PyMemberDescrObject*>descriptor
            if member.d_member.type != T_OBJECT_EX:
                raise TypeError(f"{struct_type.__name__}.{self.names[column]} does not hold an object")
            self.offsets[column] = member.d_member.offset
        self.item_type = struct_type
        return 0

    def extend(self, list items, frames):
        """Append one row per struct of ``items``; ``frames``: the frame index of each (a list or range of ints,
        as long as ``items``)."""
        cdef Py_ssize_t count = len(items)
        cdef Py_ssize_t row, at
        cdef int column, kind
        cdef PyObject* item
        cdef PyObject* value
        cdef Buffer* buffer
        cdef const char* utf8
        cdef Py_ssize_t length
        if len(frames) != count:
            raise ValueError(f"{count} structs but {len(frames)} frame indices")
        self._room(self.rows + count)
        for row in range(count):
            item = PyList_GET_ITEM(items, row)
            if self.item_type is None or Py_TYPE_PTR(item) != <PyObject*>self.item_type:
                self._layout(Py_TYPE_PTR(item))
            at = self.rows
            for column in range(self.count):
                value = (<PyObject**>((<char*>item) + self.offsets[column]))[0]
                if value == NULL:
                    raise AttributeError(f"{type(<object>item).__name__}.{self.names[column]} is not set")
                kind = self.kinds[column]
                buffer = &self.values[column]
                if kind == TEXT:
                    if not PyUnicode_CheckExact(value):
                        _wrong(self.names[column], "str", <object>value)
                    utf8 = _utf8(value, &length)
                    self._text_at(column, at, utf8, length)
                elif kind == FLOAT:
                    if PyFloat_CheckExact(value):
                        (<double*>buffer.data)[at] = PyFloat_AS_DOUBLE(value)
                    elif PyLong_CheckExact(value):
                        (<double*>buffer.data)[at] = float(<object>value)
                    else:
                        _wrong(self.names[column], "float", <object>value)
                elif kind == INT:
                    if not PyLong_CheckExact(value):
                        _wrong(self.names[column], "int", <object>value)
                    (<int64_t*>buffer.data)[at] = PyLong_AsLongLong(<object>value)
                elif kind == TIME:
                    if not PyUnicode_CheckExact(value):
                        _wrong(self.names[column], "str", <object>value)
                    utf8 = _utf8(value, &length)
                    self._time_at(column, at, utf8, length)
                elif value == Py_True or value == Py_False:
                    _bit(buffer.data, at, value == Py_True)
                else:
                    _wrong(self.names[column], "bool", <object>value)
            # Only a complete row counts: one that raised half-way is written over by the next.
            (<int64_t*>self.frames.data)[at] = frames[row]
            self.rows = at + 1
        self._sized()

    cdef void _sized(self) noexcept:
        """Each buffer's size in use, from the complete rows (``rows``)."""
        cdef int column
        for column in range(self.count):
            if self.kinds[column] == TEXT:
                self.text_offsets[column].size = (self.rows + 1) * sizeof(int32_t)
            elif self.kinds[column] == FLAG:
                self.values[column].size = (self.rows + 7) // 8
            else:
                self.values[column].size = self.rows * 8
                if self.kinds[column] == TIME:
                    self.text_offsets[column].size = (self.rows + 7) // 8
        self.frames.size = self.rows * sizeof(int64_t)

    def take(self):
        """(one Arrow array per field, the int64 frame index of each row), and empty for the next rows."""
        cdef int column
        cdef Py_ssize_t rows = self.rows
        cdef Py_ssize_t size
        columns = []
        for column in range(self.count):
            size = self.values[column].size
            if self.kinds[column] == TEXT:
                size = (<int32_t*>self.text_offsets[column].data)[rows]
            data = pa.py_buffer(PyBytes_FromStringAndSize(self.values[column].data, size))
            if self.kinds[column] == TEXT:
                offsets = pa.py_buffer(PyBytes_FromStringAndSize(self.text_offsets[column].data,
                                                                 (rows + 1) * sizeof(int32_t)))
                columns.append(pa.Array.from_buffers(pa.string(), rows, [None, offsets, data]))
            elif self.kinds[column] == TIME:
                valid = pa.py_buffer(PyBytes_FromStringAndSize(self.text_offsets[column].data, (rows + 7) // 8))
                nulls = rows - _set_bits(self.text_offsets[column].data, rows)
                columns.append(pa.Array.from_buffers(UTC_US, rows, [valid if nulls else None, data], nulls))
            else:
                columns.append(pa.Array.from_buffers(self.arrow_types[column], rows, [None, data]))
        frames = pa.Array.from_buffers(pa.int64(), rows, [None, pa.py_buffer(
            PyBytes_FromStringAndSize(self.frames.data, rows * sizeof(int64_t)))])
        self._empty()
        return columns, frames

    def scan(self, FrameShape shape, list frames, Py_ssize_t lo, Py_ssize_t hi, int64_t first_sequence=-1):
        """Rows read straight from the JSON of frames ``lo..hi-1``, no decoded object in between: from the first
        frame on, as long as each is of ``shape`` (for a numbered shape: and numbered ``first_sequence`` plus its
        place). Returns how many frames were read; their trades are appended with each frame's index. A frame that
        stops the scan adds nothing: it and the rest are left to the typed decode."""
        cdef Py_ssize_t index = lo
        cdef Py_ssize_t row
        cdef PyObject* frame
        cdef int64_t sequence
        self._check(shape)
        if shape.numbered and first_sequence < 0:
            raise ValueError("a numbered frame shape is scanned from a first sequence number")
        try:
            while index < hi:
                frame = PyList_GET_ITEM(frames, index)
                if not PyBytes_CheckExact(frame):
                    break
                row = self.rows
                if not self._frame(shape, PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame), &row, index, &sequence):
                    break
                if shape.numbered and sequence != first_sequence + (index - lo):
                    break
                self.rows = row
                index += 1
        finally:
            self._sized()
        return index - lo

    cdef int _frame(self, FrameShape shape, const char* text, Py_ssize_t length, Py_ssize_t* row, int64_t frame,
                    int64_t* sequence) except -1:
        """1: the frame's text is one value of ``shape`` (its trades written from ``row`` on, ``row`` moved past
        them, its number in ``sequence``); 0: it is not."""
        cdef const char* end = text + length
        cdef const char* at = _ws(text, end)
        sequence[0] = -1
        if self._node(shape, shape.root, &at, end, row, frame, sequence) != 1:
            return 0
        return _ws(at, end) == end

    cdef int _check(self, FrameShape shape) except -1:
        if shape is not self.shape:  # compared once per shape: a scan runs for every chunk of frames
            if shape.trade_fields != tuple(zip(self.names, self.arrow_types)):
                raise ValueError("the frame shape was made for other trade fields than these columns'")
            self.shape = shape
        return 0

    cdef int _node(self, FrameShape shape, int index, const char** at, const char* end, Py_ssize_t* row,
                   int64_t frame, int64_t* sequence) except -1:
        """The value at ``at`` as node ``index`` of ``shape``: 1 read (``at`` moved past it), 0 not of the shape."""
        cdef Node* node = &shape.nodes[index]
        cdef const char* p = at[0]
        cdef const char* key
        cdef Py_ssize_t length
        cdef uint64_t seen = 0
        cdef int place, status
        cdef bint closed
        cdef Decimal number
        if node.kind == OBJECT:
            p = _opened(p, end, 123, 125, &closed)  # "{", "}"
            if p == NULL:
                return 0
            while not closed:
                p = _member_key(p, end, &key, &length)
                if p == NULL:
                    return 0
                place = _place(shape.member_keys + node.first, node.count, key, length)
                if place < 0:
                    p = _skip(p, end, 1)
                    if p == NULL:
                        return 0
                else:
                    if seen & (<uint64_t>1 << place):  # a key given twice: the decode's to judge
                        return 0
                    seen |= <uint64_t>1 << place
                    at[0] = p
                    status = self._node(shape, shape.member_nodes[node.first + place], at, end, row, frame, sequence)
                    if status != 1:
                        return status
                    p = at[0]
                p = _after(p, end, 125, &closed)
                if p == NULL:
                    return 0
            if seen != _all(node.count):
                return 0
        elif node.kind == CONSTANT:
            p = _text(p, end, &key, &length)
            if p == NULL or length != node.constant.length or memcmp(key, node.constant.text, length) != 0:
                return 0
        elif node.kind == NUMBERED:
            p = _decimal(p, end, &number)
            if p == NULL or not number.integral or not number.exact or number.negative or number.significant > 18:
                return 0
            sequence[0] = <int64_t>number.mantissa
        elif node.kind == ONE:
            if p >= end or p[0] != 91:  # "["
                return 0
            at[0] = _ws(p + 1, end)
            status = self._node(shape, node.first, at, end, row, frame, sequence)
            if status != 1:
                return status
            p = _ws(at[0], end)
            if p >= end or p[0] != 93:  # "]"
                return 0
            p += 1
        elif node.kind == TRADE_OBJECT:
            at[0] = p
            status = self._trade(shape, node, at, end, row, frame)
            if status != 1:
                return status
            p = at[0]
        else:  # TRADE_ARRAY
            p = _opened(p, end, 91, 93, &closed)
            if p == NULL or closed:  # no trade: the decode's to judge
                return 0
            while not closed:
                at[0] = p
                status = self._trade(shape, node, at, end, row, frame)
                if status != 1:
                    return status
                p = _after(at[0], end, 93, &closed)
                if p == NULL:
                    return 0
        at[0] = p
        return 1

    cdef int _trade(self, FrameShape shape, Node* node, const char** at, const char* end, Py_ssize_t* row_at,
                    int64_t frame) except -1:
        """A trade object at ``at`` (of ``node``: its strings besides the fields) into row ``row_at`` (moved on past
        it): 1 read, 0 not of the shape."""
        cdef const char* p = at[0]
        cdef const char* key
        cdef const char* value
        cdef Py_ssize_t length, value_length
        cdef Py_ssize_t row = row_at[0]
        cdef uint64_t seen = 0, seen_constants = 0
        cdef int place, column, token
        cdef Field* field
        cdef Text* constant
        cdef bint closed
        cdef Decimal number
        p = _opened(p, end, 123, 125, &closed)
        if p == NULL:
            return 0
        self._room(row + 1)
        while not closed:
            p = _member_key(p, end, &key, &length)
            if p == NULL:
                return 0
            place = _place(shape.field_keys, shape.field_count, key, length)
            if place < 0:
                place = _place(shape.member_keys + node.first, node.count, key, length)
                if place < 0:
                    p = _skip(p, end, 1)
                    if p == NULL:
                        return 0
                else:  # one of the strings it holds besides the fields
                    if seen_constants & (<uint64_t>1 << place):
                        return 0
                    seen_constants |= <uint64_t>1 << place
                    constant = &shape.nodes[shape.member_nodes[node.first + place]].constant
                    p = _text(p, end, &value, &value_length)
                    if p == NULL or value_length != constant.length or memcmp(value, constant.text, value_length):
                        return 0
            else:
                if seen & (<uint64_t>1 << place):
                    return 0
                seen |= <uint64_t>1 << place
                field = &shape.fields[place]
                value = p
                if p < end and p[0] == 34:
                    p = _text(p, end, &value, &value_length)
                    token = STRING_TOKEN
                    if p != NULL and field.choice_count and _place(
                            shape.choices + field.first_choice, field.choice_count, value, value_length) < 0:
                        return 0
                elif field.choice_count:
                    return 0
                elif p < end and p[0] == 116:
                    p = _literal(p, end, b"true", 4)
                    token = TRUE_TOKEN
                elif p < end and p[0] == 102:
                    p = _literal(p, end, b"false", 5)
                    token = FALSE_TOKEN
                else:
                    p = _decimal(p, end, &number)
                    value_length = p - value
                    token = NUMBER_TOKEN
                if p == NULL:
                    return 0
                for column in range(self.count):
                    if (field.columns >> column) & 1:
                        if not self._value(column, row, token, value, value_length, &number, shape.lax):
                            return 0
            p = _after(p, end, 125, &closed)
            if p == NULL:
                return 0
        if seen != _all(shape.field_count) or seen_constants != _all(node.count):
            return 0
        (<int64_t*>self.frames.data)[row] = frame
        row_at[0] = row + 1
        at[0] = p
        return 1

    cdef int _value(self, int column, Py_ssize_t row, int token, const char* value, Py_ssize_t length,
                    Decimal* number, bint lax) except -1:
        """A trade field's token into its column at ``row``: 1 written, 0 not of the column's type."""
        cdef int kind = self.kinds[column]
        cdef Buffer* buffer = &self.values[column]
        cdef Decimal spelled
        if kind == TEXT:
            if token != STRING_TOKEN:
                return 0
            self._text_at(column, row, value, length)
        elif kind == TIME:
            if token != STRING_TOKEN:
                return 0
            self._time_at(column, row, value, length)
        elif kind == FLOAT:
            if token == STRING_TOKEN:  # a number spelled as a string, the whole string
                if not lax or _decimal(value, value + length, &spelled) != value + length:
                    return 0
                return _double(&spelled, value, length, &(<double*>buffer.data)[row])
            if token != NUMBER_TOKEN:
                return 0
            return _double(number, value, length, &(<double*>buffer.data)[row])
        elif kind == INT:
            # 0 to 2**53 only: every int the wire structs type (Int64, Millis) takes those; the rest is the decode's.
            if token != NUMBER_TOKEN or not number.integral or not number.exact or number.mantissa > MAX_INT:
                return 0
            if number.negative and number.mantissa:
                return 0
            (<int64_t*>buffer.data)[row] = <int64_t>number.mantissa
        elif token == TRUE_TOKEN or token == FALSE_TOKEN:
            _bit(buffer.data, row, token == TRUE_TOKEN)
        else:
            return 0
        return 1

    cdef inline int _text_at(self, int column, Py_ssize_t row, const char* utf8, Py_ssize_t length) except -1:
        """A text column's value at ``row``, after the text of the rows before it (over a row that stopped half-way,
        if any)."""
        cdef Buffer* buffer = &self.values[column]
        cdef int32_t* offsets = <int32_t*>self.text_offsets[column].data
        buffer.size = offsets[row]
        if buffer.size + length > 0x7FFFFFFF:
            raise OverflowError("more than 2 GiB of text in one column")
        _reserve(buffer, buffer.size + length)
        memcpy(buffer.data + buffer.size, utf8, length)
        buffer.size += length
        offsets[row + 1] = <int32_t>buffer.size
        return 0

    cdef inline void _time_at(self, int column, Py_ssize_t row, const char* text, Py_ssize_t length) noexcept:
        """A time column's value at ``row``: the text's µs, or null."""
        cdef int64_t* micros = &(<int64_t*>self.values[column].data)[row]
        if not _rfc3339_us(text, length, micros):
            micros[0] = 0
            _bit(self.text_offsets[column].data, row, False)
        else:
            _bit(self.text_offsets[column].data, row, True)

    cdef int _room(self, Py_ssize_t rows) except -1:
        """Every column's buffers ready for ``rows`` rows (texts: their offsets; their characters as written)."""
        cdef int column, kind
        _reserve(&self.frames, rows * sizeof(int64_t))
        for column in range(self.count):
            kind = self.kinds[column]
            if kind == TEXT:
                _reserve(&self.text_offsets[column], (rows + 1) * sizeof(int32_t))
            elif kind == FLAG:
                _reserve(&self.values[column], (rows + 7) // 8)
            elif kind == TIME:
                _reserve(&self.values[column], rows * 8)
                _reserve(&self.text_offsets[column], (rows + 7) // 8)
            else:
                _reserve(&self.values[column], rows * 8)
        return 0


def wire_columns(list items, fields):
    """One Arrow array per ``(field name, type)`` of ``fields``, with that field of every struct in ``items``:
    ``WireColumns`` for one batch. Types: ``pa.string()`` (str values), ``pa.float64()`` (float or int),
    ``pa.int64()`` (int), ``pa.bool_()`` (bool). The structs may be of several types with those fields."""
    columns = WireColumns(fields)
    columns.extend(items, range(len(items)))
    return columns.take()[0]


cdef Py_ssize_t _set_bits(const char* bits, Py_ssize_t count) noexcept:
    cdef Py_ssize_t row, set_bits = 0
    for row in range(count):
        set_bits += (bits[row >> 3] >> (row & 7)) & 1
    return set_bits


cdef int _wrong(str name, str expected, object value) except -1:
    raise TypeError(f"field {name!r}: expected {expected}, got {type(value).__name__}")
