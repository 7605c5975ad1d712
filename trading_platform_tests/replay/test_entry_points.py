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
from trading_platform_tests.support import wait_for


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


def _history(port: int) -> dict[str, dict[str, tuple[int, int]]]:
    """(first_id, last_id) of each symbol's executed trades, per exchange, from the admin API."""
    documents = {}
    for exchange in ("binance", "coinbase", "kraken"):
        url = f"http://127.0.0.1:{port}/_replay/history?exchange={exchange}&trades=0"
        with urllib.request.urlopen(url, timeout=5) as response:
            documents[exchange] = {native: (doc["first_id"], doc["last_id"]) for native, doc in
                                   json.loads(response.read()).items()}
    return documents


def test_a_restarted_feed_continues_the_trade_ids_it_stopped_at(tmp_path: Path) -> None:
    """make run, Ctrl-C, make run: the markets go on from their last trade, as an exchange's would,
    instead of starting at random ids the platform would take for billions of lost trades."""
    port = free_port()
    env = {**os.environ, "TP_REPLAY_PORT": str(port), "TP_STATE_DIR": str(tmp_path)}
    code = ("from trading_platform.replay import run_replay; from trading_platform.settings import Settings; "
            "run_replay(Settings(), rate_per_symbol=50.0)")
    resume_file = tmp_path / "replay" / "resume.json"

    def serve() -> subprocess.Popen[bytes]:
        process = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wait_for_health(f"http://127.0.0.1:{port}/_replay/health", process)
        return process

    first = serve()
    try:
        time.sleep(0.5)
        first.send_signal(signal.SIGINT)  # Ctrl-C in make run's terminal
        assert first.wait(timeout=10) == 0
    finally:
        first.kill()
    stopped = {ex: sorted((trades[0][0], trades[-1][0]) for trades in symbols.values())
               for ex, symbols in json.loads(resume_file.read_text()).items()}
    second = serve()
    try:
        # Each symbol's history goes on from the stopped market's newest trades, ids continuing after them
        # (the history is keyed by native symbol, the resume point by configured symbol).
        def moved_on() -> dict[str, list[tuple[int, int]]] | None:
            history = {ex: sorted(symbols.values()) for ex, symbols in _history(port).items()}
            traded = all(any(now_last > last for (_, now_last), (_, last) in zip(history[ex], ranges, strict=True))
                         for ex, ranges in stopped.items())
            return history if traded else None
        history = wait_for(moved_on, 20, "each exchange's market to trade again", interval_s=0.2)
        for exchange, ranges in stopped.items():
            assert [first for first, _ in history[exchange]] == [first for first, _ in ranges], exchange
            assert all(now_last >= last for (_, now_last), (_, last) in zip(history[exchange], ranges, strict=True))
        assert not resume_file.exists()  # taken: after a crash the next start has no stale point to reuse
    finally:
        second.kill()
        second.wait()
