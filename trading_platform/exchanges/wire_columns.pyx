# cython: language_level=3, boundscheck=False, wraparound=False
"""Wire structs' fields -> Arrow columns, in one compiled pass: the field mapping's kernel (``trade_columns``).

A tick's trades arrive as thousands of msgspec structs. Built in Python, each column is a list comprehension
over them and a conversion of that list to Arrow: two passes per column, a Python list per column, and an
Arrow converter that inspects every value. Here every field is read straight from its struct slot (the
offset its member descriptor records, which is how ``getattr`` reads it too, only without the lookup) and
written into the column's buffer, for all columns at once. Measured on the benchmark's Coinbase frames, the
columns of a 5,000-frame tick take a third of the time the Python mapping did.

Only what that needs is here: text, float64, int64 and bool columns from plain struct fields. Anything else
(a value of another type, a field that is no slot) raises, naming the field: a wire struct's types are
fixed by its decoder, so that is a bug, not bad input.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset

import types

import pyarrow as pa


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
    bint PyUnicode_CheckExact(PyObject*)
    bint PyFloat_CheckExact(PyObject*)
    double PyFloat_AS_DOUBLE(PyObject*)
    bint PyLong_CheckExact(PyObject*)
    long long PyLong_AsLongLong(object) except? -1
    PyObject* Py_True
    PyObject* Py_False


cdef extern from "structmember.h":
    int T_OBJECT_EX  # a field slot holding an object (AttributeError when unset): what msgspec's fields are


cdef enum Kind:
    TEXT
    FLOAT
    INT
    FLAG


cdef dict _KINDS = {pa.string(): TEXT, pa.float64(): FLOAT, pa.int64(): INT, pa.bool_(): FLAG}
_MEMBER = types.MemberDescriptorType


cdef class _Columns:
    """The columns' buffers while they are filled (C memory, freed with the object whatever happens)."""

    cdef Py_ssize_t rows
    cdef int count
    cdef int* kinds
    cdef char** values  # per column: n values (float64 / int64), n bits (bool) or the texts' bytes
    cdef Py_ssize_t* sizes  # bytes used / allocated of each text column's data
    cdef Py_ssize_t* capacities
    cdef int32_t** text_offsets  # per text column: n + 1 offsets

    def __cinit__(self, Py_ssize_t rows, list kinds):
        cdef int column
        cdef Py_ssize_t width
        self.rows = rows
        self.count = len(kinds)
        self.kinds = <int*>malloc(self.count * sizeof(int))
        self.values = <char**>malloc(self.count * sizeof(char*))
        self.sizes = <Py_ssize_t*>malloc(self.count * sizeof(Py_ssize_t))
        self.capacities = <Py_ssize_t*>malloc(self.count * sizeof(Py_ssize_t))
        self.text_offsets = <int32_t**>malloc(self.count * sizeof(int32_t*))
        if not (self.kinds and self.values and self.sizes and self.capacities and self.text_offsets):
            raise MemoryError()
        for column in range(self.count):
            self.values[column] = NULL
            self.text_offsets[column] = NULL
        for column in range(self.count):
            self.kinds[column] = kinds[column]
            self.sizes[column] = 0
            if kinds[column] == TEXT:
                width = 16 * rows + 64  # about what an id or a time takes; grown when needed
                self.text_offsets[column] = <int32_t*>malloc((rows + 1) * sizeof(int32_t))
                if not self.text_offsets[column]:
                    raise MemoryError()
                self.text_offsets[column][0] = 0
            elif kinds[column] == FLAG:
                width = (rows + 7) // 8 + 1
            else:
                width = 8 * rows + 8
            self.capacities[column] = width
            self.values[column] = <char*>malloc(width)
            if not self.values[column]:
                raise MemoryError()
            if kinds[column] == FLAG:
                memset(self.values[column], 0, width)

    def __dealloc__(self):
        cdef int column
        if self.values:
            for column in range(self.count):
                free(self.values[column])
                if self.text_offsets:
                    free(self.text_offsets[column])
        free(self.kinds)
        free(self.values)
        free(self.sizes)
        free(self.capacities)
        free(self.text_offsets)

    cdef int put_text(self, int column, Py_ssize_t row, object text) except -1:
        cdef Py_ssize_t length
        cdef const char* utf8 = PyUnicode_AsUTF8AndSize(text, &length)
        cdef Py_ssize_t size = self.sizes[column]
        cdef Py_ssize_t capacity = self.capacities[column]
        cdef char* grown
        if size + length > capacity:
            capacity = max(2 * capacity, size + length)
            grown = <char*>realloc(self.values[column], capacity)
            if not grown:
                raise MemoryError()
            self.values[column] = grown
            self.capacities[column] = capacity
        if size + length > 0x7FFFFFFF:
            raise OverflowError("a text column of more than 2 GiB")
        memcpy(self.values[column] + size, utf8, length)
        self.sizes[column] = size + length
        self.text_offsets[column][row + 1] = <int32_t>(size + length)
        return 0

    cdef list arrays(self, list types):
        cdef int column
        cdef Py_ssize_t rows = self.rows
        cdef Py_ssize_t width
        out = []
        for column in range(self.count):
            kind = self.kinds[column]
            if kind == TEXT:
                offsets = PyBytes_FromStringAndSize(<char*>self.text_offsets[column], (rows + 1) * sizeof(int32_t))
                data = PyBytes_FromStringAndSize(self.values[column], self.sizes[column])
                out.append(pa.Array.from_buffers(pa.string(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(data)]))
                continue
            width = (rows + 7) // 8 if kind == FLAG else 8 * rows
            data = PyBytes_FromStringAndSize(self.values[column], width)
            out.append(pa.Array.from_buffers(types[column], rows, [None, pa.py_buffer(data)]))
        return out


cdef Py_ssize_t* _layout(object struct_type, tuple names, Py_ssize_t* offsets) except NULL:
    """The slot offset of each named field of ``struct_type``, into ``offsets``."""
    cdef PyMemberDescrObject* member
    cdef int column
    for column, name in enumerate(names):
        descriptor = getattr(struct_type, name, None)
        if type(descriptor) is not _MEMBER:
            raise TypeError(f"{struct_type.__name__}.{name} is not a struct field")
        member = <PyMemberDescrObject*>descriptor
        if member.d_member.type != T_OBJECT_EX:
            raise TypeError(f"{struct_type.__name__}.{name} does not hold an object")
        offsets[column] = member.d_member.offset
    return offsets


def wire_columns(list items, fields):
    """One Arrow array per ``(field name, type)`` of ``fields``, with that field of every struct in ``items``.

    Types: ``pa.string()`` (str values), ``pa.float64()`` (float or int), ``pa.int64()`` (int), ``pa.bool_()``
    (bool). The structs may be of several types (e.g. two message shapes with the same fields)."""
    cdef Py_ssize_t rows = len(items)
    cdef tuple names = tuple(name for name, _ in fields)
    cdef list types = [arrow_type for _, arrow_type in fields]
    cdef list kinds = []
    for name, arrow_type in fields:
        if arrow_type not in _KINDS:
            raise TypeError(f"field {name!r}: {arrow_type} columns are not supported")
        kinds.append(_KINDS[arrow_type])
    cdef _Columns columns = _Columns(rows, kinds)
    cdef int count = len(names)
    cdef Py_ssize_t* offsets = <Py_ssize_t*>malloc(max(count, 1) * sizeof(Py_ssize_t))
    if not offsets:
        raise MemoryError()
    cdef PyObject* item
    cdef PyObject* item_type = NULL
    cdef PyObject* value
    cdef Py_ssize_t row
    cdef int column
    cdef int kind
    try:
        for row in range(rows):
            item = PyList_GET_ITEM(items, row)
            if Py_TYPE_PTR(item) != item_type:
                item_type = Py_TYPE_PTR(item)
                _layout(<object>item_type, names, offsets)
            for column in range(count):
                value = (<PyObject**>((<char*>item) + offsets[column]))[0]
                if value == NULL:
                    raise AttributeError(f"{(<object>item_type).__name__}.{names[column]} is not set")
                kind = columns.kinds[column]
                if kind == TEXT:
                    if not PyUnicode_CheckExact(value):
                        _wrong(names[column], "str", <object>value)
                    columns.put_text(column, row, <object>value)
                elif kind == FLOAT:
                    if PyFloat_CheckExact(value):
                        (<double*>columns.values[column])[row] = PyFloat_AS_DOUBLE(value)
                    elif PyLong_CheckExact(value):
                        (<double*>columns.values[column])[row] = float(<object>value)
                    else:
                        _wrong(names[column], "float", <object>value)
                elif kind == INT:
                    if not PyLong_CheckExact(value):
                        _wrong(names[column], "int", <object>value)
                    (<int64_t*>columns.values[column])[row] = PyLong_AsLongLong(<object>value)
                else:
                    if value == Py_True:
                        (<uint8_t*>columns.values[column])[row >> 3] |= <uint8_t>(1 << (row & 7))
                    elif value != Py_False:
                        _wrong(names[column], "bool", <object>value)
    finally:
        free(offsets)
    return columns.arrays(types)


cdef int _wrong(str name, str expected, object value) except -1:
    raise TypeError(f"field {name!r}: expected {expected}, got {type(value).__name__}")
