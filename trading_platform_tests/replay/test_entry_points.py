"""The ways the server is started: async in-process, and run_replay as `make run` uses it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from websockets.asyncio.client import connect as async_connect
from websockets.sync.client import connect

from trading_platform.config import ExchangesFile
from trading_platform.replay import Fault, FaultKind, start_replay_server


def test_start_replay_server_in_process_on_an_ephemeral_port(exchanges: ExchangesFile) -> None:
    async def scenario() -> tuple[int, dict, int]:
        server = await start_replay_server("127.0.0.1", 0, exchanges, rate_per_symbol=200.0, seed=1)
        try:
            async with async_connect(f"{server.ws_base_url}/binance/ws/btcusdt@trade") as ws:
                payload = json.loads(await ws.recv())
                reached = server.inject(Fault(FaultKind.MALFORMED_JSON)).connections
            return server.port, payload, reached
        finally:
            await server.close()

    port, payload, reached = asyncio.run(scenario())
    assert port > 0
    assert payload["s"] == "BTCUSDT"
    assert reached == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_health(url: str, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "replay process exited early"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def test_run_replay_serves_settings_port_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "TP_REPLAY_PORT": str(port), "TP_STATE_DIR": str(tmp_path)}
    code = (
        "from trading_platform.replay import run_replay; from trading_platform.settings import Settings; "
        "run_replay(Settings(), rate_per_symbol=100.0)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_for_health(f"http://127.0.0.1:{port}/_replay/health", process)
        with connect(f"ws://127.0.0.1:{port}/binance/stream?streams=ethusdt@trade") as ws:
            assert json.loads(ws.recv(timeout=5))["data"]["s"] == "ETHUSDT"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
