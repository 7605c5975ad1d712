"""Lake -> ClickHouse loads, on both ClickHouse backends and both object stores: exactly once."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pytest

from trading_platform.ingestion.lake_writer import write_batch
from trading_platform.schema import MARKET_TRADES
from trading_platform.storage.clickhouse import ClickHouse, ensure_schema, open_clickhouse
from trading_platform.storage.lake_loader import lake_days, list_lake_keys, load_new_batches, read_parquet
from trading_platform.storage.object_store import ObjectStore, open_object_store


@pytest.fixture(params=["file", "s3"])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "file":
        return open_object_store((tmp_path / "lake").as_uri())
    return open_object_store(f"s3://{request.getfixturevalue('s3_bucket')}/lake",
                             request.getfixturevalue("s3_endpoint"))


@pytest.fixture
def warehouse(clickhouse_url: str) -> ClickHouse:
    ch = open_clickhouse(clickhouse_url)
    ensure_schema(ch)
    yield ch
    ch.close()


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
    key = list_lake_keys(lake, MARKET_TRADES, lake_days(1))[0]
    rows, _ = read_parquet(lake, key, MARKET_TRADES)
    warehouse.insert_arrow(MARKET_TRADES.qualified_name, rows, dedup_token=key)  # no manifest row: "crashed"
    result = load_new_batches(lake, warehouse, MARKET_TRADES, 1)
    assert result.files == 2  # the manifest did not know the first file, so it was sent again...
    assert count(warehouse) == 10  # ...and ClickHouse dropped it by its dedup token


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
