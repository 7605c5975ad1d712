"""Recording what the server sends and replaying captures: round trips, pacing, REST answers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from trading_platform.config import ExchangesFile
from trading_platform.replay import ReplayServer, running_replay_server
from trading_platform.replay.capture import parse_line
from trading_platform_tests.replay.clients import http_get
from trading_platform_tests.replay.conftest import TEST_RATE
from trading_platform_tests.support import wait_for


def replayed(exchanges: ExchangesFile, capture: Path, exchange: str, speed: float = 0.0) -> Iterator[ReplayServer]:
    with running_replay_server(
        exchanges, rate_per_symbol=TEST_RATE, seed=1, capture=capture, capture_exchange=exchange, speed=speed
    ) as server:
        yield server


def read_frames(url: str, count: int, send: str | None = None) -> list[str]:
    with connect(url) as ws:
        if send is not None:
            ws.send(send)
        return [str(ws.recv(timeout=5)) for _ in range(count)]


@pytest.mark.parametrize("record_format", ["raw", "cryptofeed"])
def test_kraken_frames_recorded_then_replayed_identically(
    exchanges: ExchangesFile, tmp_path: Path, record_format: str
) -> None:
    capture = tmp_path / "kraken.txt"
    pairs = ["BTC/USD", "ETH/USD", "SOL/USD", "XRP/USD"]
    subscribe = json.dumps({"method": "subscribe", "params": {"channel": "book", "symbol": pairs}})
    with running_replay_server(
        exchanges, rate_per_symbol=TEST_RATE, seed=2, record={"kraken": capture}, record_format=record_format
    ) as live:
        sent = read_frames(f"{live.ws_base_url}/kraken/v2", 40, subscribe)
    lines = capture.read_text().splitlines()
    assert len(lines) >= 40  # the recorder may have seen a few more before the client hung up
    if record_format == "raw":
        assert lines[:40] == sent
    else:
        assert lines[0].startswith("/kraken/v2 <-> ")
        assert [parse_line(line).text for line in lines[1:41]] == sent
    for server in replayed(exchanges, capture, "kraken"):
        assert read_frames(f"{server.ws_base_url}/kraken/v2", 40, subscribe) == sent
        assert read_frames(f"{server.ws_base_url}/kraken/v2", 40) == sent  # every connection from the start


def test_timestamps_drive_the_pacing(exchanges: ExchangesFile, tmp_path: Path) -> None:
    capture = tmp_path / "coinbase.txt"
    capture.write_text(
        'ws://127.0.0.1/x <-> 100.0\n100.000: {"n":1}\n'
        'ws://127.0.0.1/x <- 100.1: {"type":"subscribe"}\n100.500: {"n":2}\n'
    )
    for server in replayed(exchanges, capture, "coinbase", speed=1.0):
        started = time.monotonic()
        assert read_frames(f"{server.ws_base_url}/coinbase", 2) == ['{"n":1}', '{"n":2}']
        assert time.monotonic() - started >= 0.45  # the recorded half second, at speed 1
    for server in replayed(exchanges, capture, "coinbase", speed=0.0):
        assert read_frames(f"{server.ws_base_url}/coinbase", 2) == ['{"n":1}', '{"n":2}']


def test_raw_lines_and_unparseable_frames_pass_through(exchanges: ExchangesFile, tmp_path: Path) -> None:
    capture = tmp_path / "binance.txt"
    capture.write_text('{"a":1}\n\n{"cut": tr\n[1,2]\n')
    for server in replayed(exchanges, capture, "binance"):
        assert read_frames(f"{server.ws_base_url}/binance/stream?streams=x", 3) == ['{"a":1}', '{"cut": tr', "[1,2]"]


def test_recorded_rest_answers_are_served_in_order(exchanges: ExchangesFile, tmp_path: Path) -> None:
    capture = tmp_path / "binance.txt"
    with running_replay_server(
        exchanges, rate_per_symbol=TEST_RATE, seed=4, record={"binance": capture}, record_format="cryptofeed"
    ) as live:
        url = f"{live.ws_base_url}/binance/stream?streams=btcusdt@depth@100ms"
        rest = f"{live.http_base_url}/binance/api/v3/depth?symbol=BTCUSDT&limit=1000"
        with connect(url) as ws:
            ws.recv(timeout=5)
            first = http_get(rest)[1]
            # A diff already queued before the first answer does not move the book past it: wait for one that does.
            while json.loads(ws.recv(timeout=5))["data"]["u"] <= first["lastUpdateId"]:
                pass
            second = http_get(rest)[1]
    assert first["lastUpdateId"] < second["lastUpdateId"]
    for server in replayed(exchanges, capture, "binance"):
        rest = f"{server.http_base_url}/binance/api/v3/depth?symbol=BTCUSDT&limit=1000"
        assert [http_get(rest)[1] for _ in range(3)] == [first, second, second]
        assert http_get(f"{server.http_base_url}/binance/api/v3/depth?symbol=ETHUSDT")[0] == 404


def test_other_exchanges_stay_synthetic_during_a_capture(exchanges: ExchangesFile, tmp_path: Path) -> None:
    capture = tmp_path / "kraken.txt"
    capture.write_text('{"channel":"heartbeat"}\n')
    for server in replayed(exchanges, capture, "kraken"):
        frame = json.loads(read_frames(f"{server.ws_base_url}/binance/ws/btcusdt@trade", 1)[0])
        assert frame["s"] == "BTCUSDT"
        # The client has hung up; the server learns it a moment later (its close handshake runs on its loop).
        wait_for(lambda srv=server: srv.connections() == [], 10, "the server to see the connection closed")


def test_capture_options_are_checked(exchanges: ExchangesFile, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="go together"), running_replay_server(exchanges, capture=tmp_path / "x"):
        pass
    missing = tmp_path / "x.txt"
    with (
        pytest.raises(ValueError, match="not found"),
        running_replay_server(exchanges, capture=missing, capture_exchange="kraken"),
    ):
        pass


def test_parse_line_formats() -> None:
    assert parse_line('{"a":1}\n').text == '{"a":1}'
    line = parse_line('1700000000.25: {"a":1}')
    assert (line.kind, line.timestamp, line.text) == ("frame", 1700000000.25, '{"a":1}')
    rest = parse_line('http://127.0.0.1:9555/binance/api/v3/depth?symbol=BTCUSDT -> 17.5: {"lastUpdateId":1}')
    assert (rest.kind, rest.url, rest.text) == (
        "rest",
        "http://127.0.0.1:9555/binance/api/v3/depth?symbol=BTCUSDT",
        '{"lastUpdateId":1}',
    )
    assert parse_line("ws://127.0.0.1/kraken/v2 <-> 17.5").kind == "skip"
    assert parse_line('ws://127.0.0.1/kraken/v2 <- 17.5: {"method":"ping"}').kind == "skip"
