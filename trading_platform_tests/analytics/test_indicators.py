"""Indicators against an independent computation: candles by polars over the lake's trades, then each
indicator by its textbook definition in plain Python, across a day boundary (the day after midnight is
computed with the evening before as its warm-up)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from trading_platform.analytics.candles import recompute_day
from trading_platform.analytics.indicators import INDICATOR_SETS, IndicatorSet, check_sample, recompute_indicator_day
from trading_platform.ingestion.lake_writer import batch_id_for, write_batch
from trading_platform.load.lake_to_clickhouse import load_new_batches
from trading_platform.schema import MARKET_TRADES, Table
from trading_platform.storage.clickhouse import ClickHouse
from trading_platform.storage.object_store import ObjectStore, open_object_store
from trading_platform_tests.analytics.replay_trades import as_table, polars_candles, simulated_trades
from trading_platform_tests.support import read_dataset

DAY1 = datetime.now(UTC).date() - timedelta(days=1)
DAY0 = DAY1 - timedelta(days=1)
SYMBOLS = ["BTC-USDT", "ETH-USDT"]


def evening_and_night() -> pa.Table:
    """The replay market's trades from 22:00 to 01:00 across midnight."""
    start_ms = int(datetime(DAY0.year, DAY0.month, DAY0.day, 22, 0, tzinfo=UTC).timestamp() * 1000)
    return as_table(simulated_trades("binance", SYMBOLS, 0.3, 11, start_ms, start_ms + 3 * 3_600_000, 1000))


def textbook(closes: list[float]) -> list[dict[str, float]]:
    """Every indicator of one symbol's candles, each by its definition, in plain Python."""
    nan = float("nan")
    out: list[dict[str, float]] = []
    ema = avg_gain = avg_loss = nan
    changes = 0
    returns: list[float] = []
    for t, close in enumerate(closes):
        window = closes[max(0, t - 19):t + 1]
        sma = sum(window) / 20 if len(window) == 20 else nan
        std = math.sqrt(sum((c - sma) ** 2 for c in window) / 20) if len(window) == 20 else nan
        ema = close if t == 0 else 2 / 21 * close + (1 - 2 / 21) * ema
        rsi = nan
        if t > 0:
            change = close - closes[t - 1]
            gain, loss = max(change, 0.0), max(-change, 0.0)
            changes += 1
            avg_gain = gain if changes == 1 else gain / 14 + (1 - 1 / 14) * avg_gain
            avg_loss = loss if changes == 1 else loss / 14 + (1 - 1 / 14) * avg_loss
            if changes >= 14:
                rsi = (100.0 if avg_gain > 0 else nan) if avg_loss == 0 else 100 - 100 / (1 + avg_gain / avg_loss)
            returns.append(math.log(close / closes[t - 1]))
        last = returns[-60:]
        if len(last) == 60:
            mean = sum(last) / 60
            volatility = math.sqrt(sum((r - mean) ** 2 for r in last) / 59)
        else:
            volatility = nan
        out.append({"close": close, "sma_20": sma, "ema_20": ema, "rsi_14": rsi, "bollinger_upper": sma + 2 * std,
                    "bollinger_lower": sma - 2 * std, "realized_volatility_60": volatility})
    return out


@pytest.fixture
def lake(tmp_path: Path) -> ObjectStore:
    store = open_object_store((tmp_path / "lake").as_uri())
    write_batch(store, "binance", batch_id_for("binance", 0, 0), {MARKET_TRADES: evening_and_night()})
    return store


@pytest.fixture
def warehouse(chdb_warehouse: ClickHouse, lake: ObjectStore) -> ClickHouse:
    ch = chdb_warehouse
    load_new_batches(lake, ch, MARKET_TRADES, 3)
    for day in (DAY0, DAY1):
        recompute_day(ch, day)
        for indicator_set in INDICATOR_SETS:
            recompute_indicator_day(ch, day, indicator_set)
    return ch


@pytest.mark.parametrize("indicators", [s.indicators for s in INDICATOR_SETS], ids=lambda t: t.name)
def test_indicators_equal_their_textbook_definitions(warehouse: ClickHouse, lake: ObjectStore,
                                                     indicators: Table) -> None:
    trades = pl.from_arrow(read_dataset(lake, "trades"))
    assert isinstance(trades, pl.DataFrame)
    candles = polars_candles(trades, indicators.name.removeprefix("indicators_"))
    stored = pl.from_arrow(warehouse.query_arrow(f"SELECT * FROM {indicators.sql_name} ORDER BY symbol, bucket"))
    assert isinstance(stored, pl.DataFrame)
    assert stored["bucket"].dt.date().unique().sort().to_list() == [DAY0, DAY1]  # both sides of midnight
    for symbol in SYMBOLS:
        mine = candles.filter(pl.col("symbol") == symbol)
        expected = textbook(mine["close"].to_list())
        ours = stored.filter(pl.col("symbol") == symbol)
        assert ours["bucket"].to_list() == mine["bucket"].to_list()
        for column in expected[0]:
            want = [row[column] for row in expected]
            got = ours[column].to_list()
            assert [math.isnan(v) for v in got] == [math.isnan(v) for v in want], (symbol, column)
            assert [v for v in got if not math.isnan(v)] == pytest.approx(
                [v for v in want if not math.isnan(v)], rel=1e-9), (symbol, column)


def test_three_hours_of_minutes_fill_every_window(warehouse: ClickHouse) -> None:
    """So that the comparison above compares numbers, not only NaN (1 hour has three candles here)."""
    stored = pl.from_arrow(warehouse.query_arrow("SELECT * FROM trading.indicators_1m"))
    assert isinstance(stored, pl.DataFrame)
    for column in ("sma_20", "ema_20", "rsi_14", "bollinger_upper", "realized_volatility_60"):
        assert (~stored[column].is_nan()).sum() > 100, column


@pytest.mark.parametrize("indicator_set", INDICATOR_SETS, ids=lambda s: s.indicators.name)
def test_the_sample_check_agrees_with_the_stored_indicators(warehouse: ClickHouse, indicator_set: IndicatorSet) -> None:
    sample = check_sample(warehouse, DAY1, indicator_set)
    assert sample is not None and sample.compared > 0
    assert sample.worst_relative_error < 1e-9


def test_the_sample_check_sees_a_wrong_value(warehouse: ClickHouse) -> None:
    warehouse.command("ALTER TABLE trading.indicators_1m UPDATE sma_20 = sma_20 * 1.001 WHERE 1 "
                      "SETTINGS mutations_sync = 2")
    sample = check_sample(warehouse, DAY1, INDICATOR_SETS[0])
    assert sample is not None and sample.worst_relative_error > 1e-4
