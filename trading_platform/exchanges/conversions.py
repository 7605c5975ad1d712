"""Exchange text and times -> Arrow columns, vectorized: the number and time conversions every protocol
needs (exchanges send numbers as strings and times as ms, RFC3339 text or datetimes), and the per-key
reduction the hot path uses to keep one value per symbol out of a batch."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

UTC_US = pa.timestamp("us", tz="UTC")
_UTC_NS = pa.timestamp("ns", tz="UTC")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_datetime_decoder = msgspec.json.Decoder(datetime)


@functools.cache
def _side_labels() -> tuple[pa.Scalar, pa.Scalar]:
    """("sell", "buy") as Arrow scalars: made once (a Python str argument is converted on every call), and not at
    import, since making any Arrow value from Python objects runs pyarrow's one-time pandas probe, which imports
    pandas into the process (an ingestion run keeps it out: ingestion/process.py)."""
    return pa.scalar("sell", pa.string()), pa.scalar("buy", pa.string())


def taker_sides(sells: pa.Array) -> pa.Array:
    """The taker's side column, "sell" where ``sells`` (a boolean column) is true, else "buy"."""
    sell, buy = _side_labels()
    return pc.if_else(sells, sell, buy)


def strings_to_float(values: list[str] | pa.StringArray) -> pa.Array:
    """Exchange number strings -> float64, vectorized; unparseable ones become NaN, which the quality
    rules then reject with the raw frame (one bad number never fails the whole batch)."""
    array = values if isinstance(values, pa.StringArray) else pa.array(values, pa.string())
    try:
        return pc.cast(array, pa.float64())
    except pa.ArrowInvalid:
        return pa.array([_float_or_nan(v) for v in array.to_pylist()], pa.float64())


def _float_or_nan(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return float("nan")


def datetime_us(moment: datetime) -> int:
    """Exact µs since the epoch (naive datetimes are UTC, as Arrow reads them and as RFC3339 without an
    offset is best read)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _ONE_US


# A timestamp[us] column is an int64 column read as µs: viewed as one, not cast (a cast is a compute call,
# microseconds of fixed cost each, on every batch).


def micros_timestamps(values: list[int] | np.ndarray) -> pa.Array:
    """µs since the epoch -> a UTC timestamp column."""
    return pa.array(values, pa.int64()).view(UTC_US)


def millis_timestamps(values: list[int] | pa.Int64Array) -> pa.Array:
    """ms since the epoch -> a UTC µs timestamp column (multiplied in numpy, not per value; values up to 2**53
    ms, as the wire structs allow, stay within int64 µs)."""
    return pa.array(np.asarray(values, np.int64) * 1000).view(UTC_US)


def rfc3339_timestamps(texts: list[str] | pa.StringArray, parsed: pa.Array | None = None) -> pa.Array:
    """RFC3339 text -> µs UTC, rounded to the nearest µs as msgspec's datetime decoding does; null where a value
    is not a timestamp (its row is quarantined).

    ``parsed``: the same texts already read where they have the shape every feed prints (a ``WireColumns`` time
    column, null elsewhere); only its null rows are judged here, by the rules below.

    Parsed in Arrow for the whole column (a datetime object per value costs ten times more). Arrow's parser
    also takes shapes RFC3339 does not (a bare date, hours without seconds), so only a column whose every text
    has the ``YYYY-MM-DDTHH:MM:SS`` shape goes the fast way; any other is judged value by value by msgspec, the
    strict reader, which gives the same µs for every text both accept."""
    array = texts if isinstance(texts, pa.StringArray) else pa.array(texts, pa.string())
    if parsed is not None:
        if not parsed.null_count:
            return parsed
        unparsed = parsed.is_null()
        return pc.replace_with_mask(parsed, unparsed, rfc3339_timestamps(array.filter(unparsed)))
    if _rfc3339_shaped(array):
        try:
            # Straight to µs: exact for up to 6 fraction digits, what most feeds print.
            return array.cast(UTC_US)
        except pa.ArrowInvalid:
            pass  # more digits than µs hold (or a text Arrow refuses)
        try:
            # Through ns so 9-digit fractions parse too; then half-up to µs, as msgspec rounds.
            nanos = array.cast(_UTC_NS).cast(pa.int64()).to_numpy(zero_copy_only=False)
            return pa.array((nanos + 500) // 1000, pa.int64()).view(UTC_US)
        except pa.ArrowInvalid:
            pass
    return pa.array([_rfc3339_us(text) for text in array.to_pylist()], pa.int64()).cast(UTC_US)


def _rfc3339_shaped(texts: pa.StringArray) -> bool:
    """Every text reads ``YYYY-MM-DD`` ``T`` (either case) ``HH:MM:SS``: the shape Arrow parses as RFC3339 does.
    Read from the column's bytes with numpy (slicing the strings in Arrow costs more than the parse)."""
    if not len(texts) or texts.null_count:
        return not len(texts)
    _, offsets_buffer, data_buffer = texts.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int32)[texts.offset:texts.offset + len(texts) + 1]
    widths = np.diff(offsets)
    if data_buffer is None or int(widths.min()) < len("YYYY-MM-DDTHH:MM:SS"):
        return False
    data = np.frombuffer(data_buffer, np.uint8)
    if widths.min() == widths.max():
        # One width, as a feed prints every time alike: the texts are the rows of a matrix, and the bytes at a
        # position a strided column of it (a view, where gathering them by offset copies).
        rows = data[offsets[0]:offsets[-1]].reshape(len(texts), int(widths[0]))

        def at(position: int) -> np.ndarray:
            return rows[:, position]
    else:
        def at(position: int) -> np.ndarray:
            return data[offsets[:-1] + position]
    return bool(np.all((at(4) == ord("-")) & (at(7) == ord("-")) & ((at(10) | 0x20) == ord("t"))
                       & (at(13) == ord(":")) & (at(16) == ord(":"))))


def _rfc3339_us(text: str) -> int | None:
    try:
        return datetime_us(_datetime_decoder.decode(msgspec.json.encode(text)))
    except (msgspec.DecodeError, OverflowError):
        return None


def highest_per_key(keys: pa.Array | pa.ChunkedArray, values: np.ndarray) -> dict[Any, int]:
    """The highest of ``values`` (int64, one per row) for each distinct key (no nulls): one entry per key,
    computed in numpy, never a Python object per row. With ``values`` the row numbers, it is each key's last
    row."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    encoded = pc.dictionary_encode(keys)
    highest = np.full(len(encoded.dictionary), np.iinfo(np.int64).min, np.int64)
    np.maximum.at(highest, encoded.indices.to_numpy(zero_copy_only=False), np.asarray(values, np.int64))
    return dict(zip(encoded.dictionary.to_pylist(), highest.tolist(), strict=True))
