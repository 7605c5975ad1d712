"""Helpers shared by integration tests: reading the lake back, waiting for conditions."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from trading_platform.config import Endpoints, ExchangeConfig
from trading_platform.schema import lake_table
from trading_platform.storage.object_store import ObjectStore

T = TypeVar("T")


def read_dataset(store: ObjectStore, dataset: str) -> pa.Table:
    table = lake_table(dataset)
    keys = [k for k in store.list_keys(table.lake_prefix()) if k.endswith(".parquet")]
    if not keys:
        return table.arrow_schema.empty_table()
    return pa.concat_tables(pq.read_table(io.BytesIO(store.get(k))) for k in keys)


def lake_trade_ids(store: ObjectStore) -> list[tuple[str, str]]:
    """(native symbol, trade id) of every trade row in the lake, duplicates kept."""
    table = read_dataset(store, "trades")
    return list(zip(table.column("native_symbol").to_pylist(), table.column("trade_id").to_pylist(), strict=True))


def wait_for(condition: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.2) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def local_lake(path: Path) -> ObjectStore:
    from trading_platform.storage.object_store import LocalObjectStore

    return LocalObjectStore(path)


def replay_endpoints(config: ExchangeConfig, host: str, port: int) -> Endpoints:
    """The exchange's replay endpoints (WebSocket and REST) on a test's replay server: never the internet."""
    from trading_platform.settings import Settings

    return config.endpoints(Settings(feed_mode="replay", replay_host=host, replay_port=port))
