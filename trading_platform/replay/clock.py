"""RFC3339 timestamps as the exchanges print them (UTC, ``Z``), cheap enough to call per message."""

from __future__ import annotations

import time

_second_cache: tuple[int, str] = (-1, "")


def _seconds_text(seconds: int) -> str:
    global _second_cache
    if _second_cache[0] != seconds:
        _second_cache = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return _second_cache[1]


def rfc3339_ns(ns: int) -> str:
    """``2023-02-09T20:32:50.714964855Z`` (Coinbase envelopes)."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    return f"{_seconds_text(seconds)}.{fraction:09d}Z"


def rfc3339_us(us: int) -> str:
    """``2023-10-06T17:35:55.440295Z`` (Kraken, Coinbase trade and level times)."""
    seconds, fraction = divmod(us, 1_000_000)
    return f"{_seconds_text(seconds)}.{fraction:06d}Z"


def now_ns() -> int:
    return time.time_ns()
