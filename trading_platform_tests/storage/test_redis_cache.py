from __future__ import annotations

import redis

from trading_platform.storage.redis_cache import (
    UPDATES_CHANNEL,
    CachedCandle,
    LatestTrade,
    PriceCache,
    connect,
    price_key,
)


def trade(price: float, time_us: int, symbol: str = "BTC-USDT") -> LatestTrade:
    return LatestTrade("binance", symbol, price, 0.5, "buy", str(time_us), time_us)


def test_write_stores_a_hash_per_exchange_symbol(redis_url: str) -> None:
    cache = PriceCache(connect(redis_url))
    cache.write([trade(100.0, 10), trade(2.0, 11, "ETH-USDT")])
    stored = cache.read("binance", "BTC-USDT")
    assert stored["price"] == "100.0"
    assert stored["trade_time_us"] == "10"
    assert int(stored["updated_us"]) > 0
    assert len(cache.read_all()) == 2


def test_an_older_trade_never_replaces_a_newer_one(redis_url: str) -> None:
    cache = PriceCache(connect(redis_url))
    cache.write([trade(100.0, 20)])
    cache.write([trade(99.0, 10)])
    assert cache.read("binance", "BTC-USDT")["price"] == "100.0"
    cache.write([trade(101.0, 30)])
    assert cache.read("binance", "BTC-USDT")["price"] == "101.0"


def test_updates_are_published(redis_url: str) -> None:
    client = connect(redis_url)
    pubsub = client.pubsub()
    pubsub.subscribe(UPDATES_CHANNEL)
    pubsub.get_message(timeout=1)
    PriceCache(client).write([trade(42.0, 1)])
    message = pubsub.get_message(timeout=2)
    assert message is not None and message["data"] == "binance:BTC-USDT:42.0"


def test_key_layout_is_documented_one(redis_url: str) -> None:
    PriceCache(connect(redis_url)).write([trade(1.0, 1)])
    assert redis.Redis.from_url(redis_url).exists(price_key("binance", "BTC-USDT")) == 1
    assert price_key("binance", "BTC-USDT") == "tp:price:binance:BTC-USDT"


def candle(bucket_us: int, trades: int, close: float) -> CachedCandle:
    return CachedCandle("1m", "binance", "BTC-USDT", bucket_us, 100.0, 101.0, 99.0, close, 2.0, 200.0, trades, 1.0, 1.0)


def test_a_candle_is_replaced_only_by_a_newer_or_fuller_one(redis_url: str) -> None:
    cache = PriceCache(connect(redis_url))
    cache.write_candles([candle(60_000_000, 5, 100.5)])
    cache.write_candles([candle(60_000_000, 3, 99.5)])  # a run restarted mid-minute saw fewer trades
    assert cache.read_candle("1m", "binance", "BTC-USDT")["close"] == "100.5"
    cache.write_candles([candle(0, 50, 98.0)])  # an older minute
    assert cache.read_candle("1m", "binance", "BTC-USDT")["close"] == "100.5"
    cache.write_candles([candle(60_000_000, 6, 100.7)])
    assert cache.read_candle("1m", "binance", "BTC-USDT")["close"] == "100.7"
    cache.write_candles([candle(120_000_000, 1, 101.0)])
    stored = cache.read_candle("1m", "binance", "BTC-USDT")
    assert (stored["bucket_us"], stored["close"], stored["vwap"]) == ("120000000", "101.0", "100.0")


def test_writes_in_one_round_trip_reach_redis_together_at_its_end(redis_url: str) -> None:
    cache = PriceCache(connect(redis_url))
    with cache.one_round_trip():
        assert cache.write([trade(100.0, 10)]) == 1
        assert cache.write_candles([candle(60_000_000, 5, 100.5)]) == 1
        assert cache.read("binance", "BTC-USDT") == {}  # queued, not sent
    assert cache.read("binance", "BTC-USDT")["price"] == "100.0"
    assert cache.read_candle("1m", "binance", "BTC-USDT")["close"] == "100.5"
    cache.write([trade(101.0, 20)])  # after it, a write is its own round trip again
    assert cache.read("binance", "BTC-USDT")["price"] == "101.0"
