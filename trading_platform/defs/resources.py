"""Dagster resources: every knob reaches Dagster code through one of these, each holding one concern.

They hold values, never defaults: ``Settings`` declares every knob once, with its default and validation,
and ``build_resources`` hands its values over when Dagster loads the code location (not at import).
Where a secret-bearing ``TP_`` URL is set, the resource gets an ``EnvVar`` so the UI shows where the
value came from and not the credentials in it.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg

from trading_platform.config import Endpoints, ExchangesFile, load_exchanges
from trading_platform.exchanges.base import Exchange
from trading_platform.exchanges.registry import exchange_for
from trading_platform.ingestion.runner import RunnerConfig
from trading_platform.settings import Settings
from trading_platform.storage.clickhouse import ClickHouse, ensure_schema, open_clickhouse
from trading_platform.storage.object_store import ObjectStore, open_object_store
from trading_platform.storage.redis_cache import PriceCache, connect


class LakeResource(dg.ConfigurableResource):
    """The Parquet lake: ``file://`` folder or ``s3://bucket/prefix``, and how far back loads and checks look."""

    storage_url: str
    s3_endpoint_url: str | None
    lookback_days: int

    def store(self) -> ObjectStore:
        return open_object_store(self.storage_url, self.s3_endpoint_url)


class ClickHouseResource(dg.ConfigurableResource):
    """``chdb:///folder`` (embedded, one process at a time) or ``http(s)://`` server."""

    url: str
    lock_timeout_s: float

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
    """Which exchanges and symbols to subscribe (``exchanges.yaml``) and where each exchange is served.

    The endpoints are resolved from the settings' feed mode when the code location loads, so the UI shows
    the very URLs the runs connect to.
    """

    exchanges_file: str
    feed_mode: str
    ws_urls: dict[str, str]  # exchange -> WebSocket URL
    rest_urls: dict[str, str]  # exchange -> REST base URL, for the exchanges that have one

    @classmethod
    def from_settings(cls, settings: Settings) -> "FeedResource":
        endpoints = {name: config.endpoints(settings)
                     for name, config in load_exchanges(settings.exchanges_file).exchanges.items()}
        return cls(exchanges_file=str(settings.exchanges_file), feed_mode=settings.feed_mode,
                   ws_urls={name: e.ws_url for name, e in endpoints.items()},
                   rest_urls={name: e.rest_url for name, e in endpoints.items() if e.rest_url})

    def exchanges(self) -> ExchangesFile:
        return load_exchanges(Path(self.exchanges_file))

    def exchange(self, name: str) -> tuple[Exchange, str]:
        exchange = exchange_for(self.exchanges().exchanges[name])
        endpoints = Endpoints(ws_url=self.ws_urls[name], rest_url=self.rest_urls.get(name))
        return exchange, exchange.use_endpoints(endpoints)


class IngestionResource(dg.ConfigurableResource):
    """How an ingestion run batches, caches and reconnects (it is the run's ``RunnerConfig``), and when the
    supervisor counts a silent run as dead."""

    wal_folder: str
    batch_max_rows: int
    batch_max_age_s: float
    hot_tick_s: float
    wal_fsync_interval_s: float
    run_window_s: float
    spike_threshold: float
    reconnect_initial_s: float
    reconnect_max_s: float
    heartbeat_s: float
    supervisor_dead_after_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> "IngestionResource":
        return cls(
            wal_folder=str(settings.wal_dir), batch_max_rows=settings.batch_max_rows,
            batch_max_age_s=settings.batch_max_age_s, hot_tick_s=settings.hot_tick_s,
            wal_fsync_interval_s=settings.wal_fsync_interval_s, run_window_s=settings.run_window_s,
            spike_threshold=settings.spike_threshold, reconnect_initial_s=settings.reconnect_initial_s,
            reconnect_max_s=settings.reconnect_max_s, heartbeat_s=settings.heartbeat_s,
            supervisor_dead_after_s=settings.supervisor_dead_after_s,
        )

    @property
    def wal_dir(self) -> Path:
        return Path(self.wal_folder)

    def for_run(self, run_window_s: float | None) -> RunnerConfig:
        """These values, with the window of one run overridden (e.g. a short test run launched by hand)."""
        return self.model_copy(update={"run_window_s": run_window_s}) if run_window_s else self


def _env_or(name: str, value: str) -> str:
    # An EnvVar is a str that Dagster resolves in the process that uses the resource.
    return dg.EnvVar(name) if name in os.environ else value


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource[Any]]:
    redis_url = (settings.resolved_redis_url if settings.redis_url == "embedded"
                 else _env_or("TP_REDIS_URL", settings.redis_url))
    return {
        "lake": LakeResource(storage_url=_env_or("TP_STORAGE_URL", settings.storage_url),
                             s3_endpoint_url=settings.s3_endpoint_url, lookback_days=settings.load_lookback_days),
        "clickhouse": ClickHouseResource(url=_env_or("TP_CLICKHOUSE_URL", settings.clickhouse_url),
                                         lock_timeout_s=settings.clickhouse_lock_timeout_s),
        "redis": RedisResource(url=redis_url),
        "feed": FeedResource.from_settings(settings),
        "ingestion": IngestionResource.from_settings(settings),
    }
