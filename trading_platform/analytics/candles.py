"""OHLCV candles per exchange, symbol and interval, computed in ClickHouse one UTC day at a time.

A day is always recomputed whole and swapped in with ``REPLACE PARTITION``: late trades, a re-loaded
batch or a rebuilt day give exactly the candles a clean load gives (nothing is added to an old candle,
so nothing is counted twice), and a reader sees the day's old candles or its new ones, never a mix.
1-minute candles come from ``trading.market_trades``; 5-minute, 1-hour and 1-day candles from the
1-minute ones, never from the raw trades again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from trading_platform.schema import CANDLES_1D, CANDLES_1H, CANDLES_1M, CANDLES_5M, DATABASE, MARKET_TRADES, Table
from trading_platform.sql import qualified_name, quote_string
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
SUM_DECIMALS = 12


def _exact_sum(expression: str) -> str:
    """A float sum that does not depend on the order of the rows: floating-point addition does, and a
    rebuilt day or a late batch stores its rows in another order than a clean load. Each value is
    rounded to 12 decimals (finer than any exchange's quantity or price step) and added exactly."""
    return f"toFloat64(sum(toDecimal128({expression}, {SUM_DECIMALS})))"


def _bucket(interval: Interval, column: str) -> str:
    return f"toDateTime64({interval.start_of.format(t=column)}, 6, 'UTC')"


def _from_trades(interval: Interval, day: date) -> str:
    return f"""
        SELECT exchange, symbol, {_bucket(interval, 'timestamp')} AS bucket,
               argMin(price, {_TRADE_ORDER}) AS open, max(price) AS high, min(price) AS low,
               argMax(price, {_TRADE_ORDER}) AS close,
               {_exact_sum('quantity')} AS volume, {_exact_sum('price * quantity')} AS quote_volume,
               quote_volume / volume AS vwap, count() AS trade_count,
               {_exact_sum("if(side = 'buy', quantity, 0)")} AS buy_volume,
               {_exact_sum("if(side = 'sell', quantity, 0)")} AS sell_volume
        FROM {MARKET_TRADES.sql_name}
        WHERE toDate(timestamp) = {quote_string(day.isoformat())}
        GROUP BY exchange, symbol, bucket"""


def _from_minutes(interval: Interval, day: date) -> str:
    return f"""
        SELECT exchange, symbol, {_bucket(interval, 'bucket')} AS coarse,
               argMin(open, bucket) AS open, max(high) AS high, min(low) AS low, argMax(close, bucket) AS close,
               {_exact_sum('volume')} AS volume, {_exact_sum('quote_volume')} AS quote_volume,
               quote_volume / volume AS vwap, sum(trade_count) AS trade_count,
               {_exact_sum('buy_volume')} AS buy_volume, {_exact_sum('sell_volume')} AS sell_volume
        FROM {CANDLES_1M.sql_name}
        WHERE toDate(bucket) = {quote_string(day.isoformat())}
        GROUP BY exchange, symbol, coarse"""


def _staging_name(table: Table) -> str:
    return qualified_name(DATABASE, f"{table.name}_staging")


def recompute_day(ch: ClickHouse, day: date) -> dict[str, int]:
    """Recompute every interval's candles of ``day`` and swap them in; returns rows per table."""
    rows: dict[str, int] = {}
    for interval in INTERVALS:
        table = interval.table
        staging = _staging_name(table)
        # A staging table with the target's structure and partitioning, empty before each day.
        ch.command(f"CREATE TABLE IF NOT EXISTS {staging} AS {table.sql_name}")
        ch.command(f"TRUNCATE TABLE {staging}")
        select = _from_trades(interval, day) if table is CANDLES_1M else _from_minutes(interval, day)
        ch.command(f"INSERT INTO {staging} ({', '.join(table.column_names)}) {select}")
        count = int(ch.query_arrow(f"SELECT count() AS n FROM {staging}").column("n")[0].as_py())
        partition = quote_string(day.isoformat())
        if count:
            ch.command(f"ALTER TABLE {table.sql_name} REPLACE PARTITION {partition} FROM {staging}")
        else:  # no trades that day (any more): REPLACE refuses an empty source, DROP says what is meant
            ch.command(f"ALTER TABLE {table.sql_name} DROP PARTITION {partition}")
        rows[table.name] = count
    return rows


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
    literal = quote_string(day.isoformat())
    truth = ch.query_arrow(
        f"SELECT exchange, symbol, count() AS trades, {_exact_sum('quantity')} AS volume "
        f"FROM {MARKET_TRADES.sql_name} WHERE toDate(timestamp) = {literal} GROUP BY exchange, symbol"
    ).to_pylist()
    expected = {(r["exchange"], r["symbol"]): (int(r["trades"]), float(r["volume"])) for r in truth}
    mismatches: list[Mismatch] = []
    for interval in INTERVALS:
        table = interval.table
        rows = ch.query_arrow(
            f"SELECT exchange, symbol, sum(trade_count) AS trades, {_exact_sum('volume')} AS volume "
            f"FROM {table.sql_name} WHERE toDate(bucket) = {literal} GROUP BY exchange, symbol"
        ).to_pylist()
        found = {(r["exchange"], r["symbol"]): (int(r["trades"]), float(r["volume"])) for r in rows}
        for key in sorted(expected.keys() | found.keys()):
            want, got = expected.get(key, (0, 0.0)), found.get(key, (0, 0.0))
            # Volumes: the candles round each interval's exact sum to a float once more.
            if want[0] != got[0] or abs(want[1] - got[1]) > 1e-9 * max(abs(want[1]), 1.0):
                mismatches.append(Mismatch(table.name, key[0], key[1], want, got))
    return mismatches
