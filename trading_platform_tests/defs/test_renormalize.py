"""The renormalize_from_archive job: an exchange-day decoded again from its archived frames through Dagster
leaves the lake's trade files byte for byte and ClickHouse's trades as they were (unchanged code)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from trading_platform.config import ExchangesFile
from trading_platform.defs.resources import build_resources
from trading_platform.defs.warehouse.assets import warehouse_load
from trading_platform.defs.warehouse.jobs import build_renormalize_job
from trading_platform.exchanges.registry import exchange_for
from trading_platform.ingestion.runner import IngestionRunner
from trading_platform.replay import running_replay_server
from trading_platform.settings import Settings
from trading_platform.storage.clickhouse import open_clickhouse
from trading_platform.storage.object_store import LocalObjectStore
from trading_platform_tests.conftest import CONFIG_FILE
from trading_platform_tests.support import replay_endpoints, wait_for

TODAY = datetime.now(UTC).date()


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, exchanges_config: ExchangesFile) -> Settings:
    settings = Settings(state_dir=tmp_path / "state", exchanges_file=CONFIG_FILE,
                        storage_url=(tmp_path / "lake").as_uri(), clickhouse_url=f"chdb://{tmp_path}/ch",
                        redis_url=redis_url)
    config = exchanges_config.exchanges["binance"]
    with running_replay_server(exchanges_config, rate_per_symbol=10.0, seed=8) as replay:
        exchange = exchange_for(config)  # one instance: use_endpoints also points its REST calls at the replay
        runner = IngestionRunner(exchange, exchange.use_endpoints(replay_endpoints(config, replay.host, replay.port)),
                                 LocalObjectStore(tmp_path / "lake"),
                                 settings.model_copy(update={"batch_max_age_s": 1.0, "hot_tick_s": 0.2}))
        stop = threading.Event()
        thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
        thread.start()
        wait_for(lambda: runner.summary.batches >= 3, 60, "three batches")
        stop.set()
        thread.join(30)
    return settings


def trades_in_clickhouse(settings: Settings) -> list[tuple[str, str, float]]:
    with open_clickhouse(settings.clickhouse_url) as ch:
        rows = ch.query_arrow("SELECT symbol, trade_id, price FROM trading.market_trades ORDER BY ALL").to_pylist()
    return [(r["symbol"], r["trade_id"], r["price"]) for r in rows]


@pytest.mark.slow  # a day renormalized through Dagster: ~7 s: make test runs it, make test-fast does not
def test_renormalizing_a_day_through_dagster_changes_nothing_with_unchanged_code(settings: Settings) -> None:
    resources = build_resources(settings)
    assert dg.materialize([warehouse_load], selection=["market_trades"], resources=resources).success
    lake = LocalObjectStore(Path(settings.storage_url.removeprefix("file://")))
    files = {k: lake.get(k) for k in lake.list_keys("raw/trades/")}
    before = trades_in_clickhouse(settings)
    key = dg.MultiPartitionKey({"date": TODAY.isoformat(), "exchange": "binance"})
    result = build_renormalize_job(["binance"]).execute_in_process(partition_key=key, resources=resources)
    assert result.success
    assert {k: lake.get(k) for k in lake.list_keys("raw/trades/")} == files
    assert trades_in_clickhouse(settings) == before and before


def test_a_day_without_archived_frames_fails_and_says_where_it_looked(settings: Settings) -> None:
    key = dg.MultiPartitionKey({"date": "2025-01-01", "exchange": "binance"})
    result = build_renormalize_job(["binance"]).execute_in_process(
        partition_key=key, resources=build_resources(settings), raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("renormalize_exchange_day")
    assert failure is not None and "raw/frames/" in str(failure.error)
