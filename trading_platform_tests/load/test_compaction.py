"""Compaction of a closed day: thousands of small files become one per partition, readers never see a day
with missing or doubled rows, ClickHouse is untouched and the loads stay exactly once."""

from __future__ import annotations

import io
import shutil
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trading_platform.ingestion.lake_writer import batch_id_for, write_batch
from trading_platform.load.compaction import compact_day
from trading_platform.load.lake_files import list_lake_keys
from trading_platform.load.lake_to_clickhouse import load_new_batches
from trading_platform.quality.reconciliation import reconcile_table
from trading_platform.schema import MARKET_TRADES, ORDERBOOK_SNAPSHOTS
from trading_platform.storage.clickhouse import ClickHouse
from trading_platform.storage.object_store import LocalObjectStore, ObjectStore
from trading_platform_tests.quality.test_batch_checks import books
from trading_platform_tests.support import Crash

# Thousands of lake files per scenario (~1.5 min): make test runs it, make test-fast does not.
pytestmark = pytest.mark.slow

DAY = datetime.now(UTC).date() - timedelta(days=1)
SYMBOLS = ("BTC-USDT", "ETH-USDT")


def small_batch(n: int, rows: int = 3) -> pa.Table:
    at = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC) + timedelta(seconds=10 * n)
    picked = [SYMBOLS[i % 2] for i in range(rows)]
    return pa.table({
        "exchange": ["binance"] * rows, "symbol": picked, "native_symbol": [s.replace("-", "") for s in picked],
        "trade_id": [str(n * rows + i) for i in range(rows)], "price": [100.0 + n % 7 + i for i in range(rows)],
        "quantity": [0.5] * rows, "side": ["buy", "sell", "buy"][:rows],
        "timestamp": pa.array([at + timedelta(milliseconds=i) for i in range(rows)], pa.timestamp("us", tz="UTC")),
        "received_at": pa.array([at + timedelta(seconds=1)] * rows, pa.timestamp("us", tz="UTC")),
    })


def write_batches(lake: ObjectStore, first: int, count: int) -> None:
    for n in range(first, first + count):
        write_batch(lake, "binance", batch_id_for("binance", n, n), {MARKET_TRADES: small_batch(n)})


def lake_rows(lake: ObjectStore) -> list[dict[str, object]]:
    """What a reader of the lake gets for the day, in a stable order."""
    tables = [pq.read_table(io.BytesIO(lake.get(k))) for k in list_lake_keys(lake, MARKET_TRADES, [DAY])]
    return sorted(pa.concat_tables(tables).to_pylist(), key=lambda r: (r["symbol"], int(str(r["trade_id"]))))


def clickhouse_state(ch: ClickHouse) -> list[dict[str, object]]:
    return ch.query_arrow("SELECT count() AS n, sum(cityHash64(symbol, trade_id, price, timestamp)) AS h "
                          "FROM trading.market_trades").to_pylist()


FLUSHES = 1_000  # 2,000 small files over two symbol partitions


@pytest.fixture(scope="module")
def day_of_flushes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A day of small files written once; each test gets a copy."""
    root = tmp_path_factory.mktemp("day") / "lake"
    write_batches(LocalObjectStore(root), 0, FLUSHES)
    return root


@pytest.fixture
def lake(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "lake")


@pytest.fixture
def loaded_day(day_of_flushes: Path, tmp_path: Path, chdb_warehouse: ClickHouse) -> LocalObjectStore:
    """The day's 2,000 small files, all loaded."""
    shutil.copytree(day_of_flushes, tmp_path / "day")
    lake = LocalObjectStore(tmp_path / "day")
    assert load_new_batches(lake, chdb_warehouse, MARKET_TRADES, 2).files == 2 * FLUSHES
    return lake


def test_thousands_of_small_files_become_one_per_partition_with_the_same_rows(loaded_day: LocalObjectStore,
                                                                               chdb_warehouse: ClickHouse) -> None:
    before, in_clickhouse = lake_rows(loaded_day), clickhouse_state(chdb_warehouse)
    result = compact_day(loaded_day, chdb_warehouse, MARKET_TRADES, DAY)
    assert (result.partitions, result.files_replaced, result.rows) == (2, 2 * FLUSHES, 3 * FLUSHES)
    files = [k for k in loaded_day.list_keys("raw/trades/") if k.endswith(".parquet")]
    assert len(files) == 2 and all("/compacted-" in k for k in files)
    assert lake_rows(loaded_day) == before
    assert clickhouse_state(chdb_warehouse) == in_clickhouse
    assert load_new_batches(loaded_day, chdb_warehouse, MARKET_TRADES, 2).files == 0  # nothing loads twice
    reconciliation = reconcile_table(chdb_warehouse, MARKET_TRADES, "timestamp", [DAY], files)
    assert reconciliation.passed and reconciliation.manifest_rows == 3 * FLUSHES


def test_a_reader_during_compaction_never_sees_a_wrong_count(loaded_day: LocalObjectStore,
                                                            chdb_warehouse: ClickHouse) -> None:
    counts: list[int] = []
    done = threading.Event()

    def read_counts() -> None:
        while not done.is_set():
            keys = list_lake_keys(loaded_day, MARKET_TRADES, [DAY])
            try:
                counts.append(sum(pq.read_metadata(io.BytesIO(loaded_day.get(k))).num_rows for k in keys))
            except FileNotFoundError:
                counts.append(-1)  # listed, then deleted before it was read: retried, as readers do
    reader = threading.Thread(target=read_counts)
    reader.start()
    compact_day(loaded_day, chdb_warehouse, MARKET_TRADES, DAY)
    done.set()
    reader.join()
    seen = [c for c in counts if c != -1]
    assert len(seen) > 2 and set(seen) == {3 * FLUSHES}


def test_files_not_loaded_yet_are_left_alone(lake: LocalObjectStore, chdb_warehouse: ClickHouse) -> None:
    write_batches(lake, 0, 10)
    result = compact_day(lake, chdb_warehouse, MARKET_TRADES, DAY)
    assert result.partitions == 0 and len(result.skipped) == 2
    assert all("not loaded into ClickHouse yet" in why for why in result.skipped.values())
    assert len(list_lake_keys(lake, MARKET_TRADES, [DAY])) == 20


class DyingStore:
    """The lake of a compaction that dies at its first delete (after readers were switched)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    def delete(self, key: str) -> None:
        raise Crash


def test_a_compaction_that_died_after_the_switch_is_finished_by_the_next(loaded_day: LocalObjectStore,
                                                                         chdb_warehouse: ClickHouse) -> None:
    before = lake_rows(loaded_day)
    with pytest.raises(Crash):
        compact_day(DyingStore(loaded_day), chdb_warehouse, MARKET_TRADES, DAY)  # type: ignore[arg-type]
    assert lake_rows(loaded_day) == before  # readers already follow the compacted file
    compact_day(loaded_day, chdb_warehouse, MARKET_TRADES, DAY)
    assert len([k for k in loaded_day.list_keys("raw/trades/") if k.endswith(".parquet")]) == 2
    reconciliation = reconcile_table(chdb_warehouse, MARKET_TRADES, "timestamp", [DAY], [])
    assert reconciliation.passed


def test_a_late_batch_is_read_beside_the_compacted_file_and_folded_in_next_time(
        loaded_day: LocalObjectStore, chdb_warehouse: ClickHouse) -> None:
    compact_day(loaded_day, chdb_warehouse, MARKET_TRADES, DAY)
    write_batches(loaded_day, 5_000, 1)
    assert load_new_batches(loaded_day, chdb_warehouse, MARKET_TRADES, 2).files == 2
    assert len(lake_rows(loaded_day)) == 3 * FLUSHES + 3
    result = compact_day(loaded_day, chdb_warehouse, MARKET_TRADES, DAY)
    assert (result.partitions, result.rows) == (2, 3 * FLUSHES + 3)
    assert len(lake_rows(loaded_day)) == 3 * FLUSHES + 3
    assert clickhouse_state(chdb_warehouse)[0]["n"] == 3 * FLUSHES + 3
    assert reconcile_table(chdb_warehouse, MARKET_TRADES, "timestamp", [DAY], []).passed


def test_today_is_untouched_by_a_compaction_of_yesterday(loaded_day: LocalObjectStore,
                                                         chdb_warehouse: ClickHouse) -> None:
    today: date = DAY + timedelta(days=1)
    result = compact_day(loaded_day, chdb_warehouse, MARKET_TRADES, today)
    assert result.partitions == 0


def test_book_snapshots_with_their_level_lists_compact_too(lake: LocalObjectStore, chdb_warehouse: ClickHouse) -> None:
    at = datetime(DAY.year, DAY.month, DAY.day, 12, tzinfo=UTC)
    for n in range(20):
        snapshot = books([[(100.0 - n, 1.0), (99.0 - n, 2.0)]], [[(101.0 + n, 1.5)]]).set_column(
            3, "timestamp", pa.array([at + timedelta(seconds=n)], pa.timestamp("us", tz="UTC")))
        snapshot = snapshot.set_column(4, "received_at", pa.array([at + timedelta(seconds=n)],
                                                                  pa.timestamp("us", tz="UTC")))
        write_batch(lake, "kraken", batch_id_for("kraken", n, n), {ORDERBOOK_SNAPSHOTS: snapshot})
    assert load_new_batches(lake, chdb_warehouse, ORDERBOOK_SNAPSHOTS, 2).files == 20
    before = sorted(r["sequence"] for k in list_lake_keys(lake, ORDERBOOK_SNAPSHOTS, [DAY])
                    for r in pq.read_table(io.BytesIO(lake.get(k))).to_pylist())
    result = compact_day(lake, chdb_warehouse, ORDERBOOK_SNAPSHOTS, DAY)
    assert (result.partitions, result.files_replaced, result.skipped) == (1, 20, {})
    [compacted] = list_lake_keys(lake, ORDERBOOK_SNAPSHOTS, [DAY])
    rows = pq.read_table(io.BytesIO(lake.get(compacted))).to_pylist()
    assert sorted(r["sequence"] for r in rows) == before
    assert [r["bids"][0]["price"] for r in rows] == [100.0 - n for n in range(20)]  # sorted by time
