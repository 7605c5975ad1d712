"""Dagster resources: every knob reaches code through one of these, built from ``Settings``.

Where a ``TP_`` variable is set, the resource gets an ``EnvVar`` so the UI shows where the value came
from (and secrets in URLs stay out of it); otherwise it gets the settings default.
"""


import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

from trading_platform.config import ExchangesFile, load_exchanges
from trading_platform.exchanges.base import Exchange
from trading_platform.exchanges.registry import exchange_for
from trading_platform.ingestion.runner import RunnerConfig
from trading_platform.settings import Settings
from trading_platform.storage.clickhouse import ClickHouse, ensure_schema, open_clickhouse
from trading_platform.storage.object_store import ObjectStore, open_object_store
from trading_platform.storage.redis_cache import PriceCache, connect


class LakeResource(dg.ConfigurableResource):
    """The Parquet lake: ``file://`` folder or ``s3://bucket/prefix``."""

    storage_url: str
    s3_endpoint_url: str | None = None

    def store(self) -> ObjectStore:
        return open_object_store(self.storage_url, self.s3_endpoint_url)


class ClickHouseResource(dg.ConfigurableResource):
    """``chdb:///folder`` (embedded, one process at a time) or ``http(s)://`` server."""

    url: str
    lock_timeout_s: float = 120.0

    @contextmanager
    def open(self) -> Iterator[ClickHouse]:
        ch = open_clickhouse(self.url, lock_timeout_s=self.lock_timeout_s)
        try:
            ensure_schema(ch)
            yield ch
        finally:
            ch.close()


class RedisResource(dg.ConfigurableResource):
    url: str

    def cache(self) -> PriceCache:
        return PriceCache(connect(self.url))


class FeedResource(dg.ConfigurableResource):
    """Where the exchanges are (live or replay), what to subscribe, and how the ingestion run batches."""

    exchanges_file: str
    feed_mode: str = "replay"
    replay_host: str = "127.0.0.1"
    replay_port: int = 9555
    state_dir: str
    batch_max_rows: int = 50_000
    batch_max_age_s: float = 10.0
    hot_tick_s: float = 1.0
    wal_fsync_interval_s: float = 0.2
    run_window_s: float = 3600.0
    spike_threshold: float = 0.2
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    load_lookback_days: int = 2
    heartbeat_s: float = 15.0
    supervisor_dead_after_s: float = 90.0

    def settings(self) -> Settings:
        return Settings.model_validate({
            "exchanges_file": self.exchanges_file, "feed_mode": self.feed_mode, "replay_host": self.replay_host,
            "replay_port": self.replay_port, "state_dir": self.state_dir,
        })

    def exchanges(self) -> ExchangesFile:
        return load_exchanges(Path(self.exchanges_file))

    def exchange(self, name: str) -> tuple[Exchange, str]:
        config = self.exchanges().exchanges[name]  # type: ignore[index]
        exchange = exchange_for(config)
        return exchange, exchange.connect_url(config.endpoints(self.settings()))

    def runner_config(self, run_window_s: float | None = None) -> RunnerConfig:
        return RunnerConfig(
            wal_dir=Path(self.state_dir) / "wal", batch_max_rows=self.batch_max_rows,
            batch_max_age_s=self.batch_max_age_s, hot_tick_s=self.hot_tick_s,
            wal_fsync_interval_s=self.wal_fsync_interval_s, run_window_s=run_window_s or self.run_window_s,
            spike_threshold=self.spike_threshold, reconnect_initial_s=self.reconnect_initial_s,
            reconnect_max_s=self.reconnect_max_s, heartbeat_s=self.heartbeat_s,
        )


def _env_or(name: str, value: object) -> object:
    return dg.EnvVar(name) if name in os.environ else value


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    redis_url = (settings.resolved_redis_url if settings.redis_url == "embedded"
                 else _env_or("TP_REDIS_URL", settings.redis_url))
    return {
        "lake": LakeResource(storage_url=_env_or("TP_STORAGE_URL", settings.storage_url),  # type: ignore[arg-type]
                             s3_endpoint_url=settings.s3_endpoint_url),
        "clickhouse": ClickHouseResource(url=_env_or("TP_CLICKHOUSE_URL", settings.clickhouse_url)),  # type: ignore[arg-type]
        "redis": RedisResource(url=redis_url),  # type: ignore[arg-type]
        "feed": FeedResource(
            exchanges_file=str(settings.exchanges_file), feed_mode=settings.feed_mode,
            replay_host=settings.replay_host, replay_port=settings.replay_port, state_dir=str(settings.state_dir),
            batch_max_rows=settings.batch_max_rows, batch_max_age_s=settings.batch_max_age_s,
            hot_tick_s=settings.hot_tick_s, wal_fsync_interval_s=settings.wal_fsync_interval_s,
            run_window_s=settings.run_window_s, spike_threshold=settings.spike_threshold,
            reconnect_initial_s=settings.reconnect_initial_s, reconnect_max_s=settings.reconnect_max_s,
            load_lookback_days=settings.load_lookback_days, heartbeat_s=settings.heartbeat_s,
            supervisor_dead_after_s=settings.supervisor_dead_after_s,
        ),
    }
