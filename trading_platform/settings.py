"""Every knob of the platform, read once from the environment (prefix ``TP_``) or a ``.env`` file.

Dagster code never reads the environment at import time: resources are built from these settings
when Dagster instantiates them, and ``EnvVar`` keeps the UI honest about where a value came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = PROJECT_ROOT / ".tp_state"


class ConfigError(ValueError):
    """A setting or config-file value is invalid; the message names the key and what is allowed."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TP_", env_file=".env", extra="ignore")

    state_dir: Path = Field(
        DEFAULT_STATE_DIR, description="Local folder for the lake, chdb, WAL and run history defaults."
    )
    storage_url: str = Field(
        "", description="Object store: file:///folder or s3://bucket/prefix. Empty: <state_dir>/lake."
    )
    s3_endpoint_url: str | None = Field(None, description="S3 API endpoint (MinIO, moto); None: AWS.")
    clickhouse_url: str = Field(
        "", description="chdb:///folder (embedded) or http(s)://user:pass@host:8123. Empty: <state_dir>/chdb."
    )
    clickhouse_lock_timeout_s: float = Field(
        120.0, gt=0, description="How long a load or a query waits for the embedded chdb folder another process holds."
    )
    redis_url: str = Field("embedded", description="'embedded' (platform-owned Valkey) or redis://host:port/db.")
    embedded_redis_port: int = Field(6391, ge=1, le=65535, description="Port of the embedded Valkey (make run).")
    ui_port: int = Field(3000, ge=1, le=65535, description="Port of the Dagster UI that make run starts.")
    feed_mode: Literal["replay", "live"] = Field("replay", description="Replay server on loopback, or the exchanges.")
    replay_host: str = Field("127.0.0.1", description="Host of the replay feed (feed_mode replay).")
    replay_port: int = Field(9555, ge=1, le=65535, description="Port of the replay feed (feed_mode replay).")
    exchanges_file: Path = Field(
        Path(__file__).resolve().parent / "config" / "exchanges.yaml",
        description="Exchanges, symbols, channels and endpoints.",
    )
    batch_max_rows: int = Field(50_000, ge=1, description="Flush a Parquet micro-batch at this many rows...")
    # A minute: the lake gets a file per symbol and dataset a minute, not every 10 s (the Redis hot path
    # stays sub-second and the WAL keeps every frame durable meanwhile); compaction merges a closed day.
    batch_max_age_s: float = Field(60.0, gt=0, description="...or when its oldest row is this old.")
    # 0.25 s: a cached trade is then well under a second old (the target) even when a tick's decode of a busy
    # feed takes a few hundred ms; each tick costs one Redis round trip.
    hot_tick_s: float = Field(0.25, gt=0, le=5, description="Redis hot-cache write cadence in the run.")
    wal_fsync_interval_s: float = Field(0.2, ge=0, description="Longest time a WAL append waits for fsync.")
    run_window_s: float = Field(3600.0, gt=0, description="An ingestion run drains and ends after this.")
    reconnect_initial_s: float = Field(0.5, gt=0, description="First reconnect delay; doubles, with jitter...")
    reconnect_max_s: float = Field(30.0, gt=0, description="...up to this.")
    spike_threshold: float = Field(
        0.2, gt=0, description="Relative jump from the previous trade's price that quarantines a trade."
    )
    heartbeat_s: float = Field(15.0, gt=0, description="Ingestion run heartbeat event cadence.")
    supervisor_dead_after_s: float = Field(
        90.0, gt=0, description="A STARTED ingestion run silent this long is declared dead and replaced."
    )
    load_lookback_days: int = Field(
        2, ge=1, description="Days of lake partitions an incremental load scans for unloaded batches."
    )

    @field_validator("storage_url")
    @classmethod
    def _storage_scheme(cls, value: str) -> str:
        if value and urlparse(value).scheme not in ("file", "s3"):
            raise ValueError(f"must start with file:// or s3://, got {value!r}")
        return value

    @field_validator("clickhouse_url")
    @classmethod
    def _clickhouse_scheme(cls, value: str) -> str:
        if value and urlparse(value).scheme not in ("chdb", "http", "https"):
            raise ValueError(f"must start with chdb://, http:// or https://, got {value!r}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if value != "embedded" and urlparse(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"must be 'embedded' or start with redis://, rediss:// or unix://, got {value!r}")
        return value

    @model_validator(mode="after")
    def _defaults_under_state_dir(self) -> Settings:
        if not self.storage_url:
            self.storage_url = (self.state_dir / "lake").resolve().as_uri()
        if not self.clickhouse_url:
            self.clickhouse_url = "chdb://" + str((self.state_dir / "chdb").resolve())
        return self

    @property
    def resolved_redis_url(self) -> str:
        if self.redis_url == "embedded":
            return f"redis://127.0.0.1:{self.embedded_redis_port}/0"
        return self.redis_url

    @property
    def wal_dir(self) -> Path:
        return self.state_dir / "wal"


def describe_validation_error(error: ValidationError, source: str) -> str:
    """Turn pydantic's report into one line per bad key, naming the key as the user spells it."""
    lines = [f"invalid {source}:"]
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"])
        if source == "settings":
            key = "TP_" + key.upper()
        detail = problem["msg"]
        lines.append(f"  {key}: {detail}; got {problem.get('input')!r}")
    return "\n".join(lines)


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, "settings")) from None
