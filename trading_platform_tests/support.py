"""Helpers shared by integration tests: reading the lake back, waiting for conditions."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trading_platform.config import Endpoints, ExchangeConfig
from trading_platform.replay import ReplayServer
from trading_platform.schema import LOAD_INTENTS, LOAD_MANIFEST, lake_table
from trading_platform.storage.clickhouse import ClickHouse
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


# --- ground truth: what the market executed ----------------------------------------------------------------
EXCHANGES = ("binance", "coinbase", "kraken")


def market_marks(replay: ReplayServer, exchange: str) -> dict[str, int]:
    """The last trade id each symbol's market has executed so far (native symbols)."""
    return {native: doc["last_id"] for native, doc in replay.history(exchange, with_trades=False).items()}


def market_history(replay: ReplayServer, exchange: str) -> pa.Table:
    """Every trade ``exchange``'s market executed, whether or not a client was connected: native_symbol,
    trade_id, price, quantity, side (the aggressor's), timestamp (µs) — as the platform must store them."""
    rows = [(native, *trade) for native, doc in replay.history(exchange).items() for trade in doc["trades"]]
    return pa.table({
        "native_symbol": pa.array([r[0] for r in rows], pa.string()),
        "trade_id": pa.array([str(r[1]) for r in rows], pa.string()),
        "price": pa.array([float(r[2]) for r in rows], pa.float64()),
        "quantity": pa.array([float(r[3]) for r in rows], pa.float64()),
        "side": pa.array([r[4] for r in rows], pa.string()),
        "timestamp": pa.array([r[5] * 1000 for r in rows], pa.int64()),
    })


@dataclass
class Accounting:
    """One exchange's stored trades against the market's history, in a window of ids per symbol."""

    executed: int  # trades the market executed in the window: all must be stored
    stored: int  # rows stored (the window and beyond)
    lost: list[tuple[str, str]]  # executed in the window, not stored
    duplicated: int  # rows beyond one per (symbol, trade id)
    not_executed: list[tuple[str, str]]  # stored, but the market never executed them
    content_mismatch: list[dict[str, object]]  # stored with another price, quantity, side or time

    @property
    def exact(self) -> bool:
        return not (self.lost or self.duplicated or self.not_executed or self.content_mismatch)

    def summary(self) -> dict[str, int]:
        return {"executed": self.executed, "stored": self.stored, "lost": len(self.lost),
                "duplicated": self.duplicated, "not_executed": len(self.not_executed),
                "content_mismatch": len(self.content_mismatch)}


def account(history: pa.Table, stored: pa.Table, window: dict[str, tuple[int, int]]) -> Accounting:
    """Compare stored trades (native_symbol, trade_id, price, quantity, side, timestamp) with the history.

    ``window``: per native symbol, the ids (first, last) the platform must hold: executed after it was up
    and before it was asked to stop. Stored rows outside the window must still be real trades.
    """
    stored = stored.select(["native_symbol", "trade_id", "price", "quantity", "side", "timestamp"])
    stored = stored.set_column(5, "timestamp", pc.cast(stored.column("timestamp"), pa.int64()))
    expected = {(r["native_symbol"], r["trade_id"]): r for r in history.to_pylist()}
    rows = stored.to_pylist()
    keys = [(r["native_symbol"], r["trade_id"]) for r in rows]
    have = set(keys)
    in_window = [key for key in expected
                 if key[0] in window and window[key[0]][0] <= int(key[1]) <= window[key[0]][1]]
    mismatch = [{"stored": r, "executed": expected[k]} for k, r in zip(keys, rows, strict=True)
                if k in expected and r != expected[k]]
    return Accounting(
        executed=len(in_window), stored=len(rows), lost=sorted(k for k in in_window if k not in have),
        duplicated=len(keys) - len(have), not_executed=sorted(k for k in have if k not in expected),
        content_mismatch=mismatch[:20],
    )


class Crash(Exception):
    """The load process dying at this point."""


class DyingLoad:
    """The real ClickHouse for a load that dies after ``data_inserts`` inserts into data tables: the next
    data or manifest insert raises :class:`Crash` instead of being sent. Load intents (the claims made
    before each insert) always go through, so ``data_inserts=0`` dies between a claim and its insert."""

    def __init__(self, ch: ClickHouse, data_inserts: int) -> None:
        self.ch = ch
        self.left = data_inserts

    def __getattr__(self, name: str) -> object:
        return getattr(self.ch, name)

    def insert_arrow(self, table: str, data: pa.Table, dedup_token: str | None = None) -> None:
        if table != LOAD_INTENTS.qualified_name:
            if self.left == 0:
                raise Crash
            if table != LOAD_MANIFEST.qualified_name:
                self.left -= 1
        self.ch.insert_arrow(table, data, dedup_token=dedup_token)
