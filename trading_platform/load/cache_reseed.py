"""ClickHouse -> Redis: reseed or repair the price cache from the warehouse (a Redis restart loses it all),
and cache the newest candles and indicators the analytics computed."""

from __future__ import annotations

from datetime import date
from typing import Any

from trading_platform.schema import (
    CANDLE_TABLES,
    INDICATORS_1H,
    INDICATORS_1M,
    MARKET_TRADES,
    ORDERBOOK_SNAPSHOTS,
    Table,
)
from trading_platform.sql import quote_string
from trading_platform.storage.clickhouse import ClickHouse
from trading_platform.storage.redis_cache import CachedCandle, LatestBook, LatestTrade, PriceCache


def reseed_from_clickhouse(ch: ClickHouse, cache: PriceCache, lookback_hours: int = 24) -> int:
    """Write each (exchange, symbol)'s last trade from ClickHouse; newer cached values are kept."""
    # Aliases differ from column names: ClickHouse would otherwise resolve `trade_id` inside the next
    # argMax to the aggregate itself.
    rows = ch.query_arrow(
        "SELECT exchange, symbol, argMax(price, (timestamp, trade_id)) AS last_price, "
        "argMax(quantity, (timestamp, trade_id)) AS last_quantity, argMax(side, (timestamp, trade_id)) AS last_side, "
        "argMax(trade_id, (timestamp, trade_id)) AS last_trade_id, "
        "toUnixTimestamp64Micro(max(timestamp)) AS last_trade_time_us "
        f"FROM {MARKET_TRADES.sql_name} WHERE timestamp >= now() - INTERVAL {int(lookback_hours)} HOUR "
        "GROUP BY exchange, symbol"
    ).to_pylist()
    trades = (LatestTrade(row["exchange"], row["symbol"], row["last_price"], row["last_quantity"], row["last_side"],
                          row["last_trade_id"], int(row["last_trade_time_us"])) for row in rows)
    written = cache.write(trades, publish=False)
    books = ch.query_arrow(
        "SELECT exchange, symbol, argMax(bids[1].1, timestamp) AS bid, argMax(bids[1].2, timestamp) AS bid_qty, "
        "argMax(asks[1].1, timestamp) AS ask, argMax(asks[1].2, timestamp) AS ask_qty, "
        f"toUnixTimestamp64Micro(max(timestamp)) AS book_time_us FROM {ORDERBOOK_SNAPSHOTS.sql_name} "
        f"WHERE timestamp >= now() - INTERVAL {int(lookback_hours)} HOUR GROUP BY exchange, symbol"
    ).to_pylist()
    cache.write_books(LatestBook(row["exchange"], row["symbol"], row["bid"], row["bid_qty"], row["ask"], row["ask_qty"],
                                 int(row["book_time_us"])) for row in books)
    return written + len(books)


def cache_latest_analytics(ch: ClickHouse, cache: PriceCache, day: date) -> int:
    """Write each (exchange, symbol)'s newest candle of every interval and newest indicator values of ``day``
    (fuller or newer cached ones are kept: the ingestion run's hot 1-minute candle usually is)."""
    written = 0
    for table in CANDLE_TABLES:
        interval = table.name.removeprefix("candles_")
        rows = _newest_rows(ch, table, day)
        written += cache.write_candles(CachedCandle(
            interval, r["exchange"], r["symbol"], r["bucket_us"], r["open"], r["high"], r["low"], r["close"],
            r["volume"], r["quote_volume"], int(r["trade_count"]), r["buy_volume"], r["sell_volume"]) for r in rows)
    for table in (INDICATORS_1M, INDICATORS_1H):
        written += cache.write_indicators(table.name.removeprefix("indicators_"), _newest_rows(ch, table, day))
    return written


def _newest_rows(ch: ClickHouse, table: Table, day: date) -> list[dict[str, Any]]:
    """The newest row of each (exchange, symbol) of ``day``, its bucket as ``bucket_us``."""
    rows: list[dict[str, Any]] = ch.query_arrow(
        f"SELECT * EXCEPT bucket, toUnixTimestamp64Micro(bucket) AS bucket_us FROM {table.sql_name} "
        f"WHERE toDate(bucket) = {quote_string(day.isoformat())} ORDER BY bucket DESC LIMIT 1 BY exchange, symbol"
    ).to_pylist()
    return rows
