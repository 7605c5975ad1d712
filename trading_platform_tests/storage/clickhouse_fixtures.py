"""ClickHouse fixtures: chdb in a temporary folder, and a chdb-backed ClickHouse HTTP server on loopback.

The HTTP server runs in a child process, not a thread of the test process: chdb embeds one database
folder per process, so a server thread here would stop every test (and every Dagster run executed
in-process) from opening its own ``chdb://`` folder.

Fixtures (wire them into a conftest with ``from ...clickhouse_fixtures import *``-style imports):

* ``chdb_http_server`` (session): the running server, ``.url`` is ``http://127.0.0.1:PORT``.
* ``chdb_clickhouse_url``: ``chdb:///<tmp>/chdb``, a fresh folder; nothing holds it open.
* ``http_clickhouse_url``: the server's URL, with the ``trading`` database dropped first.
* ``clickhouse_url``: parametrized over both of the above (test ids ``chdb`` and ``http``).
* ``clickhouse``: an open :class:`ClickHouse` on ``clickhouse_url`` (no schema), closed afterwards.
* ``chdb_warehouse``: an open chdb in a fresh folder with the platform's schema, closed afterwards (for SQL
  both backends run alike, such as the analytics and compaction).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from trading_platform.schema import DATABASE
from trading_platform.storage.clickhouse import ClickHouse, ServerClickHouse, ensure_schema, open_clickhouse

__all__ = [
    "HttpServerProcess",
    "chdb_clickhouse_url",
    "chdb_http_server",
    "chdb_warehouse",
    "clickhouse",
    "clickhouse_url",
    "http_clickhouse_url",
    "start_http_server_process",
]

_PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class HttpServerProcess:
    """A ``python -m trading_platform_tests.storage.clickhouse_http_server`` child process."""

    url: str
    path: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, timeout_s: float = 10.0) -> None:
        # Closing stdin is the shutdown signal (--exit-on-stdin-eof): the server closes chdb cleanly.
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout_s)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_http_server_process(path: Path, *, user: str | None = None, password: str | None = None,
                              timeout_s: float = 30.0) -> HttpServerProcess:
    """Start the server on ``path`` (an ephemeral loopback port) and wait until it prints its URL."""
    path.mkdir(parents=True, exist_ok=True)
    log_path = path.parent / f"{path.name}-server.log"
    cmd = [sys.executable, "-m", "trading_platform_tests.storage.clickhouse_http_server", str(path), "--port", "0",
           "--exit-on-stdin-eof"]
    if user:
        cmd += ["--user", user]
    if password:
        cmd += ["--password", password]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_PROJECT_ROOT),
                                                                     os.environ.get("PYTHONPATH")]))}
    with log_path.open("wb") as log:
        process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env)
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    line = b""
    # A selector, not select.select: late in a long test session descriptors pass 1024, select's limit.
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if not selector.select(max(remaining, 0)):
                break
            chunk = os.read(process.stdout.fileno(), 1)
            if not chunk:
                break
            line += chunk
    url = line.decode().strip()
    if not url.startswith("http://"):
        server = HttpServerProcess(url, path, process, log_path)
        server.stop(timeout_s=5)
        raise RuntimeError(f"chdb HTTP server did not start: {log_path.read_text(errors='replace')[-2000:]}")
    return HttpServerProcess(url, path, process, log_path)


@pytest.fixture(scope="session")
def chdb_http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServerProcess]:
    server = start_http_server_process(tmp_path_factory.mktemp("chdb-http") / "chdb")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def chdb_clickhouse_url(tmp_path: Path) -> str:
    return f"chdb://{tmp_path / 'chdb'}"


@pytest.fixture
def http_clickhouse_url(chdb_http_server: HttpServerProcess) -> str:
    # One server for the whole session: each test starts from an empty `trading` database.
    with ServerClickHouse(chdb_http_server.url) as ch:
        ch.command(f"DROP DATABASE IF EXISTS {DATABASE} SYNC")
    return chdb_http_server.url


@pytest.fixture(params=["chdb", "http"])
def clickhouse_url(request: pytest.FixtureRequest) -> str:
    url = request.getfixturevalue(f"{request.param}_clickhouse_url")
    assert isinstance(url, str)
    return url


@pytest.fixture
def clickhouse(clickhouse_url: str) -> Iterator[ClickHouse]:
    with open_clickhouse(clickhouse_url) as ch:
        yield ch


@pytest.fixture
def chdb_warehouse(chdb_clickhouse_url: str) -> Iterator[ClickHouse]:
    with open_clickhouse(chdb_clickhouse_url) as ch:
        ensure_schema(ch)
        yield ch
