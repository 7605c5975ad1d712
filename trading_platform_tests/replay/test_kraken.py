"""Kraken v2 protocol: status, acks, ping, heartbeats, trades, books with checksums on every message, faults."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from trading_platform.replay import Fault, FaultKind, ReplayServer
from trading_platform_tests.replay.clients import ClientBook
from trading_platform_tests.replay.conftest import connection_id, recv_json

RFC3339_US = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"


def send(ws: ClientConnection, method: str, req_id: int | None = None, **params: Any) -> None:
    doc: dict[str, Any] = {"method": method}
    if params:
        doc["params"] = params
    if req_id is not None:
        doc["req_id"] = req_id
    ws.send(json.dumps(doc))


def until_method(ws: ClientConnection, method: str) -> tuple[list[str], Any]:
    """Raw frames before the next reply with ``method``, and that reply."""
    before: list[str] = []
    while True:
        text = str(ws.recv(timeout=5))
        message = json.loads(text)
        if message.get("method") == method:
            return before, message
        before.append(text)


@pytest.fixture
def kr(replay: ReplayServer) -> Iterator[ClientConnection]:
    with connect(f"{replay.ws_base_url}/kraken/v2") as ws:
        status = recv_json(ws)
        assert status["channel"] == "status"
        yield ws


class KrakenBook:
    """A v2 client book: apply all levels, truncate to depth, verify the checksum."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.book = ClientBook()
        self.checked = 0

    def apply(self, text: str) -> bool:
        """Apply one book frame; returns whether its checksum matched."""
        message = json.loads(text, parse_float=Decimal)
        assert message["channel"] == "book" and message["type"] in ("snapshot", "update")
        (data,) = message["data"]
        assert list(data) == ["symbol", "bids", "asks", "checksum", "timestamp"]
        if message["type"] == "snapshot":
            self.book = ClientBook()
        for is_bid, key in ((True, "bids"), (False, "asks")):
            for level in data[key]:
                assert list(level) == ["price", "qty"]
                self.book.set(is_bid, str(level["price"]), str(level["qty"]))
        self.book.truncate(self.depth)
        self.checked += 1
        return bool(self.book.checksum() == data["checksum"])


def test_status_on_connect(replay: ReplayServer) -> None:
    with connect(f"{replay.ws_base_url}/kraken/v2") as ws:
        status = recv_json(ws)
        own_id = connection_id(ws)
    assert status == {
        "channel": "status",
        "type": "update",
        "data": [{"api_version": "v2", "connection_id": own_id, "system": "online", "version": "2.0.10"}],
    }


def test_subscribe_acks_one_per_symbol_with_req_id(kr: ClientConnection) -> None:
    send(kr, "subscribe", 7, channel="book", symbol=["BTC/USD", "ETH/USD"], depth=25)
    acks = [until_method(kr, "subscribe")[1] for _ in range(2)]
    for ack, pair in zip(acks, ["BTC/USD", "ETH/USD"], strict=True):
        assert list(ack) == ["method", "result", "success", "time_in", "time_out", "req_id"]
        assert ack["result"] == {"channel": "book", "symbol": pair, "depth": 25, "snapshot": True}
        assert ack["success"] is True and ack["req_id"] == 7
        assert re.fullmatch(RFC3339_US, ack["time_in"]) and ack["time_in"] <= ack["time_out"]
    send(kr, "unsubscribe", 8, channel="book", symbol=["BTC/USD"], depth=25)
    ack = until_method(kr, "unsubscribe")[1]
    assert ack["result"] == {"channel": "book", "symbol": "BTC/USD", "depth": 25} and ack["success"] is True


def test_ping_pong(kr: ClientConnection) -> None:
    send(kr, "ping", 101)
    pong = recv_json(kr)
    assert list(pong) == ["method", "time_in", "time_out", "req_id"]
    assert (pong["method"], pong["req_id"]) == ("pong", 101)
    send(kr, "ping")
    assert "req_id" not in recv_json(kr)


def test_heartbeat_once_subscribed(kr: ClientConnection) -> None:
    send(kr, "subscribe", channel="trade", symbol=["DOGE/USD"], snapshot=False)
    until_method(kr, "subscribe")
    while (message := recv_json(kr)).get("channel") != "heartbeat":
        assert message["channel"] == "trade"
    assert message == {"channel": "heartbeat"}


def test_trade_snapshot_of_50_then_updates(replay: ReplayServer, kr: ClientConnection) -> None:
    send(kr, "subscribe", 1, channel="trade", symbol=["BTC/USD"])
    until_method(kr, "subscribe")
    texts = [str(kr.recv(timeout=5)) for _ in range(6)]
    send(kr, "unsubscribe", 2, channel="trade", symbol=["BTC/USD"])
    texts += until_method(kr, "unsubscribe")[0]
    messages = [json.loads(t) for t in texts if '"channel":"trade"' in t]
    assert messages[0]["type"] == "snapshot" and len(messages[0]["data"]) == 50
    assert {m["type"] for m in messages[1:]} == {"update"}
    trades = [trade for m in messages for trade in m["data"]]
    for trade in trades:
        assert list(trade) == ["symbol", "side", "price", "qty", "ord_type", "trade_id", "timestamp"]
        assert trade["symbol"] == "BTC/USD" and trade["side"] in ("buy", "sell")
        assert trade["ord_type"] in ("market", "limit") and type(trade["trade_id"]) is int
        assert re.fullmatch(RFC3339_US, trade["timestamp"])
    for text in texts:  # numbers keep the pair's fixed decimals
        for price in re.findall(r'"price":([0-9.]+)', text):
            assert re.fullmatch(r"\d+\.\d{2}", price)
    ids = [t["trade_id"] for t in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert replay.ledger.trades("kraken") == {("BTC/USD", str(i)) for i in ids}


def test_book_checksums_verify_on_every_message_and_match_the_server(replay: ReplayServer) -> None:
    depths = {"BTC/USD": 10, "ETH/USD": 25, "DOGE/USD": 1000}
    with connect(f"{replay.ws_base_url}/kraken/v2") as ws:
        for pair, depth in depths.items():
            send(ws, "subscribe", channel="book", symbol=[pair], depth=depth)
        books = {pair: KrakenBook(depth) for pair, depth in depths.items()}

        def consume(texts: list[str]) -> None:
            for text in texts:
                if text.startswith('{"channel":"book"'):
                    pair = json.loads(text)["data"][0]["symbol"]
                    assert books[pair].apply(text), text

        consume([str(ws.recv(timeout=5)) for _ in range(60)])
        replay.pause()
        try:
            send(ws, "ping", 1)
            consume(until_method(ws, "pong")[0])
            servers = {pair: replay.book("kraken", pair.replace("/", "-")) for pair in depths}
        finally:
            replay.resume()
    for pair, depth in depths.items():
        assert books[pair].checked > 3
        assert books[pair].book.side(True) == servers[pair]["bids"][:depth]
        assert books[pair].book.side(False) == servers[pair]["asks"][:depth]
    assert len(books["DOGE/USD"].book.bids) >= 50  # depth 1000 holds the whole book


def test_book_numbers_print_fixed_decimals_with_trailing_zeros(kr: ClientConnection) -> None:
    send(kr, "subscribe", channel="book", symbol=["ETH/USD"])
    before, _ = until_method(kr, "subscribe")
    snapshot = str(kr.recv(timeout=5))
    assert not before and '"type":"snapshot"' in snapshot
    prices = re.findall(r'"price":([^,}]+)', snapshot)
    qtys = re.findall(r'"qty":([^,}]+)', snapshot)
    assert len(prices) == len(qtys) == 20
    assert all(re.fullmatch(r"\d+\.\d{2}", p) for p in prices)
    assert all(re.fullmatch(r"\d+\.\d{7}", q) for q in qtys)


def test_bad_checksum_once_then_a_resubscribe_snapshot_is_right(replay: ReplayServer, kr: ClientConnection) -> None:
    send(kr, "subscribe", channel="book", symbol=["SOL/USD"])
    until_method(kr, "subscribe")
    book = KrakenBook(10)
    assert book.apply(str(kr.recv(timeout=5)))
    result = replay.inject(Fault(FaultKind.BAD_CHECKSUM, exchange="kraken", symbol="SOL/USD"))
    outcomes: list[bool] = []
    while len(outcomes) < 6:
        text = str(kr.recv(timeout=5))
        if text.startswith('{"channel":"book"'):
            outcomes.append(book.apply(text))
    assert result.connections == 1
    assert outcomes.count(False) == 1  # exactly one corrupted checksum; the levels were right
    send(kr, "unsubscribe", channel="book", symbol=["SOL/USD"])
    until_method(kr, "unsubscribe")
    send(kr, "subscribe", channel="book", symbol=["SOL/USD"])
    until_method(kr, "subscribe")
    fresh = KrakenBook(10)
    assert fresh.apply(str(kr.recv(timeout=5)))
    assert replay.faults.get(FaultKind.BAD_CHECKSUM, "kraken") == 1


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"channel": "book", "symbol": ["FOO/USD"]}, "Currency pair not supported FOO/USD"),
        ({"channel": "book", "symbol": ["BTC/USD"], "depth": 7}, "Invalid depth 7"),
        ({"channel": "ohlc", "symbol": ["BTC/USD"]}, "Channel not supported"),
    ],
)
def test_subscribe_errors(kr: ClientConnection, params: dict[str, Any], error: str) -> None:
    send(kr, "subscribe", 3, **params)
    reply = until_method(kr, "subscribe")[1]
    assert reply["success"] is False and reply["error"].startswith(error) and reply["req_id"] == 3


def test_subscribing_twice_is_refused(kr: ClientConnection) -> None:
    send(kr, "subscribe", channel="trade", symbol=["BTC/USD"], snapshot=False)
    until_method(kr, "subscribe")
    send(kr, "subscribe", channel="trade", symbol=["BTC/USD"])
    reply = until_method(kr, "subscribe")[1]
    assert (reply["success"], reply["error"], reply["symbol"]) == (False, "Already subscribed", "BTC/USD")


def test_instrument_snapshot_gives_precisions(kr: ClientConnection) -> None:
    send(kr, "subscribe", channel="instrument")
    until_method(kr, "subscribe")
    pairs = {p["symbol"]: p for p in recv_json(kr)["data"]["pairs"]}
    assert (pairs["BTC/USD"]["price_precision"], pairs["BTC/USD"]["qty_precision"]) == (2, 7)


def test_unsubscribe_drains_before_the_ack(kr: ClientConnection) -> None:
    send(kr, "subscribe", channel="book", symbol=["BTC/USD"])
    send(kr, "subscribe", channel="trade", symbol=["BTC/USD"])
    for _ in range(6):
        kr.recv(timeout=5)
    send(kr, "unsubscribe", channel="book", symbol=["BTC/USD"])
    send(kr, "unsubscribe", channel="trade", symbol=["BTC/USD"])
    until_method(kr, "unsubscribe")
    until_method(kr, "unsubscribe")
    while True:  # only heartbeats may follow: nothing is subscribed any more
        try:
            assert json.loads(kr.recv(timeout=0.3)) == {"channel": "heartbeat"}
        except TimeoutError:
            break


@pytest.mark.parametrize(
    ("fault", "marker"),
    [
        (Fault(FaultKind.WRONG_TYPE, exchange="kraken"), '"price":{"x":1}'),
        (Fault(FaultKind.WRONG_TYPE, exchange="kraken", variant="trade_id_string"), '"trade_id":"abc"'),
        (Fault(FaultKind.UNKNOWN_SYMBOL, exchange="kraken"), '"symbol":"ZZZ/USD"'),
    ],
)
def test_frame_faults(replay: ReplayServer, kr: ClientConnection, fault: Fault, marker: str) -> None:
    send(kr, "subscribe", channel="trade", symbol=["BTC/USD"], snapshot=False)
    until_method(kr, "subscribe")
    replay.inject(fault)
    # Frames already queued when the fault was injected go out untouched (a loaded machine queues several):
    # read up to the faulty one, then a few more, which must be clean again.
    texts: list[str] = []
    while not any(marker in t for t in texts):
        assert len(texts) < 50, "the fault never reached the wire"
        texts.append(str(kr.recv(timeout=5)))
    texts += [str(kr.recv(timeout=5)) for _ in range(3)]
    assert sum(marker in t for t in texts) == 1
    assert all(json.loads(t) for t in texts)


def test_malformed_json_fault(replay: ReplayServer, kr: ClientConnection) -> None:
    send(kr, "subscribe", channel="trade", symbol=["BTC/USD"], snapshot=False)
    until_method(kr, "subscribe")
    replay.inject(Fault(FaultKind.MALFORMED_JSON, exchange="kraken", count=2))
    bad = 0
    for _ in range(6):
        try:
            json.loads(kr.recv(timeout=5))
        except ValueError:
            bad += 1
    assert bad == 2


def test_trade_ids_are_sequential_per_pair(kr: ClientConnection) -> None:
    send(kr, "subscribe", channel="trade", symbol=["BTC/USD", "ETH/USD"], snapshot=False)
    until_method(kr, "subscribe")
    until_method(kr, "subscribe")
    trades = [t for _ in range(30) for t in recv_json(kr).get("data", [])]
    for pair in ("BTC/USD", "ETH/USD"):
        ids = [t["trade_id"] for t in trades if t["symbol"] == pair]
        assert all(b == a + 1 for a, b in itertools.pairwise(ids))


def test_sequence_gap_is_refused_for_kraken(replay: ReplayServer) -> None:
    with pytest.raises(ValueError, match="not supported on kraken"):
        replay.inject(Fault(FaultKind.SEQUENCE_GAP, exchange="kraken"))
