"""The compiled scan of frames of a known shape (``WireColumns.scan``): a frame it reads gives exactly the rows the
typed msgspec decode of the same frame gives; any frame off the shape, in any detail, is left to that decode whole,
and so is every frame after it."""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import msgspec
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trading_platform.exchanges.wire_columns import SEQUENCE, TRADE, TRADES, FrameShape, WireColumns

UTC_US = pa.timestamp("us", tz="UTC")
FIELDS = (("symbol", pa.string()), ("price", pa.float64()), ("qty", pa.float64()), ("id", pa.int64()),
          ("maker", pa.bool_()), ("side", pa.string()), ("time", pa.string()), ("time", UTC_US))
SHAPE = FrameShape({"channel": "trades", "seq": SEQUENCE, "events": [{"type": "update", "trades": TRADES}]},
                   FIELDS, {"side": ("buy", "sell")}, lax=True)
TIME = "2026-04-07T14:30:02.789012Z"


# The typed decode the scan stands in for: lax, so number texts read as floats.
class Trade(msgspec.Struct):
    symbol: str
    price: float
    qty: float
    id: int
    maker: bool
    side: Literal["buy", "sell"]
    time: str


class Event(msgspec.Struct):
    type: Literal["update"]
    trades: list[Trade]


class Frame(msgspec.Struct):
    channel: Literal["trades"]
    seq: int
    events: list[Event]


_typed = msgspec.json.Decoder(Frame, strict=False)


def trade(**changed: Any) -> dict[str, Any]:
    return {"symbol": "BTC-USD", "price": "68900.5", "qty": 0.25, "id": 17, "maker": True, "side": "buy",
            "time": TIME, **changed}


def frame(seq: int = 0, *trades: dict[str, Any], **envelope: Any) -> bytes:
    return msgspec.json.encode({"channel": "trades", "client": "", "seq": seq,
                                "events": [{"type": "update", "trades": list(trades) or [trade()]}], **envelope})


def scan(frames: list[bytes], first_sequence: int = 0,
         shape: FrameShape = SHAPE) -> tuple[int, list[list[Any]], list[int]]:
    """(frames read, each column's values, each row's frame index)."""
    columns = WireColumns(shape.trade_fields)
    read = columns.scan(shape, frames, 0, len(frames), first_sequence)
    values, frame_index = columns.take()
    return read, [column.to_pylist() for column in values], frame_index.to_pylist()


def decoded(raw: bytes) -> list[list[Any]]:
    """The columns the typed decode's structs give (the time column parsed as the kernel parses it)."""
    trades = [t for event in _typed.decode(raw).events for t in event.trades]
    columns = WireColumns(FIELDS)
    columns.extend(trades, [0] * len(trades))
    return [column.to_pylist() for column in columns.take()[0]]


def test_a_frame_of_the_shape_is_read_into_rows_with_its_frame_index() -> None:
    frames = [frame(0, trade(id=1), trade(id=2, side="sell", maker=False)), frame(1, trade(id=3, price=7))]
    read, columns, frame_index = scan(frames)
    assert read == 2
    assert columns[3] == [1, 2, 3]
    assert columns[1] == [68900.5, 68900.5, 7.0]
    assert columns[5] == ["buy", "sell", "buy"]
    assert columns[4] == [True, False, True]
    assert frame_index == [0, 0, 1]


def test_rows_are_what_the_typed_decode_gives() -> None:
    raw = frame(0, trade(id=1), trade(symbol="ETH-USD", price="0.000123", qty="1e-3", id=4,
                                      time="2026-04-07T14:30:02.7890125Z"))
    assert scan([raw])[1] == decoded(raw)


def test_unknown_keys_of_any_json_value_are_skipped() -> None:
    raw = frame(0, trade(extra={"a": [1, 2.5e-3, None, True, False, {"b": []}], "c": {}}),
                note=[[], [{}], "x", -0.5])
    assert scan([raw])[0] == 1


def test_whitespace_anywhere_between_tokens_is_read() -> None:
    raw = (b' {\n "channel" :\t"trades" , "seq":0 ,"events" : [ { "type" : "update" , "trades" : [ {"symbol": '
           b'"BTC-USD", "price" : "1.5" ,"qty":2, "id" :3,"maker": false , "side":"sell","time":"' + TIME.encode()
           + b'" } ] } ]\r\n}\n')
    assert scan([raw])[1] == decoded(raw)


def test_the_scan_stops_at_the_first_frame_off_the_shape_and_reads_nothing_of_it() -> None:
    frames = [frame(0), frame(1), b'{"channel":"heartbeats","seq":2}', frame(3)]
    read, _, frame_index = scan(frames)
    assert read == 2
    assert frame_index == [0, 1]


def test_a_frame_refused_after_some_of_its_trades_adds_none_of_them() -> None:
    frames = [frame(0), frame(1, trade(id=5), trade(id=6), trade(id=7, side="hold"))]
    read, columns, _ = scan(frames)
    assert read == 1
    assert columns[3] == [17]


def test_a_numbered_shape_stops_at_a_frame_not_numbered_next() -> None:
    assert scan([frame(5), frame(6), frame(8)], first_sequence=5)[0] == 2
    assert scan([frame(5), frame(5)], first_sequence=5)[0] == 1
    assert scan([frame(4)], first_sequence=5)[0] == 0


def test_an_unnumbered_shape_reads_frames_whatever_their_order() -> None:
    shape = FrameShape({"data": TRADES}, FIELDS, lax=True)
    frames = [msgspec.json.encode({"data": [trade(id=i)]}) for i in (3, 1, 2)]
    assert scan(frames, -1, shape)[1][3] == [3, 1, 2]


def test_a_single_trade_object_is_read() -> None:
    shape = FrameShape({"stream": "x@trade", "data": TRADE}, FIELDS, lax=True)
    raw = msgspec.json.encode({"stream": "x@trade", "data": trade(id=9)})
    assert scan([raw], -1, shape)[1][3] == [9]


def test_a_strict_shape_leaves_a_number_spelled_as_a_string_to_the_decode() -> None:
    strict = FrameShape({"data": TRADES}, FIELDS)
    frames = [msgspec.json.encode({"data": [trade(price=price)]}) for price in (1.5, 2, "1.5")]
    read, columns, _ = scan(frames, -1, strict)
    assert (read, columns[1]) == (2, [1.5, 2.0])


def test_frames_that_are_not_bytes_are_left_to_the_decode() -> None:
    assert scan([bytearray(frame(0))])[0] == 0  # type: ignore[list-item]


# Each is a frame the scan must not read: the typed decode rejects it, or reads it by rules the scan leaves to it.
OFF_THE_SHAPE = {
    "escaped string": frame(0, trade(symbol="BTC\\u002dUSD")).replace(b"\\\\", b"\\"),
    "non-ASCII string": frame(0, trade(symbol="BTC-€")),
    "control character in a string": frame(0, trade(symbol="BTC\tUSD")).replace(b"\\t", b"\t"),
    "a key given twice": frame(0).replace(b'"qty":0.25', b'"qty":0.25,"qty":0.5'),
    "an envelope key given twice": frame(0).replace(b'"seq":0', b'"seq":0,"seq":0'),
    "a trade field missing": frame(0, {k: v for k, v in trade().items() if k != "qty"}),
    "an envelope key missing": frame(0).replace(b'"channel":"trades",', b""),
    "another channel": frame(0).replace(b'"trades",', b'"books",', 1),
    "another event type": frame(0).replace(b'"update"', b'"snapshot"'),
    "a side not allowed": frame(0, trade(side="BUY")),
    "a side not a string": frame(0, trade(side=1)),
    "two events": frame(0).replace(b'"events":[', b'"events":[{"type":"update","trades":[]},'),
    "no event": frame(0).replace(b'"events":[{', b'"events":[],"x":[{'),
    "no trade": msgspec.json.encode({"channel": "trades", "seq": 0, "events": [{"type": "update", "trades": []}]}),
    "a number for a text": frame(0, trade(symbol=5)),
    "a text for an int": frame(0, trade(id="17")),
    "a fraction for an int": frame(0, trade(id=17.5)),
    "an exponent for an int": frame(0, trade(id=1e3)),
    "a 19-digit int": frame(0, trade(id=10**18)),
    "a text for a bool": frame(0, trade(maker="true")),
    "null for a float": frame(0, trade(qty=None)),
    "nan text": frame(0, trade(price="nan")),
    "infinity text": frame(0, trade(price="Infinity")),
    "a number text with a space": frame(0, trade(price=" 1.5")),
    "a number text with a plus": frame(0, trade(price="+1.5")),
    "a number text with no integer digit": frame(0, trade(price=".5")),
    "a number text with a leading zero": frame(0, trade(price="01.5")),
    "a number text with no fraction digit": frame(0, trade(price="5.")),
    "negative zero": frame(0, trade(price="-0.0")),
    "20 significant digits": frame(0, trade(price="1234567890.1234567890")),
    "beyond the doubles' range": frame(0, trade(price="1e400")),
    "below the normal doubles": frame(0, trade(price="1e-310")),
    "a negative sequence": frame(0).replace(b'"seq":0', b'"seq":-0'),
    "a sequence with a fraction": frame(0).replace(b'"seq":0', b'"seq":0.0'),
    "truncated": frame(0)[:-3],
    "trailing bytes": frame(0) + b"x",
    "two values": frame(0) + frame(1),
    "trailing comma": frame(0).replace(b'"seq":0,', b'"seq":0,,'),
    "a literal misspelled": frame(0, trade(extra=[True])).replace(b"true]", b"tru]"),
    "nested too deep": frame(0, trade(extra=functools.reduce(lambda inner, _: [inner], range(40), 0))),
    "an unclosed string": frame(0)[:20] + b'"abc',
    "empty": b"",
    "an array": b"[" + frame(0) + b"]",
}


@pytest.mark.parametrize("raw", OFF_THE_SHAPE.values(), ids=OFF_THE_SHAPE.keys())
def test_a_frame_off_the_shape_is_left_to_the_decode(raw: bytes) -> None:
    read, columns, _ = scan([raw, frame(1)])
    assert read == 0
    assert columns[0] == []


def test_more_keys_than_a_trade_reads_are_skipped_not_refused() -> None:
    raw = frame(0, trade(**{f"k{i}": i for i in range(100)}))
    assert scan([raw])[0] == 1


# --- numbers: read as the lax typed decode reads them, or left to it ------------------------------------------
numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.builds(lambda sign, whole, fraction, exponent: f"{sign}{whole}{fraction}{exponent}",
              st.sampled_from(["", "-"]),
              st.one_of(st.just("0"), st.integers(1, 10**25).map(str)),
              st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=22).map(lambda d: f".{d}")),
              st.one_of(st.just(""), st.builds(lambda e, sign, n: f"{e}{sign}{n}", st.sampled_from("eE"),
                                               st.sampled_from(["", "+", "-"]), st.integers(0, 400)))),
)


@given(numbers, st.booleans())
def test_any_number_reads_as_the_typed_decode_reads_it_or_is_left_to_it(number: str, spelled: bool) -> None:
    raw = frame(0).replace(b'"qty":0.25', b'"qty":' + (f'"{number}"' if spelled else number).encode())
    read, columns, _ = scan([raw])
    if read:
        expected = decoded(raw)[2][0]
        assert columns[2][0] == expected and math.copysign(1, columns[2][0]) == math.copysign(1, expected)
    else:  # left only for the scan's reasons: over 19 significant digits, an exponent out of range, negative zero
        digits = number.lstrip("-").lower().split("e")[0].replace(".", "").lstrip("0")
        assert len(digits) > 19 or "e" in number.lower() or (number.startswith("-") and float(number) == 0)


@given(st.integers(0, 2**53))
def test_any_int_from_0_to_2_to_the_53_reads_exactly(value: int) -> None:
    assert scan([frame(0, trade(id=value))])[1][3] == [value]


@pytest.mark.parametrize("value", [-1, -(2**53), 2**53 + 1, 2**63 - 1])
def test_an_int_beyond_what_every_wire_int_type_takes_is_left_to_the_decode(value: int) -> None:
    assert scan([frame(0, trade(id=value))])[0] == 0


BINANCE_LIKE = FrameShape({"data": TRADE(e="trade")}, FIELDS, lax=True)


def test_a_trade_object_holds_the_strings_its_shape_names_besides_its_fields() -> None:
    frames = [msgspec.json.encode({"stream": "x", "data": {"e": "trade", **trade(id=i)}}) for i in (1, 2)]
    assert scan(frames, -1, BINANCE_LIKE)[1][3] == [1, 2]


@pytest.mark.parametrize("data", [{"e": "aggTrade", **trade()}, trade(), {"e": "trade", "e ": 1, **trade()},
                                  {"e": 5, **trade()}])
def test_a_trade_object_without_those_strings_is_left_to_the_decode(data: dict[str, Any]) -> None:
    raw = msgspec.json.encode({"data": data}).replace(b'"e ":1,', b'"e":"trade",')  # the last: "e" twice
    assert scan([raw], -1, BINANCE_LIKE)[0] == 0


# --- fuzzing: whatever a frame becomes, the scan reads it as the decode does, or not at all --------------------
BASE = frame(7, trade(id=1), trade(id=2, price="0.5", side="sell", extra=[1, {"x": None}]))


@given(st.lists(st.tuples(st.integers(0, len(BASE) - 1), st.sampled_from(["delete", "insert", "replace"]),
                          st.sampled_from(list(b'{}[]":,.-+0159eE tfn\\\xe2'))), min_size=1, max_size=3))
def test_a_mangled_frame_is_read_as_the_typed_decode_reads_it_or_left_to_it(edits: list[tuple[int, str, int]]) -> None:
    raw = bytearray(BASE)
    for position, edit, byte in edits:
        position = min(position, len(raw) - 1)
        if edit == "delete":
            del raw[position]
        elif edit == "insert":
            raw.insert(position, byte)
        else:
            raw[position] = byte
    mangled = bytes(raw)
    read, columns, _ = scan([mangled], first_sequence=7)
    if read:
        try:
            expected = decoded(mangled)
        except (msgspec.DecodeError, UnicodeDecodeError) as refused:
            raise AssertionError(f"the scan read a frame the decode refuses: {mangled!r} ({refused})") from None
        assert columns == expected
