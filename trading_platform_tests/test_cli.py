"""The `trading-platform` command line, run as a user runs it (a subprocess)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from trading_platform.exchanges.decoded import RecordKind
from trading_platform.ingestion.frame_archive import ArchivedBatch, write_archive
from trading_platform.storage.object_store import LocalObjectStore
from trading_platform.storage.redis_cache import LatestTrade, PriceCache, connect
from trading_platform_tests.conftest import free_port

CLI = [sys.executable, "-m", "trading_platform.cli"]

LOAD_LOOP = """
import sys, time, pyarrow as pa
from trading_platform.storage.clickhouse import open_clickhouse, ensure_schema
url, seconds = sys.argv[1], float(sys.argv[2])
deadline = time.monotonic() + seconds
n = 0
while time.monotonic() < deadline:
    with open_clickhouse(url) as ch:   # a load step: open, write, close, like the Dagster assets
        ensure_schema(ch)
        ch.command(f"INSERT INTO trading.load_manifest (table_name, lake_key, batch_id, rows, checksum, loaded_at) "
                   f"VALUES ('market_trades', 'k{n}', 'b', 1, 'c', now64(6))")
        time.sleep(0.2)
    n += 1
    print(n, flush=True)
"""


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # two processes contending for chdb for ~20 s: make test runs it, make test-fast does not
def test_query_works_while_loads_hold_the_embedded_clickhouse(tmp_path: Path) -> None:
    url = f"chdb://{tmp_path / 'chdb'}"
    env = dict(os.environ, TP_CLICKHOUSE_URL=url, TP_STATE_DIR=str(tmp_path))
    loader = subprocess.Popen([sys.executable, "-c", LOAD_LOOP, url, "12"], stdout=subprocess.PIPE, text=True)
    try:
        assert loader.stdout is not None
        loader.stdout.readline()  # the loader has written at least once
        for _ in range(5):
            result = run_cli("query", "SELECT count() AS loads FROM trading.load_manifest", "--format", "csv", env=env)
            assert result.returncode == 0, result.stderr
            assert int(result.stdout.splitlines()[1]) >= 1
    finally:
        loader.wait(30)
    assert loader.returncode == 0


def test_query_reports_a_clickhouse_error_without_a_traceback(tmp_path: Path) -> None:
    env = dict(os.environ, TP_STATE_DIR=str(tmp_path))
    result = run_cli("query", "SELECT no_such_column FROM trading.market_trades", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("clickhouse error: ") and "no_such_column" in result.stderr
    assert "Traceback" not in result.stderr


def test_prices_shows_each_cached_symbol_with_its_age(tmp_path: Path, redis_url: str) -> None:
    now_us = time.time_ns() // 1000
    PriceCache(connect(redis_url)).write([LatestTrade("binance", "BTC-USDT", 91000.5, 0.01, "buy", "7", now_us),
                                          LatestTrade("binance", "ETH-USDT", 3001.25, 1.5, "sell", "8", now_us)])
    result = run_cli("prices", env=dict(os.environ, TP_REDIS_URL=redis_url, TP_STATE_DIR=str(tmp_path)))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("BTC-USDT" in line and "91000.5" in line for line in lines)
    assert "2 symbols cached" in lines[-1]


@pytest.mark.parametrize(("variable", "value", "named"), [
    ("TP_FEED_MODE", "paper", "TP_FEED_MODE"),
    ("TP_CLICKHOUSE_URL", "mysql://x", "TP_CLICKHOUSE_URL"),
])
def test_bad_settings_stop_the_start_naming_the_key(tmp_path: Path, variable: str, value: str, named: str) -> None:
    result = run_cli("check-config", env=dict(os.environ, **{variable: value}, TP_STATE_DIR=str(tmp_path)))
    assert result.returncode == 2
    assert named in result.stderr and "configuration error" in result.stderr


def test_check_config_lists_exchanges_without_secrets(tmp_path: Path) -> None:
    env = dict(os.environ, TP_STATE_DIR=str(tmp_path), TP_CLICKHOUSE_URL="http://default:s3cret@localhost:8123")
    result = run_cli("check-config", env=env)
    assert result.returncode == 0, result.stderr
    assert "binance   enabled" in result.stdout
    assert "s3cret" not in result.stdout


@pytest.mark.parametrize(("taken", "setting"), [
    ("TP_UI_PORT", "TP_UI_PORT (or --port)"), ("TP_REPLAY_PORT", "TP_REPLAY_PORT"),
    ("TP_EMBEDDED_REDIS_PORT", "TP_EMBEDDED_REDIS_PORT"),
])
def test_dev_with_a_port_taken_stops_at_once_naming_the_setting(tmp_path: Path, taken: str, setting: str) -> None:
    ports = {name: free_port() for name in ("TP_UI_PORT", "TP_REPLAY_PORT", "TP_EMBEDDED_REDIS_PORT")}
    env = dict(os.environ, TP_STATE_DIR=str(tmp_path / "state"), TP_REDIS_URL="embedded",
               **{name: str(port) for name, port in ports.items()})
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", ports[taken]))
        holder.listen()
        result = run_cli("dev", env=env)
    assert result.returncode == 2
    assert f"port {ports[taken]} on 127.0.0.1" in result.stderr and setting in result.stderr
    assert "Traceback" not in result.stderr and "Dagster UI on" not in result.stdout
    for name, port in ports.items():  # nothing was started, so every other port is still free
        if name != taken:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port))


def test_dev_with_an_unwritable_state_folder_names_tp_state_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    ports = {name: str(free_port()) for name in ("TP_UI_PORT", "TP_REPLAY_PORT", "TP_EMBEDDED_REDIS_PORT")}
    result = run_cli("dev", env=dict(os.environ, TP_STATE_DIR=str(blocker / "state"), **ports))
    assert result.returncode == 2 and "set TP_STATE_DIR to a writable folder" in result.stderr


@pytest.mark.parametrize(("dates", "said"), [("2026-12-40", "expected YYYY-MM-DD"),
                                             ("2026-12-02..2026-12-01", "ends before it starts"),
                                             ("2026-12-01", "holds no raw-frame archive of kraken for 2026-12-01")])
def test_replay_from_the_lake_refuses_days_it_cannot_serve(tmp_path: Path, dates: str, said: str) -> None:
    env = dict(os.environ, TP_STATE_DIR=str(tmp_path), TP_REPLAY_PORT=str(free_port()))
    result = run_cli("replay", "--from-lake", "kraken", dates, env=env)
    assert result.returncode == 2 and said in result.stderr and "Traceback" not in result.stderr


def test_replay_from_the_lake_serves_the_archived_frames_as_received(tmp_path: Path) -> None:
    from websockets.sync.client import connect as ws_connect

    frames = [b'{"channel":"heartbeat"}', b'{"channel":"status","type":"update","data":[{"system":"online"}]}']
    at_us = int(datetime(2026, 12, 1, 12, tzinfo=UTC).timestamp() * 1_000_000)
    port = free_port()
    url = f"ws://127.0.0.1:{port}/kraken/v2"  # the recorded connection: the replay feed, never the internet
    records = [(0, at_us, RecordKind.CONNECTED, url.encode())] + [
        (n + 1, at_us + n, RecordKind.FRAME, frame) for n, frame in enumerate(frames)]
    write_archive(LocalObjectStore(tmp_path / "lake"), "kraken",
                  ArchivedBatch("kraken-000000000000-000000000002", records, {}, {}))
    env = dict(os.environ, TP_STATE_DIR=str(tmp_path), TP_REPLAY_PORT=str(port))
    server = subprocess.Popen([*CLI, "replay", "--from-lake", "kraken", "2026-12-01", "--speed", "0"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                client = ws_connect(url)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr
                time.sleep(0.2)
        with client:
            assert [client.recv(timeout=10, decode=False) for _ in frames] == frames
    finally:
        server.terminate()
        server.wait(30)
