"""Rebuilding an exchange-day from the lake gives identical rows, and repairs a damaged day."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from trading_platform.defs.resources import build_resources
from trading_platform.defs.warehouse.jobs import build_rebuild_job
from trading_platform.ingestion.lake_writer import write_batch
from trading_platform.load.lake_to_clickhouse import load_new_batches
from trading_platform.load.rebuild import day_fingerprint
from trading_platform.schema import MARKET_TRADES
from trading_platform.settings import Settings
from trading_platform.storage.clickhouse import ensure_schema, open_clickhouse
from trading_platform.storage.object_store import LocalObjectStore


def trades(first_id: int, count: int, exchange: str = "binance") -> pa.Table:
    now_us = time.time_ns() // 1000
    utc_us = pa.timestamp("us", tz="UTC")
    return pa.table({
        "exchange": [exchange] * count, "symbol": ["BTC-USDT"] * count, "native_symbol": ["BTCUSDT"] * count,
        "trade_id": [str(first_id + i) for i in range(count)], "price": [100.0 + i for i in range(count)],
        "quantity": [0.5] * count, "side": ["buy"] * count,
        "timestamp": pa.array([now_us - 10_000 + i for i in range(count)]).cast(utc_us),
        "received_at": pa.array([now_us + i for i in range(count)]).cast(utc_us),
    })


@pytest.fixture
def loaded(tmp_path: Path) -> tuple[LocalObjectStore, str]:
    store = LocalObjectStore(tmp_path / "lake")
    write_batch(store, "binance", "binance-000000000000-000000000099", {MARKET_TRADES: trades(1, 100)})
    write_batch(store, "binance", "binance-000000000100-000000000149", {MARKET_TRADES: trades(101, 50)})
    write_batch(store, "coinbase", "coinbase-000000000000-000000000009", {MARKET_TRADES: trades(1, 10, "coinbase")})
    url = f"chdb://{tmp_path / 'chdb'}"
    with open_clickhouse(url) as ch:
        ensure_schema(ch)
        load_new_batches(store, ch, MARKET_TRADES, 1)
    return store, url


def rebuild(store: LocalObjectStore, url: str, exchange: str = "binance") -> dg.ExecuteInProcessResult:
    job = build_rebuild_job(["binance", "coinbase", "kraken"])
    today = datetime.now(UTC).date().isoformat()
    return job.execute_in_process(
        partition_key=dg.MultiPartitionKey({"date": today, "exchange": exchange}),
        resources=build_resources(Settings(storage_url=store.url, clickhouse_url=url)),
    )


def fingerprint(url: str, exchange: str = "binance") -> tuple[int, int]:
    with open_clickhouse(url) as ch:
        return day_fingerprint(ch, MARKET_TRADES, exchange, datetime.now(UTC).date())


def test_rebuilding_a_day_gives_identical_rows_and_checksum(loaded: tuple[LocalObjectStore, str]) -> None:
    store, url = loaded
    before = fingerprint(url)
    assert before[0] == 150
    assert rebuild(store, url).success
    assert fingerprint(url) == before
    assert rebuild(store, url).success  # again: still identical, nothing doubled
    assert fingerprint(url) == before
    from trading_platform_tests.faults.test_fault_injection import record

    record("one-day rebuild of ClickHouse from the lake (twice)", rows_before=before[0], rows_after=fingerprint(url)[0],
           content_hash_identical=fingerprint(url)[1] == before[1])


def test_rebuild_repairs_a_damaged_day_and_leaves_other_exchanges_alone(loaded: tuple[LocalObjectStore, str]) -> None:
    store, url = loaded
    before, other = fingerprint(url), fingerprint(url, "coinbase")
    with open_clickhouse(url) as ch:
        ch.command("DELETE FROM trading.market_trades WHERE exchange = 'binance' AND toUInt64(trade_id) > 120")
    assert fingerprint(url)[0] == 120
    assert rebuild(store, url).success
    assert fingerprint(url) == before
    assert fingerprint(url, "coinbase") == other


def test_regular_loads_after_a_rebuild_do_not_reload_the_day(loaded: tuple[LocalObjectStore, str]) -> None:
    store, url = loaded
    rebuild(store, url)
    with open_clickhouse(url) as ch:
        assert load_new_batches(store, ch, MARKET_TRADES, 1).files == 0
    assert fingerprint(url)[0] == 150
