"""Lake -> ClickHouse loads, on both ClickHouse backends and both object stores: exactly once."""

from __future__ import annotations

import io
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trading_platform.ingestion.lake_writer import write_batch
from trading_platform.load.lake_files import lake_days, list_lake_keys
from trading_platform.load.lake_to_clickhouse import load_new_batches
from trading_platform.schema import LOAD_INTENTS, MARKET_TRADES
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


def batch(first_id: int, count: int) -> str:
    return f"binance-{first_id:012d}-{first_id + count - 1:012d}"


def write_trades(lake: ObjectStore, first_id: int, count: int, rows: pa.Table | None = None) -> str:
    """Write one batch of ``count`` trades (two symbols: two files) and return its id."""
    batch_id = batch(first_id, count)
    write_batch(lake, "binance", batch_id, {MARKET_TRADES: trades(first_id, count) if rows is None else rows})
    return batch_id


def stored_ids(ch: ClickHouse) -> list[int]:
    ids = ch.query_arrow("SELECT trade_id FROM trading.market_trades").column("trade_id").to_pylist()
    return sorted(int(i) for i in ids)


def test_many_batches_load_as_one_insert(lake: ObjectStore, warehouse: ClickHouse) -> None:
    for first in (1, 11, 21):
        write_trades(lake, first, 10)
    result = load_new_batches(lake, warehouse, MARKET_TRADES, 1)
    assert (result.files, result.rows, result.inserts) == (6, 30, 1)
    assert stored_ids(warehouse) == list(range(1, 31))


def test_a_batch_breaking_a_row_rule_is_held_back_alone(lake: ObjectStore, warehouse: ClickHouse) -> None:
    write_trades(lake, 1, 10)
    bad = trades(11, 10)
    bad = bad.set_column(bad.schema.get_field_index("price"), "price", pa.array([-1.0] * 10))
    write_trades(lake, 11, 10, bad)
    write_trades(lake, 21, 10)
    result = load_new_batches(lake, warehouse, MARKET_TRADES, 1)
    held = {key.rsplit("/", 1)[1] for key in result.held_back}
    assert held == {f"{batch(11, 10)}.parquet"}
    assert all("positive_price" in why for why in result.held_back.values())
    assert (result.files, result.inserts, stored_ids(warehouse)) == (4, 1, [*range(1, 11), *range(21, 31)])


def test_a_trade_id_repeated_in_two_batches_holds_neither_back(lake: ObjectStore, warehouse: ClickHouse) -> None:
    # The row rules judge each batch on its own: uniqueness across batches is the warehouse check's job.
    write_trades(lake, 1, 10)
    write_batch(lake, "binance", batch(101, 10), {MARKET_TRADES: trades(1, 10)})
    result = load_new_batches(lake, warehouse, MARKET_TRADES, 1)
    assert (result.files, result.held_back, count(warehouse)) == (4, {}, 20)


def test_a_group_inserted_before_a_crash_is_sent_again_as_claimed(lake: ObjectStore,
                                                                  warehouse: ClickHouse) -> None:
    write_trades(lake, 1, 10)
    write_trades(lake, 11, 10)
    with pytest.raises(Crash):  # inserted, died before the manifest write
        load_new_batches(lake, DyingLoad(warehouse, data_inserts=1), MARKET_TRADES, 1)  # type: ignore[arg-type]
    assert count(warehouse) == 20
    write_trades(lake, 21, 10)  # a new batch: a new group could not repeat the first one's token
    result = load_new_batches(lake, warehouse, MARKET_TRADES, 1)
    assert (result.files, result.inserts) == (6, 2)  # the claimed group again (dropped by its token), the new one
    assert stored_ids(warehouse) == list(range(1, 31))
    assert load_new_batches(lake, warehouse, MARKET_TRADES, 1).files == 0


def test_a_group_claimed_before_a_crash_is_inserted_by_the_next_load(lake: ObjectStore,
                                                                     warehouse: ClickHouse) -> None:
    write_trades(lake, 1, 10)
    with pytest.raises(Crash):  # claimed, died before the insert
        load_new_batches(lake, DyingLoad(warehouse, data_inserts=0), MARKET_TRADES, 1)  # type: ignore[arg-type]
    assert count(warehouse) == 0
    write_trades(lake, 11, 10)
    result = load_new_batches(lake, warehouse, MARKET_TRADES, 1)
    assert (result.files, result.inserts) == (4, 2)
    assert stored_ids(warehouse) == list(range(1, 21))


def test_a_claimed_group_missing_a_file_is_held_back_whole(lake: ObjectStore, warehouse: ClickHouse) -> None:
    write_trades(lake, 1, 10)
    write_trades(lake, 11, 10)
    with pytest.raises(Crash):
        load_new_batches(lake, DyingLoad(warehouse, data_inserts=0), MARKET_TRADES, 1)  # type: ignore[arg-type]
    keys = list_lake_keys(lake, MARKET_TRADES, lake_days(1))
    lake.delete(keys[0])  # the group cannot be sent again as it was claimed
    result = load_new_batches(lake, warehouse, MARKET_TRADES, 1)
    assert (result.files, count(warehouse)) == (0, 0)
    assert set(result.held_back) == set(keys)  # the missing file too: its intent names it
    assert all("load intent 1" in why and "no longer in the lake" in why for why in result.held_back.values())


class CompetingLoad:
    """The real ClickHouse for a load that another load overtakes: just before this load's first claim, a
    new batch lands and a whole other load runs (and claims the same epoch first)."""

    def __init__(self, ch: ClickHouse, lake: ObjectStore) -> None:
        self.ch = ch
        self.lake = lake
        self.overtaken = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.ch, name)

    def insert_arrow(self, table: str, data: pa.Table, dedup_token: str | None = None) -> None:
        if table == LOAD_INTENTS.qualified_name and not self.overtaken:
            self.overtaken = True
            write_trades(self.lake, 11, 10)
            assert load_new_batches(self.lake, self.ch, MARKET_TRADES, 1).files == 4
        self.ch.insert_arrow(table, data, dedup_token=dedup_token)


def test_a_load_overtaken_on_its_claim_leaves_the_other_loads_files(lake: ObjectStore,
                                                                    warehouse: ClickHouse) -> None:
    write_trades(lake, 1, 10)
    competing = CompetingLoad(warehouse, lake)
    result = load_new_batches(lake, competing, MARKET_TRADES, 1)  # type: ignore[arg-type]
    assert competing.overtaken
    assert (result.files, result.inserts) == (0, 0)
    assert stored_ids(warehouse) == list(range(1, 21))


def test_a_file_written_by_another_tool_loads_beside_the_platforms(lake: ObjectStore,
                                                                   warehouse: ClickHouse) -> None:
    # No batch file count, nullable columns in another order: judged on its own, inserted with the others.
    written = trades(1, 5, ("SOL-USDT",)).append_column("batch_id", pa.array(["by-hand"] * 5))
    buffer = io.BytesIO()
    pq.write_table(written.select(list(reversed(written.column_names))), buffer)
    key = MARKET_TRADES.lake_key("by-hand", "binance", lake_days(1)[0], "SOL-USDT")
    lake.put(key, buffer.getvalue())
    write_trades(lake, 11, 10)
    result = load_new_batches(lake, warehouse, MARKET_TRADES, 1)
    assert (result.files, result.inserts, result.held_back) == (3, 1, {})
    stored = warehouse.query_arrow(f"SELECT {', '.join(MARKET_TRADES.column_names)} FROM trading.market_trades "
                                   "WHERE batch_id = 'by-hand' ORDER BY trade_id")
    assert stored.to_pylist() == written.to_pylist()


def test_a_load_that_died_between_groups_is_finished_once(lake: ObjectStore, warehouse: ClickHouse) -> None:
    for first in (1, 11, 21, 31):
        write_trades(lake, first, 10)
    with pytest.raises(Crash):  # one batch per group: two inserted, the second without its manifest rows
        load_new_batches(lake, DyingLoad(warehouse, data_inserts=2), MARKET_TRADES, 1,  # type: ignore[arg-type]
                         group_max_bytes=1)
    assert count(warehouse) == 20
    result = load_new_batches(lake, warehouse, MARKET_TRADES, 1)
    assert (result.files, result.inserts) == (6, 2)  # the second group again, then the last two batches at once
    assert stored_ids(warehouse) == list(range(1, 41))


def test_a_file_with_another_column_type_is_held_back(lake: ObjectStore, warehouse: ClickHouse) -> None:
    # The loader reads the symbol column as a dictionary: a file that stores one is still not our layout.
    written = trades(1, 5, ("SOL-USDT",)).append_column("batch_id", pa.array(["by-hand"] * 5))
    written = written.set_column(1, "symbol", written.column("symbol").dictionary_encode())
    buffer = io.BytesIO()
    pq.write_table(written, buffer)
    key = MARKET_TRADES.lake_key("by-hand", "binance", lake_days(1)[0], "SOL-USDT")
    lake.put(key, buffer.getvalue())
    result = load_new_batches(lake, warehouse, MARKET_TRADES, 1)
    assert (result.files, count(warehouse)) == (0, 0)
    assert "column symbol is dictionary" in result.held_back[key]
