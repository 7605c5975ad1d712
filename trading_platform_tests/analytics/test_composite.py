"""Composite price against an independent computation (polars over the lake's trades), with the quote
groups of the configuration: USD and USDC priced together, USDT on its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from trading_platform.analytics.candles import recompute_day
from trading_platform.analytics.composite import recompute_composite_day
from trading_platform.config import ExchangesFile
from trading_platform.ingestion.lake_writer import batch_id_for, write_batch
from trading_platform.load.lake_to_clickhouse import load_new_batches
from trading_platform.schema import COMPOSITE_1M, MARKET_TRADES
from trading_platform.storage.clickhouse import ClickHouse
from trading_platform.storage.object_store import ObjectStore, open_object_store
from trading_platform_tests.analytics.replay_trades import as_table, simulated_trades
from trading_platform_tests.support import read_dataset

DAY = datetime.now(UTC).date() - timedelta(days=1)
PAIRS = {"binance": ["BTC-USDT", "ETH-USDT"], "coinbase": ["BTC-USD", "BTC-USDC", "ETH-USD"],
         "kraken": ["BTC-USD", "ETH-USD"]}


def executed_trades(exchange: str, symbols: list[str]) -> pa.Table:
    start_ms = int(datetime(DAY.year, DAY.month, DAY.day, 9, 58, tzinfo=UTC).timestamp() * 1000)
    return as_table(simulated_trades(exchange, symbols, 3.0, len(exchange), start_ms, start_ms + 4 * 60_000, 500))


def polars_composite(trades: pl.DataFrame, groups: dict[str, list[str]]) -> pl.DataFrame:
    member_of = {quote: group for group, quotes in groups.items() for quote in quotes}
    parts = pl.col("symbol").str.split("-")
    return (
        trades.with_columns(parts.list.get(0).alias("base"),
                            parts.list.get(1).replace(member_of).alias("quote"),
                            pl.col("timestamp").dt.truncate("1m").alias("bucket"),
                            (pl.col("exchange") + ":" + pl.col("symbol")).alias("source"))
        .group_by("base", "quote", "bucket")
        .agg(((pl.col("price") * pl.col("quantity")).sum() / pl.col("quantity").sum()).alias("price"),
             pl.col("quantity").sum().alias("volume"), pl.len().alias("trade_count"),
             pl.col("source").unique().sort().alias("sources"))
        .sort("base", "quote", "bucket")
    )


@pytest.fixture
def lake(tmp_path: Path) -> ObjectStore:
    store = open_object_store((tmp_path / "lake").as_uri())
    for n, (exchange, symbols) in enumerate(PAIRS.items()):
        write_batch(store, exchange, batch_id_for(exchange, n, n), {MARKET_TRADES: executed_trades(exchange, symbols)})
    return store


@pytest.fixture
def candles(chdb_warehouse: ClickHouse, lake: ObjectStore) -> ClickHouse:
    load_new_batches(lake, chdb_warehouse, MARKET_TRADES, 2)
    recompute_day(chdb_warehouse, DAY)
    return chdb_warehouse


@pytest.mark.parametrize("groups", [{"USD": ["USD", "USDC"]}, {}], ids=["usd_with_usdc", "no_groups"])
def test_composite_equals_polars_over_the_lakes_trades(candles: ClickHouse, lake: ObjectStore,
                                                       groups: dict[str, list[str]]) -> None:
    config = ExchangesFile(exchanges={}, composite_quotes=groups)
    recompute_composite_day(candles, DAY, config)
    ours = pl.from_arrow(candles.query_arrow(f"SELECT * FROM {COMPOSITE_1M.sql_name} ORDER BY base, quote, bucket"))
    trades = pl.from_arrow(read_dataset(lake, "trades"))
    assert isinstance(ours, pl.DataFrame) and isinstance(trades, pl.DataFrame)
    expected = polars_composite(trades, groups)
    assert ours.height == expected.height > 0
    for column in ("base", "quote", "bucket", "sources"):
        assert ours[column].to_list() == expected[column].to_list(), column
    assert ours["trade_count"].cast(pl.Int64).to_list() == expected["trade_count"].cast(pl.Int64).to_list()
    for column in ("price", "volume"):
        assert ours[column].to_list() == pytest.approx(expected[column].to_list(), rel=1e-9), column


def test_usdt_is_never_mixed_with_usd_unless_configured(candles: ClickHouse) -> None:
    recompute_composite_day(candles, DAY, ExchangesFile(exchanges={}, composite_quotes={"USD": ["USD", "USDC"]}))
    quotes = candles.query_arrow(f"SELECT DISTINCT base, quote FROM {COMPOSITE_1M.sql_name} ORDER BY base, quote")
    assert quotes.to_pylist() == [{"base": "BTC", "quote": "USD"}, {"base": "BTC", "quote": "USDT"},
                                  {"base": "ETH", "quote": "USD"}, {"base": "ETH", "quote": "USDT"}]
