"""Candles against an independent computation: plain polars over the lake's trades, on the replay market's
trades across minute, hour and day boundaries, with late and out-of-order batches and a rebuilt day."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from trading_platform.analytics.candles import recompute_day
from trading_platform.ingestion.lake_writer import batch_id_for, write_batch
from trading_platform.load.lake_to_clickhouse import load_new_batches
from trading_platform.load.rebuild import rebuild_day
from trading_platform.replay.market import Trade
from trading_platform.schema import CANDLE_TABLES, MARKET_TRADES, Table
from trading_platform.storage.clickhouse import ClickHouse
from trading_platform.storage.object_store import ObjectStore, open_object_store
from trading_platform_tests.analytics.replay_trades import (
    as_table,
    market_trades_schema,
    polars_candles,
    simulated_trades,
    trade_row,
)
from trading_platform_tests.support import read_dataset

BATCH_ROWS = 2_500
SYMBOLS = ["BTC-USDT", "ETH-USDT", "SOL-USDT"]
EXCHANGE = "binance"
POLARS_EVERY = {"candles_1m": "1m", "candles_5m": "5m", "candles_1h": "1h", "candles_1d": "1d"}
# The load looks back from today: the market trades the day before yesterday into yesterday.
DAY0 = datetime.now(UTC).date() - timedelta(days=2)
DAY1 = DAY0 + timedelta(days=1)


def _at(day: date, hh: int, mm: int) -> int:
    return int(datetime(day.year, day.month, day.day, hh, mm, tzinfo=UTC).timestamp() * 1000)


def market_trades() -> pa.Table:
    """What the replay market executes around 23:00 (an hour boundary) and midnight (a day boundary)."""
    # Ids restart with each simulated window: offset each window's by its start so every id is unique.
    return as_table([row for start_ms, end_ms in ((_at(DAY0, 22, 57), _at(DAY0, 23, 3)),
                                                  (_at(DAY0, 23, 56), _at(DAY1, 0, 4)))
                     for row in simulated_trades(EXCHANGE, SYMBOLS, 4.0, 7, start_ms, end_ms, 250, start_ms)])


def clickhouse_candles(ch: ClickHouse, table: Table) -> pl.DataFrame:
    frame = pl.from_arrow(ch.query_arrow(f"SELECT * FROM {table.sql_name} ORDER BY exchange, symbol, bucket"))
    assert isinstance(frame, pl.DataFrame)
    return frame


def assert_same_candles(ours: pl.DataFrame, expected: pl.DataFrame) -> None:
    assert ours.height == expected.height and ours.height > 0
    for column in ("exchange", "symbol", "bucket", "open", "high", "low", "close"):
        assert ours[column].to_list() == expected[column].to_list(), column
    assert ours["trade_count"].cast(pl.Int64).to_list() == expected["trade_count"].cast(pl.Int64).to_list()
    for column in ("volume", "vwap", "buy_volume", "sell_volume"):  # sums: the order of additions differs
        assert ours[column].to_list() == pytest.approx(expected[column].to_list(), rel=1e-9, abs=1e-12), column


@pytest.fixture(scope="module")
def executed() -> pa.Table:
    return market_trades()


@pytest.fixture
def lake(tmp_path: Path) -> ObjectStore:
    return open_object_store((tmp_path / "lake").as_uri())


def load_and_recompute(lake: ObjectStore, ch: ClickHouse) -> None:
    load_new_batches(lake, ch, MARKET_TRADES, 3)
    for day in (DAY0, DAY1):
        recompute_day(ch, day)


@pytest.fixture
def loaded(executed: pa.Table, lake: ObjectStore, chdb_warehouse: ClickHouse) -> ClickHouse:
    """The market's trades in batches of shuffled rows, a tenth of them held back and loaded last (late)."""
    trades = executed
    rng = random.Random(3)
    late = sorted(rng.sample(range(trades.num_rows), trades.num_rows // 10))
    on_time = sorted(set(range(trades.num_rows)) - set(late))
    for n, first in enumerate(range(0, len(on_time), BATCH_ROWS)):
        rows = on_time[first:first + BATCH_ROWS]
        rng.shuffle(rows)  # out of order within a batch
        batch_id = batch_id_for(EXCHANGE, n * 1000, n * 1000 + 999)
        write_batch(lake, EXCHANGE, batch_id, {MARKET_TRADES: trades.take(rows)})
        load_and_recompute(lake, chdb_warehouse)
    write_batch(lake, EXCHANGE, batch_id_for(EXCHANGE, 900_000, 900_999), {MARKET_TRADES: trades.take(late)})
    load_and_recompute(lake, chdb_warehouse)
    return chdb_warehouse


def test_every_interval_equals_polars_over_the_lakes_trades(loaded: ClickHouse, lake: ObjectStore) -> None:
    trades = pl.from_arrow(read_dataset(lake, "trades"))
    assert isinstance(trades, pl.DataFrame)
    hours = trades["timestamp"].dt.truncate("1h").unique().sort().to_list()
    assert [(h.date(), h.hour) for h in hours] == [(DAY0, 22), (DAY0, 23), (DAY1, 0)]  # the boundaries crossed
    for table in CANDLE_TABLES:
        assert_same_candles(clickhouse_candles(loaded, table), polars_candles(trades, POLARS_EVERY[table.name]))


def test_a_rebuilt_and_recomputed_day_gives_the_same_candles(loaded: ClickHouse, lake: ObjectStore) -> None:
    before = {t.name: clickhouse_candles(loaded, t) for t in CANDLE_TABLES}
    rebuild_day(lake, loaded, [MARKET_TRADES], EXCHANGE, DAY1, attempt_token="rebuild-1")
    load_and_recompute(lake, loaded)  # the load after a rebuild, and the candles again, twice over
    load_and_recompute(lake, loaded)
    for table in CANDLE_TABLES:
        assert clickhouse_candles(loaded, table).equals(before[table.name]), table.name


def test_a_day_whose_trades_are_gone_has_no_candles(loaded: ClickHouse) -> None:
    loaded.command(f"ALTER TABLE {MARKET_TRADES.sql_name} DELETE WHERE toDate(timestamp) = '{DAY1}' "
                   "SETTINGS mutations_sync = 2")
    assert recompute_day(loaded, DAY1) == {t.name: 0 for t in CANDLE_TABLES}
    for table in CANDLE_TABLES:
        assert {row["bucket"].date() for row in clickhouse_candles(loaded, table).to_dicts()} == {DAY0}


def test_trades_at_the_same_time_open_and_close_in_trade_id_order(lake: ObjectStore,
                                                                  chdb_warehouse: ClickHouse) -> None:
    """A sweep's fills share a time; ids "9" and "10" are in that order although "10" < "9" as text."""
    at = datetime(DAY0.year, DAY0.month, DAY0.day, 12, 0, 30, tzinfo=UTC)
    rows = [trade_row(EXCHANGE, "BTC-USDT", Trade(10, 101.0, 1.0, 0, False)),
            trade_row(EXCHANGE, "BTC-USDT", Trade(9, 100.0, 1.0, 0, False))]
    table = pa.Table.from_pylist([{**row, "timestamp": at, "received_at": at} for row in rows],
                                 schema=market_trades_schema())
    write_batch(lake, EXCHANGE, batch_id_for(EXCHANGE, 0, 1), {MARKET_TRADES: table})
    load_and_recompute(lake, chdb_warehouse)
    [candle] = clickhouse_candles(chdb_warehouse, CANDLE_TABLES[0]).to_dicts()
    assert (candle["open"], candle["close"]) == (100.0, 101.0)
