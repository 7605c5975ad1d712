"""Binance protocol over real WebSocket connections: URLs, frame format, live requests, limits."""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from trading_platform.replay import ReplayServer
from trading_platform_tests.replay.conftest import combined_url, connection_id, read_until_reply, recv_json, request

TRADE_KEYS = ["e", "E", "s", "t", "p", "q", "T", "m", "M"]


def test_combined_stream_frames_have_the_exact_trade_format(replay: ReplayServer) -> None:
    connected_ms = time.time() * 1000
    with connect(combined_url(replay, "btcusdt@trade", "dogeusdt@trade")) as ws:
        frames = [recv_json(ws) for _ in range(60)]
    read_ms = time.time() * 1000
    decimals = {"BTCUSDT": 2, "DOGEUSDT": 6}
    for frame in frames:
        assert list(frame) == ["stream", "data"]
        data = frame["data"]
        assert list(data) == TRADE_KEYS
        assert data["e"] == "trade"
        assert frame["stream"] == data["s"].lower() + "@trade"
        assert data["s"] in decimals
        assert re.fullmatch(rf"\d+\.\d{{{decimals[data['s']]}}}", data["p"])
        assert re.fullmatch(r"\d+\.\d{5,8}", data["q"])
        assert float(data["p"]) > 0 and float(data["q"]) > 0
        assert type(data["t"]) is int and type(data["E"]) is int and type(data["T"]) is int
        # Event time is the server's clock while we were connected (however slow a loaded machine is).
        assert data["T"] <= data["E"] and connected_ms - 1_000 <= data["E"] <= read_ms + 1_000
        assert type(data["m"]) is bool and data["M"] is True


def test_only_requested_symbols_arrive(replay: ReplayServer) -> None:
    with connect(combined_url(replay, "ethusdt@trade")) as ws:
        symbols = {recv_json(ws)["data"]["s"] for _ in range(40)}
    assert symbols == {"ETHUSDT"}


def test_raw_stream_path_sends_unwrapped_payloads(replay: ReplayServer) -> None:
    with connect(f"{replay.ws_base_url}/binance/ws/solusdt@trade") as ws:
        payload = recv_json(ws)
    assert list(payload) == TRADE_KEYS and payload["s"] == "SOLUSDT"


def test_trade_ids_increase_by_one_and_prices_stay_positive(replay: ReplayServer) -> None:
    with connect(combined_url(replay, "btcusdt@trade", "xrpusdt@trade", "arbusdt@trade")) as ws:
        frames = [recv_json(ws)["data"] for _ in range(150)]
    ids: dict[str, list[int]] = defaultdict(list)
    for data in frames:
        ids[data["s"]].append(data["t"])
        assert float(data["p"]) > 0
    for symbol_ids in ids.values():
        assert symbol_ids == list(range(symbol_ids[0], symbol_ids[0] + len(symbol_ids)))


def test_live_subscribe_replies_then_streams(replay: ReplayServer) -> None:
    with connect(combined_url(replay)) as ws:
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.2)  # nothing subscribed yet
        request(ws, "SUBSCRIBE", ["ethusdt@trade"], request_id=1)
        assert recv_json(ws) == {"result": None, "id": 1}
        assert recv_json(ws)["data"]["s"] == "ETHUSDT"


def test_unsubscribe_drains_exactly_what_the_ledger_recorded(replay: ReplayServer) -> None:
    streams = ["btcusdt@trade", "ethusdt@trade"]
    with connect(combined_url(replay, *streams)) as ws:
        own_id = connection_id(ws)
        received = [recv_json(ws) for _ in range(30)]
        request(ws, "UNSUBSCRIBE", streams, request_id=9)
        before_reply, reply = read_until_reply(ws, 9)
        received += before_reply
        assert reply == {"result": None, "id": 9}
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)  # nothing after the reply
    per_symbol = Counter(frame["data"]["s"] for frame in received)
    assert replay.ledger.connection_counts(own_id) == {"binance": dict(per_symbol)}
    assert replay.ledger.trades("binance") == {(f["data"]["s"], str(f["data"]["t"])) for f in received}


def test_list_subscriptions_in_subscription_order(replay: ReplayServer) -> None:
    with connect(combined_url(replay, "btcusdt@trade", "ethusdt@trade")) as ws:
        request(ws, "SUBSCRIBE", ["foousdt@trade", "btcusdt@trade"], request_id=2)
        read_until_reply(ws, 2)
        request(ws, "UNSUBSCRIBE", ["ethusdt@trade"], request_id=3)
        read_until_reply(ws, 3)
        request(ws, "LIST_SUBSCRIPTIONS", request_id="abc")
        _, reply = read_until_reply(ws, "abc")
    assert reply == {"result": ["btcusdt@trade", "foousdt@trade"], "id": "abc"}


def test_unknown_symbol_stream_is_accepted_but_silent(replay: ReplayServer) -> None:
    with connect(combined_url(replay)) as ws:
        request(ws, "SUBSCRIBE", ["foousdt@trade", "foousdt@depth", "btcusdt@kline_1m"], request_id=4)
        assert recv_json(ws) == {"result": None, "id": 4}
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)


def test_set_property_combined_wraps_raw_connection(replay: ReplayServer) -> None:
    with connect(f"{replay.ws_base_url}/binance/ws") as ws:
        request(ws, "GET_PROPERTY", ["combined"], request_id=1)
        assert recv_json(ws) == {"result": False, "id": 1}
        request(ws, "SET_PROPERTY", ["combined", True], request_id=2)
        assert recv_json(ws) == {"result": None, "id": 2}
        request(ws, "SUBSCRIBE", ["btcusdt@trade"], request_id=3)
        assert recv_json(ws) == {"result": None, "id": 3}
        assert recv_json(ws)["stream"] == "btcusdt@trade"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("{not json", {"error": {"code": 3, "msg": "Invalid JSON: expected value at line 1 column 2"}, "id": None}),
        (
            '{"method":"PING","id":5}',
            {
                "error": {
                    "code": 2,
                    "msg": "Invalid request: unknown variant `PING`, "
                    "expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, "
                    "`SET_PROPERTY`, `GET_PROPERTY`",
                },
                "id": 5,
            },
        ),
        (
            '{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":true}',
            {"error": {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}, "id": None},
        ),
        (
            '{"method":"SET_PROPERTY","params":["colour",true],"id":6}',
            {"error": {"code": 0, "msg": "Unknown property"}, "id": 6},
        ),
    ],
    ids=["bad-json", "unknown-method", "bad-id", "unknown-property"],
)
def test_bad_requests_get_binance_errors(replay: ReplayServer, message: str, expected: object) -> None:
    with connect(combined_url(replay)) as ws:
        ws.send(message)
        assert recv_json(ws) == expected


def test_subscribe_beyond_1024_streams_is_refused(replay: ReplayServer) -> None:
    with connect(combined_url(replay, "btcusdt@trade")) as ws:
        request(ws, "SUBSCRIBE", [f"s{i}@trade" for i in range(1024)], request_id=1)
        _, reply = read_until_reply(ws, 1)
        assert reply["error"]["code"] == 2
        request(ws, "LIST_SUBSCRIPTIONS", request_id=2)
        _, listing = read_until_reply(ws, 2)
    assert listing["result"] == ["btcusdt@trade"]


def test_url_with_more_than_1024_streams_is_rejected(replay: ReplayServer) -> None:
    with pytest.raises(InvalidStatus) as rejected:
        connect(combined_url(replay, *(str(i) for i in range(1025))))
    assert rejected.value.response.status_code == 400


def test_unknown_path_is_404(replay: ReplayServer) -> None:
    with pytest.raises(InvalidStatus) as rejected:
        connect(f"{replay.ws_base_url}/binance/nope")
    assert rejected.value.response.status_code == 404


def test_more_than_five_messages_per_second_disconnects(replay: ReplayServer) -> None:
    with connect(combined_url(replay)) as ws:
        for i in range(6):
            request(ws, "LIST_SUBSCRIPTIONS", request_id=i)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
