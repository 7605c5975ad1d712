"""Fault injection: each kind reaches the client as documented and stays out of the trade ledger."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from trading_platform.replay import Fault, FaultKind, ReplayServer
from trading_platform_tests.replay.conftest import combined_url, read_until_reply, recv_json, request


def drain_with_unsubscribe(ws: ClientConnection, streams: list[str]) -> list[str]:
    """Unsubscribe and return every raw frame received before the reply."""
    ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": streams, "id": 99}))
    frames: list[str] = []
    while True:
        text = str(ws.recv(timeout=5))
        if text == '{"result":null,"id":99}':
            return frames
        frames.append(text)


def parse(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def test_malformed_json_frames_are_sent_and_not_in_the_ledger(replay: ReplayServer) -> None:
    streams = ["btcusdt@trade"]
    with connect(combined_url(replay, *streams)) as ws:
        frames = [str(ws.recv(timeout=5))]
        result = replay.inject(Fault(FaultKind.MALFORMED_JSON, count=2))
        frames += drain_with_unsubscribe(ws, streams)
    assert result.connections == 1
    assert sum(parse(text) is None for text in frames) == 2
    valid = [doc for doc in map(parse, frames) if doc is not None]
    assert replay.ledger.count("binance") == len(valid)
    assert replay.faults.get(FaultKind.MALFORMED_JSON) == 2


@pytest.mark.parametrize(
    ("variant", "field", "value"), [("price_object", "p", {"x": 1}), ("trade_id_string", "t", "abc")]
)
def test_wrong_typed_trade_frame(replay: ReplayServer, variant: Any, field: str, value: object) -> None:
    streams = ["ethusdt@trade"]
    with connect(combined_url(replay, *streams)) as ws:
        recv_json(ws)
        replay.inject(Fault(FaultKind.WRONG_TYPE, variant=variant))
        frames = [parse(text) for text in drain_with_unsubscribe(ws, streams)]
    bad = [f for f in frames if f["data"][field] == value]
    assert len(bad) == 1 and bad[0]["stream"] == "ethusdt@trade"
    assert replay.faults.get(FaultKind.WRONG_TYPE) == 1
    assert replay.ledger.frames("binance") == len(frames)  # everything else, nothing from the fault


def test_unknown_symbol_trade(replay: ReplayServer) -> None:
    with connect(combined_url(replay, "btcusdt@trade")) as ws:
        recv_json(ws)  # the server has registered this connection
        replay.inject(Fault(FaultKind.UNKNOWN_SYMBOL, exchange="binance"))
        frames = [parse(text) for text in drain_with_unsubscribe(ws, ["btcusdt@trade"])]
    unknown = [f for f in frames if f["data"]["s"] == "ZZZUSDT"]
    assert len(unknown) == 1 and unknown[0]["stream"] == "zzzusdt@trade"
    assert "ZZZUSDT" not in replay.ledger.counts("binance")


def test_drop_connections_closes_without_handshake(replay: ReplayServer) -> None:
    with connect(combined_url(replay, "btcusdt@trade")) as ws:
        recv_json(ws)
        assert replay.inject(Fault(FaultKind.DROP_CONNECTIONS)).connections == 1
        with pytest.raises(ConnectionClosedError) as closed:
            while True:
                ws.recv(timeout=5)
    assert closed.value.rcvd is None  # no close frame: the TCP connection just died
    assert replay.faults.get(FaultKind.DROP_CONNECTIONS) == 1


def test_refuse_connections_resets_then_recovers(replay: ReplayServer) -> None:
    # Long enough that the first attempt lands inside the window on a loaded host (0.5 s did not).
    replay.inject(Fault(FaultKind.REFUSE_CONNECTIONS, seconds=2.0))
    refused_at = time.monotonic()
    with pytest.raises((InvalidHandshake, OSError)):
        connect(combined_url(replay, "btcusdt@trade"), open_timeout=2)
    time.sleep(max(0.0, refused_at + 2.1 - time.monotonic()))
    with connect(combined_url(replay, "btcusdt@trade")) as ws:
        assert recv_json(ws)["data"]["s"] == "BTCUSDT"
    assert replay.faults.get(FaultKind.REFUSE_CONNECTIONS) == 1


def test_refuse_connections_with_http_503(replay: ReplayServer) -> None:
    replay.inject(Fault(FaultKind.REFUSE_CONNECTIONS, seconds=5, mode="http_503"))
    with pytest.raises(InvalidStatus) as refused:
        connect(combined_url(replay))
    assert refused.value.response.status_code == 503


def test_server_shutdown_event_then_close(replay: ReplayServer) -> None:
    with connect(combined_url(replay, "btcusdt@trade")) as ws:
        recv_json(ws)
        replay.inject(Fault(FaultKind.SERVER_SHUTDOWN))
        seen: list[Any] = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                seen.append(recv_json(ws))
    assert seen[-1]["stream"] == "!serverShutdown" and seen[-1]["data"]["e"] == "serverShutdown"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


def test_frame_fault_reaches_every_open_connection(replay: ReplayServer) -> None:
    with connect(combined_url(replay, "btcusdt@trade")) as a, connect(f"{replay.ws_base_url}/binance/ws") as b:
        recv_json(a)  # both sessions are registered once they have sent something
        request(b, "LIST_SUBSCRIPTIONS")
        read_until_reply(b, 1)  # b's session is registered once it answers
        assert replay.inject(Fault(FaultKind.MALFORMED_JSON)).connections == 2


def test_book_faults_reach_only_the_exchanges_they_make_sense_for(replay: ReplayServer) -> None:
    assert replay.inject(Fault(FaultKind.SEQUENCE_GAP)).exchanges == ["binance", "coinbase"]
    assert replay.inject(Fault(FaultKind.BAD_CHECKSUM)).exchanges == ["kraken"]
    assert replay.inject(Fault(FaultKind.SERVER_SHUTDOWN)).exchanges == ["binance"]


@pytest.mark.parametrize(
    "fault",
    [
        Fault(FaultKind.BAD_CHECKSUM, exchange="binance"),
        Fault(FaultKind.SEQUENCE_GAP, exchange="kraken"),
        Fault(FaultKind.SERVER_SHUTDOWN, exchange="coinbase"),
        Fault(FaultKind.SEQUENCE_GAP, exchange="binance", symbol="FOOUSDT"),
    ],
)
def test_book_fault_aimed_where_it_makes_no_sense_is_refused(replay: ReplayServer, fault: Fault) -> None:
    with pytest.raises(ValueError):
        replay.inject(fault)


def test_frame_faults_reach_every_exchange_with_connections(replay: ReplayServer) -> None:
    with (
        connect(combined_url(replay, "btcusdt@trade")) as binance,
        connect(f"{replay.ws_base_url}/kraken/v2") as kraken,
    ):
        recv_json(binance)
        recv_json(kraken)  # status: the session is registered
        result = replay.inject(Fault(FaultKind.UNKNOWN_SYMBOL))
    assert result.exchanges == ["binance", "coinbase", "kraken"] and result.connections == 2
