from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

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
