"""The analytics assets run by Dagster: a backfill of two days in one run, then a rebuilt day and the same
backfill again, give identical tables; its checks pass. Real lake folder and chdb."""

from __future__ import annotations

import math
from pathlib import Path

import dagster as dg
import pytest

from trading_platform.defs.analytics.assets import ANALYTICS_TABLES, analytics_day
from trading_platform.defs.resources import build_resources
from trading_platform.defs.warehouse.assets import warehouse_load
from trading_platform.defs.warehouse.jobs import build_rebuild_job
from trading_platform.ingestion.lake_writer import batch_id_for, write_batch
from trading_platform.schema import MARKET_TRADES
from trading_platform.settings import Settings
from trading_platform.storage.clickhouse import open_clickhouse
from trading_platform.storage.object_store import LocalObjectStore
from trading_platform.storage.redis_cache import PriceCache, connect
from trading_platform_tests.analytics.test_indicators import DAY0, DAY1, evening_and_night
from trading_platform_tests.conftest import CONFIG_FILE

RANGE = {"dagster/asset_partition_range_start": DAY0.isoformat(), "dagster/asset_partition_range_end": DAY1.isoformat()}


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    lake = LocalObjectStore(tmp_path / "lake")
    write_batch(lake, "binance", batch_id_for("binance", 0, 0), {MARKET_TRADES: evening_and_night()})
    return Settings(state_dir=tmp_path / "state", exchanges_file=CONFIG_FILE, storage_url=lake.url,
                    clickhouse_url=f"chdb://{tmp_path}/ch", redis_url=redis_url, load_lookback_days=3)


def backfill(resources: dict[str, dg.ConfigurableResource]) -> dg.ExecuteInProcessResult:
    """Both days in one run, as the UI's backfill of a range does (single-run backfill policy)."""
    return dg.materialize([analytics_day], resources=resources, tags=RANGE)


def tables(settings: Settings) -> dict[str, list[dict[str, object]]]:
    """Every analytics row, NaN spelled out (NaN != NaN would make equal tables compare unequal)."""
    def row(values: dict[str, object]) -> dict[str, object]:
        return {k: "NaN" if isinstance(v, float) and math.isnan(v) else v for k, v in values.items()}
    with open_clickhouse(settings.clickhouse_url) as ch:
        return {t.name: [row(r) for r in ch.query_arrow(f"SELECT * FROM {t.sql_name} ORDER BY ALL").to_pylist()]
                for t in ANALYTICS_TABLES}


@pytest.mark.slow  # two days of Dagster materializations: ~7 s: make test runs it, make test-fast does not
def test_a_two_day_backfill_and_a_rebuilt_day_give_identical_tables(settings: Settings) -> None:
    resources = build_resources(settings)
    assert dg.materialize([warehouse_load], selection=["market_trades"], resources=resources).success
    first = backfill(resources)
    assert first.success
    assert all(e.passed for e in first.get_asset_check_evaluations())
    materialized = {(e.materialization.asset_key.to_user_string(), e.materialization.partition)
                    for e in first.get_asset_materialization_events()}
    assert {("candles_1m", DAY0.isoformat()), ("candles_1m", DAY1.isoformat())} <= materialized
    before = tables(settings)
    assert all(before[t.name] for t in ANALYTICS_TABLES)
    # The newest day's newest candle of each interval and its indicators are in Redis, with their bucket.
    cache = PriceCache(connect(settings.redis_url))
    newest_hour = max(r["bucket"] for r in before["candles_1h"] if r["symbol"] == "BTC-USDT")
    assert int(cache.read_candle("1h", "binance", "BTC-USDT")["bucket_us"]) == int(newest_hour.timestamp() * 1e6)
    assert "sma_20" in cache.read_indicators("1m", "binance", "BTC-USDT")

    rebuild = build_rebuild_job(["binance"])
    key = dg.MultiPartitionKey({"date": DAY1.isoformat(), "exchange": "binance"})
    assert rebuild.execute_in_process(partition_key=key, resources=resources).success
    again = backfill(resources)
    assert again.success
    assert tables(settings) == before
