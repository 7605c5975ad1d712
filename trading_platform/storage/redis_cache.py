"""Redis price cache client: one hash per exchange:symbol, written with pipelining.

Keys: ``tp:price:{exchange}:{symbol}`` with fields price, quantity, side, trade_id, trade_time_us
(exchange time) and updated_us (when the platform wrote it), so readers can tell a stale value.
Every write goes through one Lua compare-and-set on trade_time_us: the ingestion run's hot writes and
the ``latest_prices`` reseed from ClickHouse can race without ever replacing a newer trade by an
older one.

``tp:candle:{interval}:{exchange}:{symbol}`` holds the newest (open) candle of an interval and
``tp:indicators:{interval}:{exchange}:{symbol}`` the newest indicator values, each with its bucket_us
(interval start) and updated_us. A candle is replaced only by a newer interval or by the same interval
with at least as many trades: the ingestion run's hot 1-minute candle and the analytics assets' candles
never replace a fuller one by one that saw fewer trades (e.g. a run restarted mid-minute).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline
from redis.commands.core import Script

KEY_PREFIX = "tp:price:"
UPDATES_CHANNEL = "tp:prices"

# KEYS[1] = hash key; ARGV = trade_time_us, then field/value pairs. Returns 1 when written.
_SET_IF_NEWER = """
local current = redis.call('HGET', KEYS[1], 'trade_time_us')
if current and tonumber(current) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""


# Top of book has its own time field, so trade and book writes never block each other.
_SET_BOOK_IF_NEWER = _SET_IF_NEWER.replace("'trade_time_us'", "'book_time_us'")

# KEYS[1] = hash key; ARGV = bucket_us, trade_count, then field/value pairs. Returns 1 when written.
_SET_CANDLE_IF_FULLER = """
local bucket = redis.call('HGET', KEYS[1], 'bucket_us')
if bucket then
  local b, n = tonumber(bucket), tonumber(redis.call('HGET', KEYS[1], 'trade_count') or '0')
  if b > tonumber(ARGV[1]) or (b == tonumber(ARGV[1]) and n > tonumber(ARGV[2])) then return 0 end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
return 1
"""


def price_key(exchange: str, symbol: str) -> str:
    return f"{KEY_PREFIX}{exchange}:{symbol}"


@dataclass(frozen=True)
class LatestTrade:
    exchange: str
    symbol: str
    price: float
    quantity: float
    side: str
    trade_id: str
    trade_time_us: int

    def cache_fields(self, updated_us: int) -> list[Any]:
        """The hash's field/value pairs for this trade, written at ``updated_us``."""
        return ["exchange", self.exchange, "symbol", self.symbol, "price", repr(self.price),
                "quantity", repr(self.quantity), "side", self.side, "trade_id", self.trade_id,
                "trade_time_us", self.trade_time_us, "updated_us", updated_us]


@dataclass(frozen=True)
class LatestBook:
    exchange: str
    symbol: str
    best_bid: float
    best_bid_quantity: float
    best_ask: float
    best_ask_quantity: float
    book_time_us: int

    def cache_fields(self, updated_us: int) -> list[Any]:
        """The hash's top-of-book field/value pairs, written at ``updated_us`` (trade fields untouched)."""
        return ["exchange", self.exchange, "symbol", self.symbol, "best_bid", repr(self.best_bid),
                "best_bid_quantity", repr(self.best_bid_quantity), "best_ask", repr(self.best_ask),
                "best_ask_quantity", repr(self.best_ask_quantity), "book_time_us", self.book_time_us,
                "book_updated_us", updated_us]


def candle_key(interval: str, exchange: str, symbol: str) -> str:
    return f"tp:candle:{interval}:{exchange}:{symbol}"


def indicators_key(interval: str, exchange: str, symbol: str) -> str:
    return f"tp:indicators:{interval}:{exchange}:{symbol}"


@dataclass(frozen=True)
class CachedCandle:
    interval: str  # 1m, 5m, 1h, 1d
    exchange: str
    symbol: str
    bucket_us: int  # interval start, UTC
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    trade_count: int
    buy_volume: float
    sell_volume: float

    def cache_fields(self, updated_us: int) -> list[Any]:
        vwap = self.quote_volume / self.volume if self.volume else float("nan")
        return ["interval", self.interval, "exchange", self.exchange, "symbol", self.symbol,
                "bucket_us", self.bucket_us, "open", repr(self.open), "high", repr(self.high),
                "low", repr(self.low), "close", repr(self.close), "volume", repr(self.volume),
                "vwap", repr(vwap), "trade_count", self.trade_count, "buy_volume", repr(self.buy_volume),
                "sell_volume", repr(self.sell_volume), "updated_us", updated_us]


def connect(url: str) -> redis.Redis[str]:
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, decode_responses=True)


class PriceCache:
    def __init__(self, client: redis.Redis[str]) -> None:
        self.client = client
        self._round_trip: Pipeline[str] | None = None  # set inside one_round_trip()
        self._set_if_newer = client.register_script(_SET_IF_NEWER)
        self._set_book_if_newer = client.register_script(_SET_BOOK_IF_NEWER)
        self._set_candle_if_fuller = client.register_script(_SET_CANDLE_IF_FULLER)
        self._set_indicators_if_newer = client.register_script(_SET_IF_NEWER.replace("'trade_time_us'", "'bucket_us'"))

    @contextmanager
    def one_round_trip(self) -> Iterator[None]:
        """Every write inside goes to Redis in one pipelined round trip, at the end. The ingestion run's tick
        writes trades, books and candles: one round trip instead of one each (and each pipeline of scripts pays
        a SCRIPT EXISTS round trip too), which matters most when a busy process waits for the GIL after each."""
        self._round_trip = self.client.pipeline(transaction=False)
        try:
            yield
            self._round_trip.execute()
        finally:
            self._round_trip = None

    def _pipeline(self) -> Pipeline[str]:
        return self._round_trip if self._round_trip is not None else self.client.pipeline(transaction=False)

    def _execute(self, pipe: Pipeline[str]) -> None:
        if pipe is not self._round_trip:
            pipe.execute()

    def write(self, trades: Iterable[LatestTrade], publish: bool = True) -> int:
        """Write each trade unless a newer one is cached; one pipelined round trip. Returns writes."""
        now_us = time.time_ns() // 1000
        return self._write_if_newer(self._set_if_newer, (
            (price_key(trade.exchange, trade.symbol), trade.trade_time_us, trade.cache_fields(now_us),
             f"{trade.exchange}:{trade.symbol}:{trade.price!r}" if publish else None)
            for trade in trades))

    def write_books(self, books: Iterable[LatestBook]) -> int:
        """Best bid/ask per symbol (fields best_bid, best_ask, *_quantity, book_time_us), one round trip."""
        now_us = time.time_ns() // 1000
        return self._write_if_newer(self._set_book_if_newer, (
            (price_key(book.exchange, book.symbol), book.book_time_us, book.cache_fields(now_us), None)
            for book in books))

    def write_candles(self, candles: Iterable[CachedCandle]) -> int:
        """Each candle unless a newer or fuller one of its interval is cached; one round trip."""
        now_us = time.time_ns() // 1000
        pipe = self._pipeline()
        count = 0
        for candle in candles:
            self._set_candle_if_fuller(keys=[candle_key(candle.interval, candle.exchange, candle.symbol)],
                                       args=[candle.bucket_us, candle.trade_count, *candle.cache_fields(now_us)],
                                       client=pipe)
            count += 1
        if count:
            self._execute(pipe)
        return count

    def write_indicators(self, interval: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Each symbol's newest indicator row (exchange, symbol, bucket_us and the values), newer bucket wins."""
        now_us = time.time_ns() // 1000
        return self._write_if_newer(self._set_indicators_if_newer, (
            (indicators_key(interval, row["exchange"], row["symbol"]), row["bucket_us"],
             [*(item for key, value in row.items() for item in (key, repr(value) if isinstance(value, float)
                                                                 else value)), "updated_us", now_us], None)
            for row in rows))

    def read_candle(self, interval: str, exchange: str, symbol: str) -> Mapping[str, str]:
        return self.client.hgetall(candle_key(interval, exchange, symbol))

    def read_indicators(self, interval: str, exchange: str, symbol: str) -> Mapping[str, str]:
        return self.client.hgetall(indicators_key(interval, exchange, symbol))

    def _write_if_newer(self, script: Script, entries: Iterable[tuple[str, int, list[Any], str | None]]) -> int:
        """(key, time, fields, update to publish or None) each through ``script``'s compare-and-set, all in
        one pipelined round trip. Returns how many were sent."""
        pipe = self._pipeline()
        count = 0
        for key, time_us, fields, update in entries:
            script(keys=[key], args=[time_us, *fields], client=pipe)
            if update is not None:
                pipe.publish(UPDATES_CHANNEL, update)
            count += 1
        if count:
            self._execute(pipe)
        return count

    def read_all(self) -> list[dict[str, str]]:
        keys = sorted(self.client.scan_iter(match=KEY_PREFIX + "*", count=1000))
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        return [entry for entry in pipe.execute() if entry]

    def read(self, exchange: str, symbol: str) -> Mapping[str, str]:
        return self.client.hgetall(price_key(exchange, symbol))
