"""ClickHouse -> Redis: reseed or repair the price cache from the warehouse (a Redis restart loses it all)."""

from __future__ import annotations

from trading_platform.schema import MARKET_TRADES, ORDERBOOK_SNAPSHOTS
from trading_platform.storage.clickhouse import ClickHouse
from trading_platform.storage.redis_cache import LatestBook, LatestTrade, PriceCache


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
