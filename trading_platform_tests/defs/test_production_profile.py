"""The production profile's pieces against the machine's own servers: a Postgres-backed Dagster instance
and a plain Redis server (DESIGN.md, "Test infrastructure"). Where those servers are absent these tests
skip, saying so; the embedded-profile tests cover the same code paths everywhere."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import redis

from trading_platform.defs.ingestion.jobs import build_ingestion_job
from trading_platform.defs.ingestion.sensors import build_supervisor
from trading_platform.defs.resources import build_resources
from trading_platform.settings import Settings
from trading_platform.storage.redis_cache import LatestTrade, PriceCache, connect
from trading_platform_tests.conftest import CONFIG_FILE

# A Postgres-backed Dagster instance and daemon (~30 s): make test runs it, make test-fast does not.
pytestmark = pytest.mark.slow

PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_URL = "redis://127.0.0.1:6379/15"


def _listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@pytest.fixture
def postgres_instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    if not _listening(PG_HOST, PG_PORT):
        pytest.skip(f"no PostgreSQL on {PG_HOST}:{PG_PORT}: the production-profile instance test needs one")
    import psycopg2

    database = f"tp_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="test")
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {database}")
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; dagster-postgres ships psycopg2.
    (tmp_path / "dagster.yaml").write_text(
        f"storage:\n  postgres:\n    postgres_url: postgresql+psycopg2://postgres@{PG_HOST}:{PG_PORT}/{database}\n")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        yield instance
    finally:
        instance.dispose()
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.close()


def resources(tmp_path: Path, supervisor_dead_after_s: float = 30) -> dict[str, dg.ConfigurableResource]:
    return build_resources(Settings(state_dir=tmp_path, exchanges_file=CONFIG_FILE,
                                    supervisor_dead_after_s=supervisor_dead_after_s))


def test_supervisor_on_a_postgres_instance_starts_one_run_and_never_a_second(
        postgres_instance: dg.DagsterInstance, tmp_path: Path) -> None:
    job = build_ingestion_job("binance")
    sensor = build_supervisor(job, "binance")
    context = dg.build_sensor_context(instance=postgres_instance, resources=resources(tmp_path))
    first = sensor(context)
    assert isinstance(first, dg.RunRequest) and first.tags["tp/relaunch_reason"] == "first start"
    postgres_instance.add_run(dg.DagsterRun(job_name=job.name, run_id=uuid.uuid4().hex,
                                            status=dg.DagsterRunStatus.STARTED))
    second = sensor(dg.build_sensor_context(instance=postgres_instance, resources=resources(tmp_path)))
    assert isinstance(second, dg.SkipReason) and "is STARTED" in (second.skip_message or "")


def test_a_silent_run_is_declared_dead_on_a_postgres_instance(postgres_instance: dg.DagsterInstance,
                                                              tmp_path: Path) -> None:
    job = build_ingestion_job("binance")
    sensor = build_supervisor(job, "binance")
    run = postgres_instance.add_run(dg.DagsterRun(job_name=job.name, run_id=uuid.uuid4().hex,
                                                  status=dg.DagsterRunStatus.STARTED))
    quiet = resources(tmp_path, supervisor_dead_after_s=0.5)
    time.sleep(1.0)  # no event at all from the run
    result = sensor(dg.build_sensor_context(instance=postgres_instance, resources=quiet))
    assert isinstance(result, dg.SkipReason) and "declared dead" in (result.skip_message or "")
    assert postgres_instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE  # type: ignore[union-attr]


@pytest.fixture
def plain_redis() -> Iterator[str]:
    if not _listening("127.0.0.1", 6379):
        pytest.skip("no Redis on 127.0.0.1:6379: the plain-Redis test needs one")
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()


def test_the_price_cache_on_a_plain_redis_server(plain_redis: str) -> None:
    cache = PriceCache(connect(plain_redis))
    cache.write([LatestTrade("kraken", "BTC-USD", 90000.0, 0.1, "buy", "5", 20)])
    cache.write([LatestTrade("kraken", "BTC-USD", 89000.0, 0.1, "buy", "4", 10)])  # older: ignored
    assert cache.read("kraken", "BTC-USD")["price"] == "90000.0"
