"""Rebuilding an exchange-day: the exchange name is data in its statements, never SQL."""

from __future__ import annotations

from trading_platform.ingestion.lake_writer import write_batch
from trading_platform.load.lake_files import lake_days
from trading_platform.load.lake_to_clickhouse import load_new_batches
from trading_platform.load.rebuild import day_fingerprint, rebuild_day
from trading_platform.schema import MARKET_TRADES
from trading_platform.storage.clickhouse import ClickHouse
from trading_platform.storage.object_store import ObjectStore
from trading_platform_tests.load.test_lake_to_clickhouse import trades


def test_an_exchange_name_with_quotes_rebuilds_nothing_else(lake: ObjectStore, warehouse: ClickHouse) -> None:
    write_batch(lake, "binance", "binance-000000000000-000000000009", {MARKET_TRADES: trades(1, 10)})
    load_new_batches(lake, warehouse, MARKET_TRADES, 1)
    day = lake_days(1)[0]
    before = day_fingerprint(warehouse, MARKET_TRADES, "binance", day)
    odd = "x' OR exchange = 'binance"
    result = rebuild_day(lake, warehouse, [MARKET_TRADES], odd, day, attempt_token="odd")
    assert (result.files, result.rows) == (0, {"market_trades": 0})
    assert day_fingerprint(warehouse, MARKET_TRADES, "binance", day) == before == (10, before[1])
