"""The lake_compaction asset run by Dagster for a closed day: fewer files, the same rows, its check green;
a day whose files are not loaded yet is left alone and the check says so (WARN)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from trading_platform.defs.lake.compaction import lake_compaction
from trading_platform.defs.resources import build_resources
from trading_platform.defs.warehouse.assets import warehouse_load
from trading_platform.settings import Settings
from trading_platform.storage.object_store import LocalObjectStore
from trading_platform_tests.conftest import CONFIG_FILE
from trading_platform_tests.load.test_compaction import DAY, lake_rows, write_batches


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    write_batches(LocalObjectStore(tmp_path / "lake"), 0, 50)
    return Settings(state_dir=tmp_path / "state", exchanges_file=CONFIG_FILE, storage_url=(tmp_path / "lake").as_uri(),
                    clickhouse_url=f"chdb://{tmp_path}/ch", redis_url=redis_url)


def compact(settings: Settings) -> tuple[dg.MaterializeResult | dg.AssetMaterialization, dg.AssetCheckEvaluation]:
    result = dg.materialize([lake_compaction], partition_key=DAY.isoformat(), resources=build_resources(settings))
    assert result.success
    [materialization] = [e.materialization for e in result.get_asset_materialization_events()]
    [check] = result.get_asset_check_evaluations()
    return materialization, check


def test_a_closed_day_is_compacted_through_dagster(settings: Settings, tmp_path: Path) -> None:
    assert dg.materialize([warehouse_load], selection=["market_trades"], resources=build_resources(settings)).success
    lake = LocalObjectStore(tmp_path / "lake")
    before = lake_rows(lake)
    materialization, check = compact(settings)
    assert (materialization.metadata["files_before"].value, materialization.metadata["files_after"].value) == (100, 2)
    assert check.passed
    assert lake_rows(lake) == before


def test_a_day_not_loaded_yet_is_left_alone_and_the_check_warns(settings: Settings) -> None:
    materialization, check = compact(settings)
    assert materialization.metadata["files_after"].value == 100
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "not loaded into ClickHouse yet" in (check.description or "")
