"""The compiled field-mapping kernel: every column holds exactly what reading the attribute gives, batch after
batch, each row with its frame index."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import msgspec
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trading_platform.exchanges.wire_columns import WireColumns, wire_columns


class Wire(msgspec.Struct, gc=False):
    name: str
    price: float
    trade_id: int
    taker_sold: bool


class Reordered(msgspec.Struct, gc=False):
    """The same fields at other slots, after one the columns do not read."""

    extra: str
    taker_sold: bool
    trade_id: int
    price: float
    name: str


class Partial(msgspec.Struct, gc=False):
    """Two of the fields, at other slots, and not the others."""

    extra: str
    price: float
    name: str


class Base(msgspec.Struct, kw_only=True, gc=False):
    name: str


class Derived(Base, kw_only=True):
    price: float


class Timed(msgspec.Struct, gc=False):
    time: str


UTC_US = pa.timestamp("us", tz="UTC")
_msgspec_datetime = msgspec.json.Decoder(datetime)


def msgspec_reads(text: str) -> datetime | None:
    try:
        return _msgspec_datetime.decode(msgspec.json.encode(text))
    except msgspec.DecodeError:
        return None


def times(texts: list[str]) -> list[datetime | None]:
    return wire_columns([Timed(text) for text in texts], (("time", UTC_US),))[0].to_pylist()


FIELDS = (("name", pa.string()), ("price", pa.float64()), ("trade_id", pa.int64()), ("taker_sold", pa.bool_()))


def by_attribute(items: list[Any], fields: tuple[tuple[str, pa.DataType], ...]) -> list[list[Any]]:
    return [[getattr(item, name) for item in items] for name, _ in fields]


def test_each_column_holds_the_field_of_every_struct_in_order() -> None:
    items = [Wire("BTC-USD", 101.5, 7, True), Wire("ETH-USD", 2.25, -3, False), Wire("", 0.0, 2**63 - 1, True)]
    columns = wire_columns(items, FIELDS)
    assert [column.type for column in columns] == [pa.string(), pa.float64(), pa.int64(), pa.bool_()]
    assert [column.to_pylist() for column in columns] == by_attribute(items, FIELDS)


def test_structs_of_several_types_are_read_by_each_ones_layout() -> None:
    items = [Wire("a", 1.0, 1, True), Reordered("x", False, 2, 2.0, "b"), Wire("c", 3.0, 3, False)]
    assert [column.to_pylist() for column in wire_columns(items, FIELDS)] == [
        ["a", "b", "c"], [1.0, 2.0, 3.0], [1, 2, 3], [True, False, False]]


def test_fields_declared_on_a_base_struct_are_read() -> None:
    columns = wire_columns([Derived(name="x", price=1.5)], (("name", pa.string()), ("price", pa.float64())))
    assert [column.to_pylist() for column in columns] == [["x"], [1.5]]


def test_texts_keep_their_utf8_and_grow_past_the_first_guess() -> None:
    names = ["é" * 40, "日本", "", "x" * 1000]  # 16 bytes a row are reserved at first
    columns = wire_columns([Wire(name, 1.0, 1, False) for name in names], (("name", pa.string()),))
    columns[0].validate(full=True)
    assert columns[0].to_pylist() == names


def test_floats_keep_nan_and_infinities_and_take_ints() -> None:
    items = [Wire("a", math.nan, 1, False), Wire("a", math.inf, 1, False), Wire("a", 5, 1, False)]  # type: ignore[arg-type]
    prices = wire_columns(items, (("price", pa.float64()),))[0].to_pylist()
    assert math.isnan(prices[0]) and prices[1:] == [math.inf, 5.0]


def test_bools_pack_into_arrow_bits_across_bytes() -> None:
    flags = [i % 3 == 0 for i in range(21)]
    columns = wire_columns([Wire("a", 1.0, 1, flag) for flag in flags], (("taker_sold", pa.bool_()),))
    assert columns[0].to_pylist() == flags


def test_no_structs_give_empty_columns() -> None:
    assert [len(column) for column in wire_columns([], FIELDS)] == [0, 0, 0, 0]


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("name", 5, "expected str, got int"),
    ("price", "1.0", "expected float, got str"),
    ("trade_id", 1.0, "expected int, got float"),
    ("taker_sold", 1, "expected bool, got int"),
])
def test_a_value_of_another_type_raises_naming_the_field(field: str, value: Any, expected: str) -> None:
    item = Wire("a", 1.0, 1, True)
    setattr(item, field, value)
    with pytest.raises(TypeError, match=f"field '{field}': {expected}"):
        wire_columns([Wire("b", 2.0, 2, False), item], FIELDS)


def test_an_int_too_large_for_int64_raises() -> None:
    with pytest.raises(OverflowError):
        wire_columns([Wire("a", 1.0, 2**63, True)], FIELDS)


def test_a_name_that_is_no_struct_field_raises() -> None:
    with pytest.raises(TypeError, match=r"Wire\.missing is not a struct field"):
        wire_columns([Wire("a", 1.0, 1, True)], (("missing", pa.string()),))


def test_a_time_column_takes_only_text() -> None:
    with pytest.raises(TypeError, match="field 'name': expected str, got int"):
        wire_columns([Wire(5, 1.0, 1, True)], (("name", UTC_US),))  # type: ignore[arg-type]


def test_a_struct_type_refused_half_way_leaves_the_columns_usable() -> None:
    columns = WireColumns(FIELDS)
    columns.extend([Wire("a", 1.0, 1, True)], [0])
    with pytest.raises(TypeError, match=r"Partial\.trade_id is not a struct field"):
        columns.extend([Partial("-", 2.0, "x")], [1])  # its name and price offsets were read first
    columns.extend([Wire("b", 3.0, 3, False)], [2])
    fields, frames = columns.take()
    assert [column.to_pylist() for column in fields] == [["a", "b"], [1.0, 3.0], [1, 3], [True, False]]
    assert frames.to_pylist() == [0, 2]


def test_an_unsupported_column_type_raises() -> None:
    with pytest.raises(TypeError, match="not supported"):
        wire_columns([Wire("a", 1.0, 1, True)], (("trade_id", pa.int32()),))


def test_times_in_the_feeds_shape_read_as_msgspec_reads_them() -> None:
    texts = ["2026-01-01T00:00:00Z", "2026-04-07T14:30:02.789012Z", "2024-02-29T23:59:59.9999995Z",
             "2000-02-29T12:00:00Z", "1970-01-01T00:00:00.000000499Z", "1969-12-31T23:59:59.5Z", "0001-01-01T00:00:00Z",
             "9999-12-31T23:59:59.999999Z"]
    assert times(texts) == [msgspec_reads(text) for text in texts]


@pytest.mark.parametrize("text", [
    "2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-13-01T00:00:00Z",
    "2026-01-01T24:00:00Z", "2026-01-01T00:60:00Z", "2026-01-01T00:00:60Z", "0000-01-01T00:00:00Z",  # no such time
    "9999-12-31T23:59:59.9999999Z",  # rounds past year 9999
    "2026-01-01t00:00:00z", "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00.Z",
    "2026-01-01T00:00:00.1234567891Z", "2026-01-01 00:00:00Z", "2026-1-01T00:00:00Z", "", "soon",
])
def test_any_other_time_text_is_left_null_for_the_strict_reader(text: str) -> None:
    assert times([text, "2026-01-01T00:00:00Z"]) == [None, datetime(2026, 1, 1, tzinfo=UTC)]


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
       st.integers(0, 999_999_999), st.integers(0, 9))
def test_any_time_in_the_feeds_shape_reads_as_msgspec_reads_it(moment: datetime, nanos: int, digits: int) -> None:
    fraction = f".{nanos:09d}"[:digits + 1] if digits else ""
    text = moment.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0") + fraction + "Z"
    assert times([text]) == [msgspec_reads(text)]


def test_batches_come_out_in_order_with_their_frame_indices() -> None:
    columns = WireColumns(FIELDS)
    columns.extend([Wire("a", 1.0, 1, True), Wire("b", 2.0, 2, False)], [0, 0])
    columns.extend([], [])
    columns.extend([Reordered("-", True, 3, 3.0, "c")], range(4, 5))
    assert len(columns) == 3
    fields, frames = columns.take()
    assert [column.to_pylist() for column in fields] == [["a", "b", "c"], [1.0, 2.0, 3.0], [1, 2, 3],
                                                         [True, False, True]]
    assert frames.type == pa.int64() and frames.to_pylist() == [0, 0, 4]


def test_a_take_empties_the_columns_for_the_next_rows() -> None:
    columns = WireColumns(FIELDS)
    columns.extend([Wire("first", 1.0, 1, True)] * 9, range(9))
    columns.take()
    assert len(columns) == 0
    columns.extend([Wire("x", 2.0, 2, False)] * 9, range(9))  # no bit nor text left from the rows taken
    fields, frames = columns.take()
    assert [column.to_pylist() for column in fields] == [["x"] * 9, [2.0] * 9, [2] * 9, [False] * 9]
    assert frames.to_pylist() == list(range(9))


def test_a_row_that_raised_half_way_is_written_over_by_the_next() -> None:
    columns = WireColumns((("name", pa.string()), ("taker_sold", pa.bool_()), ("trade_id", pa.int64())))
    broken = Wire("half", 1.0, 1, True)
    broken.trade_id = "not an int"  # type: ignore[assignment]
    with pytest.raises(TypeError):
        columns.extend([broken], [0])  # its text and its bit were written before the id failed
    columns.extend([Wire("whole", 2.0, 2, False)], [1])
    fields, frames = columns.take()
    assert [column.to_pylist() for column in fields] == [["whole"], [False], [2]]
    assert frames.to_pylist() == [1]


def test_frame_indices_must_match_the_structs() -> None:
    with pytest.raises(ValueError, match="2 structs but 1 frame indices"):
        WireColumns(FIELDS).extend([Wire("a", 1.0, 1, True)] * 2, [0])


@given(st.lists(st.builds(Wire, st.text(), st.floats(allow_nan=False), st.integers(-(2**63), 2**63 - 1),
                          st.booleans())))
def test_any_structs_read_as_attribute_access_reads_them(items: list[Wire]) -> None:
    columns = wire_columns(items, FIELDS)
    for column in columns:
        column.validate(full=True)
    assert [column.to_pylist() for column in columns] == by_attribute(items, FIELDS)
