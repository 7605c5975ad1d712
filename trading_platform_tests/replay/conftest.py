"""Fixtures: a real replay server on 127.0.0.1 (ephemeral port, background thread) per test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection

import trading_platform.config
from trading_platform.config import ExchangesFile, load_exchanges
from trading_platform.replay import CONNECTION_ID_HEADER, ReplayServer, running_replay_server

# Fast enough that every test sees data within a few tens of milliseconds.
TEST_RATE = 200.0


@pytest.fixture(scope="session")
def exchanges() -> ExchangesFile:
    return load_exchanges(Path(trading_platform.config.__file__).parent / "exchanges.yaml")


@pytest.fixture
def replay(exchanges: ExchangesFile) -> Iterator[ReplayServer]:
    with running_replay_server(exchanges, rate_per_symbol=TEST_RATE, seed=7) as server:
        yield server


def combined_url(server: ReplayServer, *streams: str) -> str:
    url = f"{server.ws_base_url}/binance/stream"
    return f"{url}?streams={'/'.join(streams)}" if streams else url


def recv_json(ws: ClientConnection, timeout: float = 5.0) -> Any:
    return json.loads(ws.recv(timeout=timeout))


def request(ws: ClientConnection, method: str, params: list[Any] | None = None, request_id: Any = 1) -> None:
    doc: dict[str, Any] = {"method": method, "id": request_id}
    if params is not None:
        doc["params"] = params
    ws.send(json.dumps(doc))


def read_until_reply(ws: ClientConnection, request_id: Any) -> tuple[list[Any], Any]:
    """Frames received before the reply to ``request_id``, and the reply itself."""
    before: list[Any] = []
    while True:
        message = recv_json(ws)
        is_reply = isinstance(message, dict) and ("result" in message or "error" in message)
        if is_reply and message.get("id") == request_id:
            return before, message
        before.append(message)


def connection_id(ws: ClientConnection) -> int:
    """The server-side id of this connection, as the ledger knows it."""
    assert ws.response is not None
    return int(ws.response.headers[CONNECTION_ID_HEADER])
