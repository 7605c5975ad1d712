"""The code location loads the way `dagster dev` loads it, with the lineage users see in the UI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from trading_platform.definitions import build_definitions
from trading_platform.settings import PROJECT_ROOT, Settings
from trading_platform_tests.conftest import CONFIG_FILE


@pytest.fixture
def definitions(tmp_path: Path) -> dg.Definitions:
    return build_definitions(Settings(state_dir=tmp_path, exchanges_file=CONFIG_FILE))


@pytest.mark.slow  # the dagster CLI in a subprocess: ~9 s: make test runs it, make test-fast does not
def test_workspace_loads_with_the_dagster_cli(tmp_path: Path) -> None:
    env = dict(os.environ, TP_STATE_DIR=str(tmp_path), DAGSTER_HOME=str(tmp_path))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_lineage_runs_from_the_lake_to_the_cache(definitions: dg.Definitions) -> None:
    graph = definitions.resolve_asset_graph()
    key = dg.AssetKey
    assert graph.get(key("market_trades")).parent_keys == {key("raw_trades")}
    assert graph.get(key("latest_prices")).parent_keys == {key("market_trades"), key("orderbook_snapshots")}
    assert graph.get(key("orderbook_snapshots")).parent_keys == {key("raw_orderbook")}
    assert graph.get(key("book_events")).parent_keys == {key("raw_book_events")}
    assert graph.get(key("quarantine")).parent_keys == {key("raw_quarantine")}


def test_every_asset_has_a_check(definitions: dg.Definitions) -> None:
    graph = definitions.resolve_asset_graph()
    checked = {check.asset_key for check in graph.asset_check_keys}
    assets = ("raw_trades", "market_trades", "orderbook_snapshots", "book_events", "quarantine", "latest_prices")
    assert checked >= {dg.AssetKey(name) for name in assets}


def test_each_enabled_exchange_has_a_job_and_a_running_supervisor(definitions: dg.Definitions) -> None:
    assert definitions.resolve_job_def("ingest_binance") is not None
    sensor = definitions.resolve_sensor_def("supervise_binance")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    automation = definitions.resolve_sensor_def("load_automation")
    assert automation.default_status == dg.DefaultSensorStatus.RUNNING


def test_clickhouse_writers_share_one_pool(definitions: dg.Definitions) -> None:
    graph = definitions.resolve_asset_graph()
    for name in ("market_trades", "orderbook_snapshots", "book_events", "quarantine", "latest_prices"):
        assert graph.get(dg.AssetKey(name)).pools == {"clickhouse"}


def test_an_exchange_without_a_module_fails_naming_the_key() -> None:
    from trading_platform.exchanges.registry import exchange_class
    from trading_platform.settings import ConfigError

    with pytest.raises(ConfigError, match=r"exchanges\.bitstamp\.enabled.*trading_platform/exchanges/bitstamp\.py"):
        exchange_class("bitstamp")


def test_every_asset_has_the_owner_and_the_freshness_policy_of_its_group(definitions: dg.Definitions) -> None:
    from datetime import timedelta

    graph = definitions.resolve_asset_graph()
    def window(warn: int, fail: int) -> dg.FreshnessPolicy:
        return dg.FreshnessPolicy.time_window(warn_window=timedelta(minutes=warn), fail_window=timedelta(minutes=fail))

    policies = {"lake": window(3, 10), "warehouse": window(3, 10), "cache": window(3, 10), "analytics": window(5, 15),
                "maintenance": window(26 * 60, 50 * 60)}
    keys = graph.get_all_asset_keys()
    assert len(keys) == 17
    for key in keys:
        node = graph.get(key)
        assert node.owners == ["team:market-data"], key
        assert node.freshness_policy == policies[node.group_name], key


def test_an_asset_outside_the_known_groups_is_refused() -> None:
    from trading_platform.defs.conventions import with_conventions

    with pytest.raises(ValueError, match=r"group 'scratch'.*freshness policy"):
        with_conventions(dg.AssetSpec("stray", group_name="scratch"))
