"""Fixtures that start real servers on loopback: Valkey/Redis, moto's S3, chdb folders, the replay feed."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import redis

from trading_platform.config import ExchangesFile, load_exchanges
from trading_platform.settings import Settings
from trading_platform.storage.redis_cache import EmbeddedValkey
from trading_platform_tests.storage.clickhouse_fixtures import (  # noqa: F401  (fixtures)
    chdb_clickhouse_url,
    chdb_http_server,
    clickhouse,
    clickhouse_url,
    http_clickhouse_url,
)

CONFIG_FILE = Path(__file__).resolve().parent.parent / "trading_platform" / "config" / "exchanges.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def exchanges_config() -> ExchangesFile:
    return load_exchanges(CONFIG_FILE)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis/Valkey: ``TP_TEST_REDIS_URL`` when set, else the embedded Valkey on a free port."""
    url = os.environ.get("TP_TEST_REDIS_URL")
    if url:
        yield url
        return
    with EmbeddedValkey(free_port(), tmp_path_factory.mktemp("valkey")) as server:
        yield server.url


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The shared server with a clean database for each test."""
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    yield redis_server
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 API server on loopback (real HTTP, real boto3 client)."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    name = "lake-" + uuid.uuid4().hex[:20]
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state", exchanges_file=CONFIG_FILE)
