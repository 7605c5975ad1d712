"""Lake -> ClickHouse loads, on both ClickHouse backends and both object stores: exactly once."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest

from trading_platform.ingestion.lake_writer import write_batch
from trading_platform.load.lake_files import lake_days, list_lake_keys
from trading_platform.load.lake_to_clickhouse import load_new_batches
from trading_platform.schema import MARKET_TRADES
from trading_platform.storage.clickhouse import ClickHouse
from trading_platform.storage.object_store import ObjectStore
from trading_platform_tests.support import Crash, DyingLoad


def trades(first_id: int, count: int, symbols: tuple[str, ...] = ("BTC-USDT", "ETH-USDT")) -> pa.Table:
    now_us = time.time_ns() // 1000
    utc_us = pa.timestamp("us", tz="UTC")
    picked = [symbols[i % len(symbols)] for i in range(count)]
    return pa.table({
        "exchange": ["binance"] * count, "symbol": picked, "native_symbol": [s.replace("-", "") for s in picked],
        "trade_id": [str(first_id + i) for i in range(count)], "price": [100.0 + i for i in range(count)],
        "quantity": [0.5] * count, "side": ["buy"] * count,
        "timestamp": pa.array([now_us - 1000 + i for i in range(count)]).cast(utc_us),
        "received_at": pa.array([now_us + i for i in range(count)]).cast(utc_us),
    })


def count(ch: ClickHouse) -> int:
    return int(ch.query_arrow("SELECT count() AS n FROM trading.market_trades").column("n")[0].as_py())


def test_each_batch_loads_once_however_often_the_load_runs(lake: ObjectStore, warehouse: ClickHouse) -> None:
    write_batch(lake, "binance", "binance-000000000000-000000000099", {MARKET_TRADES: trades(1, 100)})
    first = load_new_batches(lake, warehouse, MARKET_TRADES, 2)
    assert (first.files, first.rows) == (2, 100)
    write_batch(lake, "binance", "binance-000000000100-000000000149", {MARKET_TRADES: trades(101, 50)})
    second = load_new_batches(lake, warehouse, MARKET_TRADES, 2)
    again = load_new_batches(lake, warehouse, MARKET_TRADES, 2)
    assert (second.files, second.rows, again.files) == (2, 50, 0)
    assert count(warehouse) == 150


def test_a_load_that_died_after_inserting_does_not_duplicate(lake: ObjectStore, warehouse: ClickHouse) -> None:
    write_batch(lake, "binance", "binance-000000000000-000000000009", {MARKET_TRADES: trades(1, 10)})
    with pytest.raises(Crash):
        load_new_batches(lake, DyingLoad(warehouse, data_inserts=1), MARKET_TRADES, 1)  # type: ignore[arg-type]
    assert count(warehouse) == 10  # the rows went in, the manifest never heard of them
    write_batch(lake, "binance", "binance-000000000010-000000000019", {MARKET_TRADES: trades(11, 10)})
    result = load_new_batches(lake, warehouse, MARKET_TRADES, 1)
    assert result.files == 4  # the manifest did not know the first batch, so it was sent again...
    assert count(warehouse) == 20  # ...and ClickHouse dropped it by its dedup token


def test_a_batch_loads_as_one_insert(lake: ObjectStore, warehouse: ClickHouse) -> None:
    write_batch(lake, "binance", "binance-000000000000-000000000029",
                {MARKET_TRADES: trades(1, 30, ("BTC-USDT", "ETH-USDT", "SOL-USDT"))})
    result = load_new_batches(lake, warehouse, MARKET_TRADES, 1)
    assert (result.files, result.inserts, count(warehouse)) == (3, 1, 30)


def test_a_batch_seen_half_written_waits_until_it_is_whole(lake: ObjectStore, warehouse: ClickHouse) -> None:
    batch = "binance-000000000000-000000000019"
    write_batch(lake, "binance", batch, {MARKET_TRADES: trades(1, 20)})
    key = list_lake_keys(lake, MARKET_TRADES, lake_days(1))[1]
    data = lake.get(key)
    lake.delete(key)  # as a load listing the lake between the flush's two puts sees it
    waiting = load_new_batches(lake, warehouse, MARKET_TRADES, 1)
    assert (waiting.files, waiting.incomplete, count(warehouse)) == (0, {batch: "1/2"}, 0)
    lake.put(key, data)
    whole = load_new_batches(lake, warehouse, MARKET_TRADES, 1)
    assert (whole.files, whole.incomplete, count(warehouse)) == (2, {}, 20)


def test_a_rewritten_batch_overwrites_its_lake_files(lake: ObjectStore, warehouse: ClickHouse) -> None:
    batch = "binance-000000000000-000000000019"
    write_batch(lake, "binance", batch, {MARKET_TRADES: trades(1, 20)})
    write_batch(lake, "binance", batch, {MARKET_TRADES: trades(1, 20)})  # WAL recovery re-flush
    assert len(list_lake_keys(lake, MARKET_TRADES, lake_days(1))) == 2
    load_new_batches(lake, warehouse, MARKET_TRADES, 1)
    assert count(warehouse) == 20


def test_loaded_rows_keep_every_column(lake: ObjectStore, warehouse: ClickHouse) -> None:
    written = trades(7, 3, ("SOL-USDT",))
    write_batch(lake, "binance", "binance-000000000000-000000000002", {MARKET_TRADES: written})
    load_new_batches(lake, warehouse, MARKET_TRADES, 1)
    stored = warehouse.query_arrow(
        "SELECT exchange, symbol, native_symbol, trade_id, price, quantity, side, timestamp, received_at "
        "FROM trading.market_trades ORDER BY trade_id")
    assert stored.to_pylist() == written.to_pylist()
