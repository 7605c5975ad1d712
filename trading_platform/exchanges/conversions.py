"""Exchange text and times -> Arrow columns, vectorized: the number and time conversions every protocol
needs (exchanges send numbers as strings and times as ms, RFC3339 text or datetimes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

UTC_US = pa.timestamp("us", tz="UTC")
_UTC_NS = pa.timestamp("ns", tz="UTC")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_datetime_decoder = msgspec.json.Decoder(datetime)


def strings_to_float(values: list[str]) -> pa.Array:
    """Exchange number strings -> float64, vectorized; unparseable ones become NaN, which the quality
    rules then reject with the raw frame (one bad number never fails the whole batch)."""
    array = pa.array(values, pa.string())
    try:
        return pc.cast(array, pa.float64())
    except pa.ArrowInvalid:
        return pa.array([_float_or_nan(v) for v in values], pa.float64())


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


def micros_timestamps(values: list[int]) -> pa.Array:
    """µs since the epoch -> a UTC timestamp column."""
    return pa.array(values, pa.int64()).cast(UTC_US)


def millis_timestamps(values: list[int]) -> pa.Array:
    """ms since the epoch -> a UTC µs timestamp column (multiplied in Arrow, not per value)."""
    return pc.multiply(pa.array(values, pa.int64()), 1000).cast(UTC_US)


def rfc3339_timestamps(texts: list[str]) -> pa.Array:
    """RFC3339 text -> µs UTC; null where a value is not a timestamp (its row is quarantined)."""
    try:
        # Through ns so 9-digit fractions parse too; truncating to µs is the intent (safe=False).
        return pa.array(texts, pa.string()).cast(_UTC_NS).cast(UTC_US, safe=False)
    except pa.ArrowInvalid:
        return pa.array([_rfc3339_us(text) for text in texts], pa.int64()).cast(UTC_US)


def _rfc3339_us(text: str) -> int | None:
    try:
        return datetime_us(_datetime_decoder.decode(msgspec.json.encode(text)))
    except (msgspec.DecodeError, OverflowError):
        return None
