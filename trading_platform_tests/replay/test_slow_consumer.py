"""When the replay server drops a connection, over real connections: a client that stops reading is dropped as a slow
consumer, as exchanges do; a client that reads everything is kept while the server itself falls behind (frames
waiting for its own loop), up to a bound on the server's memory."""

from __future__ import annotations

import logging
import socket
import time
from contextlib import AbstractContextManager

import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import ClientConnection, connect

from trading_platform.config import ExchangesFile
from trading_platform.exchanges.binance import Binance
from trading_platform.replay import ReplayServer, outbox, running_replay_server
from trading_platform_tests.replay.conftest import combined_url
from trading_platform_tests.support import wait_for


def _every_trade_stream(replay: ReplayServer, exchanges: ExchangesFile) -> str:
    return combined_url(replay, *(f"{Binance.native_symbol(s).lower()}@trade"
                                  for s in exchanges.exchanges["binance"].symbols))


def _read_for(ws: ClientConnection, seconds: float) -> int:
    received = 0
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        ws.recv(timeout=5)
        received += 1
    return received


def _server_far_behind(exchanges: ExchangesFile, max_pending_frames: int) -> AbstractContextManager[ReplayServer]:
    """Each 50 ms tick queues 90-400 frames at once (more in a symbol's burst), before the sender can write any:
    over ``max_pending_frames``, frames waiting for the server's own loop, as on a server whose CPU cannot keep up
    with the rate asked of it."""
    return running_replay_server(exchanges, rate_per_symbol=100.0, seed=7, max_pending_frames=max_pending_frames,
                                 tick_interval=0.05)


def test_a_client_that_stops_reading_is_dropped_as_a_slow_consumer(
        exchanges: ExchangesFile, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox, "SERVER_BEHIND_FACTOR", 1_000)  # only the slow-consumer rule can drop it here
    with running_replay_server(exchanges, rate_per_symbol=500.0, seed=7, max_pending_frames=2_000) as replay:
        # A small receive buffer (set before connecting, so the kernel does not grow it) and a reader that stops
        # taking frames off the socket once one waits unread (max_queue=1): the socket fills within seconds, the
        # server's writes back up, then its queue passes the limit.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)
        sock.connect((replay.host, replay.port))
        with connect(_every_trade_stream(replay, exchanges), sock=sock, max_queue=1):
            try:
                wait_for(lambda: replay.connections(), 10, "the connection to open")
                wait_for(lambda: "slow consumer" in caplog.text, 60, "the server to drop a client that stopped reading")
            finally:
                # The client never reads again, so no closing handshake could finish: hang up instead.
                sock.shutdown(socket.SHUT_RDWR)
        wait_for(lambda: not replay.connections(), 30, "the server to let the connection go")


def test_a_client_that_reads_everything_is_kept_while_the_server_falls_behind(
        exchanges: ExchangesFile, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(outbox, "SERVER_BEHIND_FACTOR", 1_000)  # the bound on the server's memory, out of the way
    # max_queue=None: on leaving, the client's reader keeps taking the frames still coming until the server's close
    # frame behind them (with a bounded queue it would stop reading and wait out its close timeout).
    with _server_far_behind(exchanges, max_pending_frames=50) as replay, \
            connect(_every_trade_stream(replay, exchanges), max_queue=None) as ws:
        received = _read_for(ws, 3.0)
        assert replay.connections(), "the server dropped a client that read everything"
    assert received > 2_000
    assert "slow consumer" not in caplog.text
    assert "this server is behind" in caplog.text


def test_a_server_too_far_behind_its_client_drops_it_to_bound_its_memory(exchanges: ExchangesFile) -> None:
    # SERVER_BEHIND_FACTOR times a limit of 20 is under one tick's frames.
    with _server_far_behind(exchanges, max_pending_frames=20) as replay, \
            connect(_every_trade_stream(replay, exchanges), max_queue=None) as ws, \
            pytest.raises(ConnectionClosedError) as closed:
        _read_for(ws, 10.0)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1013, "server overloaded")
