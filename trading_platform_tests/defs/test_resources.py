"""The resources hold the values of ``Settings`` and no defaults of their own."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from trading_platform.defs.resources import (
    ClickHouseResource,
    FeedResource,
    IngestionResource,
    LakeResource,
    build_resources,
)
from trading_platform.ingestion.runner import RunnerConfig
from trading_platform.settings import Settings
from trading_platform_tests.conftest import CONFIG_FILE

# Every value differs from its default, so a resource that kept a default of its own would show here.
CHANGED = {"batch_max_rows": 7, "batch_max_age_s": 2.5, "hot_tick_s": 0.3, "wal_fsync_interval_s": 0.05,
           "run_window_s": 120.0, "spike_threshold": 0.4, "reconnect_initial_s": 0.2, "reconnect_max_s": 4.0,
           "heartbeat_s": 3.0, "supervisor_dead_after_s": 45.0, "load_lookback_days": 5,
           "clickhouse_lock_timeout_s": 9.0, "feed_mode": "live", "replay_port": 9999}
RUNNER_VALUES = [name for name in dir(RunnerConfig) if not name.startswith("_")]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.model_validate({"state_dir": tmp_path, "exchanges_file": CONFIG_FILE, **CHANGED})


def test_no_resource_declares_a_default(settings: Settings) -> None:
    for key, resource in build_resources(settings).items():
        defaults = [name for name, field in type(resource).model_fields.items() if not field.is_required()]
        assert not defaults, f"{key}: {defaults} have defaults of their own; Settings declares them"


def test_the_run_reads_the_settings_values_through_the_ingestion_resource(settings: Settings) -> None:
    ingestion = build_resources(settings)["ingestion"]
    assert isinstance(ingestion, IngestionResource)
    assert RUNNER_VALUES and "batch_max_rows" in RUNNER_VALUES
    for name in RUNNER_VALUES:
        assert getattr(ingestion, name) == getattr(settings, name), name
    assert ingestion.supervisor_dead_after_s == settings.supervisor_dead_after_s


def test_a_launch_can_shorten_the_window_of_one_run(settings: Settings) -> None:
    ingestion = IngestionResource.from_settings(settings)
    assert ingestion.for_run(4.0).run_window_s == 4.0
    assert ingestion.for_run(None).run_window_s == settings.run_window_s
    assert ingestion.for_run(4.0).batch_max_rows == settings.batch_max_rows


def test_the_other_resources_carry_the_settings_values(settings: Settings) -> None:
    resources = build_resources(settings)
    lake, clickhouse, feed = resources["lake"], resources["clickhouse"], resources["feed"]
    assert isinstance(lake, LakeResource) and lake.lookback_days == settings.load_lookback_days
    assert isinstance(clickhouse, ClickHouseResource)
    assert clickhouse.lock_timeout_s == settings.clickhouse_lock_timeout_s
    # live mode: the exchanges' own endpoints, as exchanges.yaml names them
    assert isinstance(feed, FeedResource) and feed.feed_mode == "live"
    assert feed.ws_urls["binance"] == feed.exchanges().exchanges["binance"].live.ws_url


def test_the_feed_resource_hands_the_runs_the_replay_endpoints(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, exchanges_file=CONFIG_FILE, replay_host="127.0.0.2", replay_port=9999)
    feed = build_resources(settings)["feed"]
    assert isinstance(feed, FeedResource)
    exchange, url = feed.exchange("kraken")
    assert exchange.name == "kraken" and url.startswith("ws://127.0.0.2:9999/")


def test_a_secret_bearing_url_set_in_the_environment_reaches_dagster_as_an_env_var(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TP_CLICKHOUSE_URL", "http://user:secret@127.0.0.1:8123")
    resources = build_resources(Settings(state_dir=tmp_path, exchanges_file=CONFIG_FILE))
    clickhouse = resources["clickhouse"]
    assert isinstance(clickhouse, ClickHouseResource) and isinstance(clickhouse.url, dg.EnvVar)
