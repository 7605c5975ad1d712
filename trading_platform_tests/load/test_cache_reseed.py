"""ClickHouse -> Redis: the reseed restores every pair's last trade and top of book, never an older one."""

from __future__ import annotations

import time

import pyarrow as pa

from trading_platform.load.cache_reseed import reseed_from_clickhouse
from trading_platform.schema import MARKET_TRADES, ORDERBOOK_SNAPSHOTS
from trading_platform.storage.clickhouse import ClickHouse
from trading_platform.storage.redis_cache import LatestTrade, PriceCache, connect
from trading_platform_tests.load.test_lake_to_clickhouse import trades


def book(symbol: str, bid: float, ask: float, time_us: int) -> pa.Table:
    utc_us = pa.timestamp("us", tz="UTC")
    schema = pa.schema([f for f in ORDERBOOK_SNAPSHOTS.arrow_schema if f.name != "batch_id"])
    return pa.Table.from_pydict({
        "exchange": ["binance"], "symbol": [symbol], "native_symbol": [symbol.replace("-", "")],
        "timestamp": pa.array([time_us]).cast(utc_us), "received_at": pa.array([time_us]).cast(utc_us),
        "sequence": [1], "bids": [[{"price": bid, "quantity": 2.0}]], "asks": [[{"price": ask, "quantity": 3.0}]],
    }, schema=schema)


def test_the_reseed_writes_each_pairs_last_trade_and_top_of_book(warehouse: ClickHouse, redis_url: str) -> None:
    warehouse.insert_arrow(MARKET_TRADES.qualified_name, trades(1, 10))  # prices 100..109, ids 1..10
    now_us = time.time_ns() // 1000
    warehouse.insert_arrow(ORDERBOOK_SNAPSHOTS.qualified_name, book("BTC-USDT", 99.0, 101.0, now_us - 5_000))
    warehouse.insert_arrow(ORDERBOOK_SNAPSHOTS.qualified_name, book("BTC-USDT", 100.0, 102.0, now_us - 1_000))
    cache = PriceCache(connect(redis_url))
    assert reseed_from_clickhouse(warehouse, cache) == 3  # two pairs' trades, one pair's book
    btc, eth = cache.read("binance", "BTC-USDT"), cache.read("binance", "ETH-USDT")
    assert (btc["trade_id"], btc["price"], eth["trade_id"], eth["price"]) == ("9", "108.0", "10", "109.0")
    assert (btc["best_bid"], btc["best_ask"], btc["best_bid_quantity"]) == ("100.0", "102.0", "2.0")


def test_the_reseed_keeps_a_newer_cached_trade(warehouse: ClickHouse, redis_url: str) -> None:
    warehouse.insert_arrow(MARKET_TRADES.qualified_name, trades(1, 2, ("BTC-USDT",)))
    cache = PriceCache(connect(redis_url))
    newer = LatestTrade("binance", "BTC-USDT", 500.0, 1.0, "sell", "99", time.time_ns() // 1000 + 60_000_000)
    cache.write([newer])
    reseed_from_clickhouse(warehouse, cache)
    assert cache.read("binance", "BTC-USDT")["price"] == "500.0"
