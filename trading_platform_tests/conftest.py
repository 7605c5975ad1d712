"""Fixtures that start real servers on loopback: Valkey/Redis, moto's S3, chdb folders, the replay feed."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import pytest
import redis

from trading_platform.config import ExchangesFile, load_exchanges
from trading_platform.dev.valkey import EmbeddedValkey
from trading_platform.settings import Settings
from trading_platform_tests.storage.clickhouse_fixtures import (  # noqa: F401  (fixtures)
    chdb_clickhouse_url,
    chdb_http_server,
    chdb_warehouse,
    clickhouse,
    clickhouse_url,
    http_clickhouse_url,
)

CONFIG_FILE = Path(__file__).resolve().parent.parent / "trading_platform" / "config" / "exchanges.yaml"
# make test runs two pytest-xdist workers. Each long scenario module runs whole on one worker, its tests
# in order: the end-to-end tests share one `dagster dev` and build on each other's state, and the fault
# scenarios each load the machine with three feeds, so they never overlap one another. The other modules
# fill in around them, each whole as well.
SCENARIO_MODULES = ("trading_platform_tests/defs/test_end_to_end.py", "trading_platform_tests/faults/")


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    # xdist's own loadgroup/loadfile grouping does not take effect with pytest 9.2 (pytest-xdist#1386):
    # the scheduler groups by path here instead.
    from xdist.scheduler import LoadScopeScheduling

    class ScenarioModulesWhole(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            # Every other module whole too: a module-scoped fixture (a live run, a server) starts once.
            return next((module for module in SCENARIO_MODULES if nodeid.startswith(module)),
                        super()._split_scope(nodeid))

        def _assign_work_unit(self, node: Any) -> None:
            # The long scenarios first, one per worker: they set the suite's length.
            for module in SCENARIO_MODULES:
                if module in self.workqueue:
                    self.workqueue.move_to_end(module, last=False)
                    break
            super()._assign_work_unit(node)

    return ScenarioModulesWhole(config, log)


FAILED_CALL = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Lets a fixture's teardown tell whether its test failed (the end-to-end module then explains the
    # platform's state: runs, pool claims, daemon warnings).
    report = yield
    if report.when == "call":
        item.stash[FAILED_CALL] = report.failed
    return report


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
        # One database per test worker (no xdist -> 1, gw0 -> 2, gw1 -> 3): a test flushes only its own.
        worker = os.environ.get("PYTEST_XDIST_WORKER", "gw-1").removeprefix("gw")
        yield f"{url.rstrip('/')}/{int(worker) + 2}" if urlparse(url).path in ("", "/") else url
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
