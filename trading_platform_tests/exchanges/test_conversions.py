from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pyarrow as pa
import pytest

from trading_platform.exchanges.conversions import highest_per_key, rfc3339_timestamps


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_rfc3339_texts_parse_to_utc_microseconds_with_any_offset() -> None:
    parsed = rfc3339_timestamps(["2026-04-07T14:30:02.789012Z", "2026-04-07T16:30:02+02:00"])
    assert parsed.to_pylist() == [at("2026-04-07T14:30:02.789012+00:00"), at("2026-04-07T14:30:02+00:00")]


def test_nanoseconds_round_half_up_to_microseconds() -> None:
    parsed = rfc3339_timestamps(["2026-04-07T14:30:02.000000500Z", "2026-04-07T14:30:02.999999499Z"])
    assert parsed.to_pylist() == [at("2026-04-07T14:30:02.000001+00:00"), at("2026-04-07T14:30:02.999999+00:00")]


def test_a_text_reads_the_same_whatever_its_neighbours() -> None:
    """The vectorized parse and the value-by-value one (taken when a neighbour is malformed) agree."""
    text = "2026-04-07T14:30:02.123456789Z"
    assert rfc3339_timestamps([text]).to_pylist() == rfc3339_timestamps([text, "garbage"]).to_pylist()[:1]


def test_times_already_parsed_are_kept_and_only_the_others_judged() -> None:
    texts = pa.array(["2026-04-07T14:30:02Z", "2026-04-07t14:30:02z", "soon"])
    parsed = pa.array([123, None, None], pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    assert rfc3339_timestamps(texts, parsed).to_pylist() == [
        datetime(1970, 1, 1, 0, 0, 0, 123, tzinfo=UTC), at("2026-04-07T14:30:02+00:00"), None]


def test_texts_that_are_not_rfc3339_times_are_null() -> None:
    parsed = rfc3339_timestamps(["2026-04-07", "", "soon", "2026-04-07T14:30:02Z"])
    assert parsed.to_pylist() == [None, None, None, at("2026-04-07T14:30:02+00:00")]


def test_times_without_seconds_are_null_though_arrow_would_read_them() -> None:
    parsed = rfc3339_timestamps(["2026-04-07T14:30Z", "2026-04-07T14Z", "2026-04-07T14:30:02Z"])
    assert parsed.to_pylist() == [None, None, at("2026-04-07T14:30:02+00:00")]


def test_highest_per_key_keeps_one_value_per_key() -> None:
    keys = pa.chunked_array([["b", "a", "b"], ["c", "a"]])
    assert highest_per_key(keys, np.array([5, 1, 3, 7, 2])) == {"b": 5, "a": 2, "c": 7}


def test_highest_row_number_per_key_is_each_keys_last_row() -> None:
    keys = pa.array(["x", "y", "x", "x", "y"])
    assert highest_per_key(keys, np.arange(5)) == {"x": 3, "y": 4}


def strict_us(text: str) -> int:
    """One text read by msgspec, the strict reader the column parse must agree with."""
    moment = msgspec.json.decode(msgspec.json.encode(text), type=datetime)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


@pytest.mark.parametrize("digits", [0, 3, 6, 8, 9])
def test_a_feeds_fixed_width_times_read_as_the_strict_reader_reads_each(digits: int) -> None:
    """A feed prints every time alike (one width, Z): that column takes numpy's parse of its bytes; leap days,
    year ends and half-µs roundings included, it must give msgspec's µs for every text."""
    rng = random.Random(digits)
    moments = [datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC), datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC),
               *(datetime(1971, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(2_000_000_000))
                 for _ in range(500))]
    fraction = [rng.randrange(10**digits) for _ in moments] if digits else [0] * len(moments)
    fraction[:2] = [10**digits - 1, 5 * 10 ** (digits - 7) if digits > 6 else 0] if digits else [0, 0]
    texts = [m.strftime("%Y-%m-%dT%H:%M:%S") + (f".{f:0{digits}d}" if digits else "") + "Z"
             for m, f in zip(moments, fraction, strict=True)]
    parsed = rfc3339_timestamps(texts).cast(pa.int64()).to_pylist()
    assert parsed == [strict_us(text) for text in texts]


def test_a_fixed_width_column_with_an_impossible_date_keeps_its_good_times() -> None:
    parsed = rfc3339_timestamps(["2026-13-07T14:30:02.000001Z", "2026-04-07T14:30:02.000001Z"])
    assert parsed.to_pylist() == [None, at("2026-04-07T14:30:02.000001+00:00")]
