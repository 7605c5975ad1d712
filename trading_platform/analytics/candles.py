"""OHLCV candles per exchange, symbol and interval, computed in ClickHouse one UTC day at a time
(recomputed whole and swapped in, see ``day_tables``): nothing is ever added to an old candle, so
nothing is counted twice. 1-minute candles come from ``trading.market_trades``; 5-minute, 1-hour and
1-day candles from the 1-minute ones, never from the raw trades again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from trading_platform.analytics.day_tables import day_literal, exact_sum, replace_day
from trading_platform.schema import CANDLES_1D, CANDLES_1H, CANDLES_1M, CANDLES_5M, MARKET_TRADES, Table
from trading_platform.storage.clickhouse import ClickHouse


@dataclass(frozen=True)
class Interval:
    table: Table
    start_of: str  # ClickHouse expression: the interval's start for a DateTime64 column named `{t}`


INTERVALS = (
    Interval(CANDLES_1M, "toStartOfMinute({t})"),
    Interval(CANDLES_5M, "toStartOfFiveMinutes({t})"),
    Interval(CANDLES_1H, "toStartOfHour({t})"),
    Interval(CANDLES_1D, "toStartOfDay({t})"),
)

# The first and last trade of an interval: by exchange time, then by trade id. Ordering ids by length
# first makes numeric ids compare as numbers ("10" after "9") while any string id still orders.
_TRADE_ORDER = "(timestamp, length(trade_id), trade_id)"


def _bucket(interval: Interval, column: str) -> str:
    return f"toDateTime64({interval.start_of.format(t=column)}, 6, 'UTC')"


def _from_trades(interval: Interval, day: date) -> str:
    return f"""
        SELECT exchange, symbol, {_bucket(interval, 'timestamp')} AS bucket,
               argMin(price, {_TRADE_ORDER}) AS open, max(price) AS high, min(price) AS low,
               argMax(price, {_TRADE_ORDER}) AS close,
               {exact_sum('quantity')} AS volume, {exact_sum('price * quantity')} AS quote_volume,
               quote_volume / volume AS vwap, count() AS trade_count,
               {exact_sum("if(side = 'buy', quantity, 0)")} AS buy_volume,
               {exact_sum("if(side = 'sell', quantity, 0)")} AS sell_volume
        FROM {MARKET_TRADES.sql_name}
        WHERE toDate(timestamp) = {day_literal(day)}
        GROUP BY exchange, symbol, bucket"""


def _from_minutes(interval: Interval, day: date) -> str:
    return f"""
        SELECT exchange, symbol, {_bucket(interval, 'bucket')} AS coarse,
               argMin(open, bucket) AS open, max(high) AS high, min(low) AS low, argMax(close, bucket) AS close,
               {exact_sum('volume')} AS volume, {exact_sum('quote_volume')} AS quote_volume,
               quote_volume / volume AS vwap, sum(trade_count) AS trade_count,
               {exact_sum('buy_volume')} AS buy_volume, {exact_sum('sell_volume')} AS sell_volume
        FROM {CANDLES_1M.sql_name}
        WHERE toDate(bucket) = {day_literal(day)}
        GROUP BY exchange, symbol, coarse"""


def recompute_day(ch: ClickHouse, day: date) -> dict[str, int]:
    """Recompute every interval's candles of ``day`` and swap them in; returns rows per table."""
    return {interval.table.name: replace_day(ch, interval.table, day, _from_trades(interval, day)
                                             if interval.table is CANDLES_1M else _from_minutes(interval, day))
            for interval in INTERVALS}


@dataclass(frozen=True)
class Mismatch:
    table: str
    exchange: str
    symbol: str
    expected: tuple[int, float]  # (trades, volume) from the trades
    found: tuple[int, float]  # (trades, volume) from the candles


def reconcile_day(ch: ClickHouse, day: date) -> list[Mismatch]:
    """Each interval's trade count and volume per exchange and symbol, against the day's trades summed
    independently of the candle SQL (exact sums, so equal means equal)."""
    literal = day_literal(day)
    truth = ch.query_arrow(
        f"SELECT exchange, symbol, count() AS trades, {exact_sum('quantity')} AS volume "
        f"FROM {MARKET_TRADES.sql_name} WHERE toDate(timestamp) = {literal} GROUP BY exchange, symbol"
    ).to_pylist()
    expected = {(r["exchange"], r["symbol"]): (int(r["trades"]), float(r["volume"])) for r in truth}
    mismatches: list[Mismatch] = []
    for interval in INTERVALS:
        table = interval.table
        rows = ch.query_arrow(
            f"SELECT exchange, symbol, sum(trade_count) AS trades, {exact_sum('volume')} AS volume "
            f"FROM {table.sql_name} WHERE toDate(bucket) = {literal} GROUP BY exchange, symbol"
        ).to_pylist()
        found = {(r["exchange"], r["symbol"]): (int(r["trades"]), float(r["volume"])) for r in rows}
        for key in sorted(expected.keys() | found.keys()):
            want, got = expected.get(key, (0, 0.0)), found.get(key, (0, 0.0))
            # Volumes: the candles round each interval's exact sum to a float once more.
            if want[0] != got[0] or abs(want[1] - got[1]) > 1e-9 * max(abs(want[1]), 1.0):
                mismatches.append(Mismatch(table.name, key[0], key[1], want, got))
    return mismatches
