"""Indicators per exchange and symbol over 1-minute and 1-hour candles, computed with polars, one UTC day at
a time (swapped in whole, see ``day_tables``).

A day's values depend on the candles before it (a 20-candle mean at 00:05 reaches into yesterday), so the
day is computed from a fixed warm-up of earlier candles: the same candles always give the same values,
whenever the day is recomputed. Windows count candles (an interval without trades has none). The EMA and
RSI start at the first candle of the warm-up: the warm-up spans ``WARM_UP_CANDLES`` intervals, so for a
symbol that traded in each of them that start weighs less than 1e-19 by the day's first candle.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import polars as pl

from trading_platform.analytics.day_tables import replace_day_rows
from trading_platform.schema import CANDLES_1H, CANDLES_1M, INDICATORS_1H, INDICATORS_1M, Table
from trading_platform.sql import quote_string
from trading_platform.storage.clickhouse import ClickHouse

SMA_WINDOW = 20
EMA_SPAN = 20
RSI_PERIOD = 14
BOLLINGER_WIDTH = 2.0
VOLATILITY_WINDOW = 60
# (1 - 1/14) ** 600 < 1e-19: Wilder's RSI (the slowest weight) forgets its start within 600 candles.
WARM_UP_CANDLES = 600


@dataclass(frozen=True)
class IndicatorSet:
    candles: Table
    indicators: Table
    warm_up: timedelta  # how far back the warm-up candles are read (at least WARM_UP_CANDLES intervals)


INDICATOR_SETS = (
    IndicatorSet(CANDLES_1M, INDICATORS_1M, timedelta(minutes=WARM_UP_CANDLES)),
    IndicatorSet(CANDLES_1H, INDICATORS_1H, timedelta(hours=WARM_UP_CANDLES)),
)


def compute_indicators(candles: pl.DataFrame) -> pl.DataFrame:
    """Indicators of every candle: ``candles`` has exchange, symbol, bucket and close (any order)."""
    by_symbol = ["exchange", "symbol"]
    change = pl.col("close").diff().over(by_symbol)
    gain, loss = change.clip(lower_bound=0.0), (-change).clip(lower_bound=0.0)
    wilder = 1.0 / RSI_PERIOD
    frame = (
        candles.select("exchange", "symbol", "bucket", "close").sort(*by_symbol, "bucket")
        .with_columns(
            pl.col("close").rolling_mean(SMA_WINDOW).over(by_symbol).alias("sma_20"),
            pl.col("close").rolling_std(SMA_WINDOW, ddof=0).over(by_symbol).alias("_std_20"),
            pl.col("close").ewm_mean(span=EMA_SPAN, adjust=False).over(by_symbol).alias("ema_20"),
            gain.ewm_mean(alpha=wilder, adjust=False, min_samples=RSI_PERIOD).over(by_symbol).alias("_gain"),
            loss.ewm_mean(alpha=wilder, adjust=False, min_samples=RSI_PERIOD).over(by_symbol).alias("_loss"),
            pl.col("close").log().diff().rolling_std(VOLATILITY_WINDOW, ddof=1).over(by_symbol)
            .alias("realized_volatility_60"),
        )
        .with_columns(
            (100.0 - 100.0 / (1.0 + pl.col("_gain") / pl.col("_loss"))).alias("rsi_14"),
            (pl.col("sma_20") + BOLLINGER_WIDTH * pl.col("_std_20")).alias("bollinger_upper"),
            (pl.col("sma_20") - BOLLINGER_WIDTH * pl.col("_std_20")).alias("bollinger_lower"),
        )
    )
    # RSI with no losses in the window is 100 (gain / 0); with neither gains nor losses it is undefined.
    frame = frame.with_columns(
        pl.when(pl.col("_loss") == 0).then(pl.when(pl.col("_gain") > 0).then(100.0).otherwise(float("nan")))
        .otherwise(pl.col("rsi_14")).alias("rsi_14"))
    return frame.select(INDICATORS_1M.column_names).fill_null(float("nan"))


def recompute_indicator_day(ch: ClickHouse, day: date, indicator_set: IndicatorSet) -> int:
    """Recompute one interval's indicators of ``day`` from its candles and the warm-up before it."""
    start, end = _warm_up_start(day, indicator_set), datetime(day.year, day.month, day.day) + timedelta(days=1)
    arrow = ch.query_arrow(
        f"SELECT exchange, symbol, bucket, close FROM {indicator_set.candles.sql_name} "
        f"WHERE bucket >= toDateTime64({quote_string(start.isoformat(sep=' '))}, 6, 'UTC') "
        f"AND bucket < toDateTime64({quote_string(end.isoformat(sep=' '))}, 6, 'UTC')")
    candles = pl.from_arrow(arrow)
    assert isinstance(candles, pl.DataFrame)
    indicators = compute_indicators(candles).filter(pl.col("bucket").dt.date() == day)
    rows = indicators.to_arrow().cast(indicator_set.indicators.arrow_schema)
    return replace_day_rows(ch, indicator_set.indicators, day, rows)


def _warm_up_start(day: date, indicator_set: IndicatorSet) -> datetime:
    """Where the candles a day's indicators are computed from begin (naive UTC, as ClickHouse reads it)."""
    return datetime(day.year, day.month, day.day) - indicator_set.warm_up


@dataclass(frozen=True)
class SampleCheck:
    exchange: str
    symbol: str
    compared: int  # candles of the day compared
    worst_relative_error: float


def check_sample(ch: ClickHouse, day: date, indicator_set: IndicatorSet) -> SampleCheck | None:
    """Recompute the SMA, Bollinger bands and realized volatility of the day's busiest symbol independently,
    with ClickHouse window functions over the same candles, and compare with the stored values (None: no
    candles that day)."""
    table, candles = indicator_set.indicators.sql_name, indicator_set.candles.sql_name
    day_text = quote_string(day.isoformat())
    busiest = ch.query_arrow(f"SELECT exchange, symbol FROM {candles} WHERE toDate(bucket) = {day_text} "
                             "GROUP BY exchange, symbol ORDER BY count() DESC, exchange, symbol LIMIT 1").to_pylist()
    if not busiest:
        return None
    exchange, symbol = busiest[0]["exchange"], busiest[0]["symbol"]
    start = _warm_up_start(day, indicator_set)
    rows = ch.query_arrow(f"""
        SELECT w.bucket AS bucket, w.sma AS sma, w.upper AS upper, w.volatility AS volatility,
               i.sma_20 AS stored_sma, i.bollinger_upper AS stored_upper,
               i.realized_volatility_60 AS stored_volatility
        FROM (
            SELECT bucket,
                   if(n >= {SMA_WINDOW}, avg(close) OVER last_20, nan) AS sma,
                   if(n >= {SMA_WINDOW}, sma + {BOLLINGER_WIDTH} * stddevPop(close) OVER last_20, nan) AS upper,
                   if(n > {VOLATILITY_WINDOW}, stddevSamp(log_return) OVER last_60, nan) AS volatility
            FROM (
                SELECT bucket, close, row_number() OVER (ORDER BY bucket) AS n,
                       log(close / lagInFrame(close, 1, close) OVER (ORDER BY bucket
                           ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)) AS log_return
                FROM {candles}
                WHERE exchange = {quote_string(exchange)} AND symbol = {quote_string(symbol)}
                  AND bucket >= toDateTime64({quote_string(start.isoformat(sep=' '))}, 6, 'UTC')
                  AND toDate(bucket) <= {day_text}
            )
            WINDOW last_20 AS (ORDER BY bucket ROWS BETWEEN {SMA_WINDOW - 1} PRECEDING AND CURRENT ROW),
                   last_60 AS (ORDER BY bucket ROWS BETWEEN {VOLATILITY_WINDOW - 1} PRECEDING AND CURRENT ROW)
        ) AS w
        INNER JOIN (SELECT * FROM {table} WHERE exchange = {quote_string(exchange)}
                    AND symbol = {quote_string(symbol)}) AS i ON i.bucket = w.bucket
        WHERE toDate(w.bucket) = {day_text}""").to_pylist()
    worst = 0.0
    for row in rows:
        for mine, stored in ((row["sma"], row["stored_sma"]), (row["upper"], row["stored_upper"]),
                             (row["volatility"], row["stored_volatility"])):
            if mine != mine or stored != stored:  # NaN: both must be (a window not full yet)
                worst = worst if (mine != mine) == (stored != stored) else float("inf")
            else:
                worst = max(worst, abs(mine - stored) / max(abs(mine), 1e-12))
    return SampleCheck(exchange, symbol, len(rows), worst)
