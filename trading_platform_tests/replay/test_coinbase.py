"""Coinbase Advanced Trade protocol: envelopes, sequence numbers, channels, snapshots, faults."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from trading_platform.config import ExchangesFile
from trading_platform.replay import Fault, FaultKind, ReplayServer, running_replay_server
from trading_platform_tests.replay.clients import ClientBook
from trading_platform_tests.replay.conftest import TEST_RATE, connection_id, recv_json

ENVELOPE_KEYS = ["channel", "client_id", "timestamp", "sequence_num", "events"]
RFC3339_NS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z"


def subscribe(ws: ClientConnection, channel: str, *products: str, kind: str = "subscribe") -> None:
    doc: dict[str, Any] = {"type": kind, "channel": channel}
    if products:
        doc["product_ids"] = list(products)
    ws.send(json.dumps(doc))


def until_subscriptions(ws: ClientConnection) -> tuple[list[Any], Any]:
    """Messages before the next ``subscriptions`` reply, and the reply."""
    before: list[Any] = []
    while True:
        message = recv_json(ws)
        if message.get("channel") == "subscriptions":
            return before, message
        before.append(message)


@pytest.fixture
def cb(replay: ReplayServer) -> Iterator[ClientConnection]:
    with connect(f"{replay.ws_base_url}/coinbase") as ws:
        yield ws


def test_envelopes_and_sequence_numbers_over_every_message(cb: ClientConnection) -> None:
    subscribe(cb, "heartbeats")
    subscribe(cb, "market_trades", "BTC-USD", "ETH-USD")
    subscribe(cb, "level2", "SOL-USD")
    messages = [recv_json(cb) for _ in range(60)]
    while not any(m["channel"] == "heartbeats" for m in messages):
        messages.append(recv_json(cb))
    assert [m["sequence_num"] for m in messages] == list(range(len(messages)))
    for message in messages:
        assert list(message) == ENVELOPE_KEYS
        assert message["client_id"] == ""
        assert re.fullmatch(RFC3339_NS, message["timestamp"])
        assert isinstance(message["events"], list) and message["events"]
    assert {m["channel"] for m in messages} >= {"subscriptions", "market_trades", "l2_data", "heartbeats"}


def test_heartbeats_count_up_as_integers(cb: ClientConnection) -> None:
    subscribe(cb, "heartbeats")
    until_subscriptions(cb)
    beats = [recv_json(cb) for _ in range(2)]
    assert [b["channel"] for b in beats] == ["heartbeats", "heartbeats"]
    counters = [b["events"][0]["heartbeat_counter"] for b in beats]
    assert all(type(c) is int for c in counters) and counters[1] == counters[0] + 1
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{9} \+0000 UTC m=\+\d+\.\d{9}", beats[0]["events"][0]["current_time"]
    )


def test_subscriptions_reply_lists_everything_subscribed(cb: ClientConnection) -> None:
    subscribe(cb, "market_trades", "BTC-USD")
    subscribe(cb, "heartbeats")
    subscribe(cb, "market_trades", "ETH-USD")
    replies = [until_subscriptions(cb)[1]["events"][0]["subscriptions"] for _ in range(3)]
    assert replies == [
        {"market_trades": ["BTC-USD"]},
        {"market_trades": ["BTC-USD"], "heartbeats": []},
        {"market_trades": ["BTC-USD", "ETH-USD"], "heartbeats": []},
    ]


def test_market_trades_snapshot_then_updates_in_the_ledger(replay: ReplayServer, cb: ClientConnection) -> None:
    own_id = connection_id(cb)
    subscribe(cb, "market_trades", "ETH-USD")
    before, _ = until_subscriptions(cb)
    assert [m["events"][0]["type"] for m in before] == ["snapshot"]
    snapshot = before[0]["events"][0]["trades"]
    assert 0 < len(snapshot) <= 50
    updates = [recv_json(cb) for _ in range(10)]
    subscribe(cb, "market_trades", "ETH-USD", kind="unsubscribe")
    updates += until_subscriptions(cb)[0]
    trades = list(snapshot)
    for message in updates:
        assert message["channel"] == "market_trades"
        (event,) = message["events"]
        assert event["type"] == "update"
        trades += event["trades"]
    for trade in trades:
        assert list(trade) == ["trade_id", "product_id", "price", "size", "side", "time"]
        assert trade["product_id"] == "ETH-USD" and trade["side"] in ("BUY", "SELL")
        assert isinstance(trade["trade_id"], str) and trade["trade_id"].isdigit()
        assert re.fullmatch(r"\d+\.\d{2}", trade["price"]) and re.fullmatch(r"\d+\.\d+", trade["size"])
    ids = [int(t["trade_id"]) for t in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # snapshot, then every later trade, in order
    assert replay.ledger.trades("coinbase") == {("ETH-USD", t["trade_id"]) for t in trades}
    assert replay.ledger.connection_counts(own_id) == {"coinbase": {"ETH-USD": len(trades)}}


def test_snapshot_trades_already_sent_collapse_in_the_ledger(replay: ReplayServer) -> None:
    url = f"{replay.ws_base_url}/coinbase"
    with connect(url) as first:
        subscribe(first, "market_trades", "BTC-USD")
        until_subscriptions(first)
        recv_json(first)
        with connect(url) as second:  # its snapshot re-sends trades the first connection already got
            subscribe(second, "market_trades", "BTC-USD")
            until_subscriptions(second)
    ids = sorted(int(trade_id) for _, trade_id in replay.ledger.trades("coinbase"))
    assert ids == list(range(ids[0], ids[-1] + 1))
    assert replay.ledger.count("coinbase", "BTC-USD") == len(ids) < replay.ledger.frames("coinbase", "BTC-USD")


def apply_l2(book: ClientBook, message: dict[str, Any]) -> str:
    assert message["channel"] == "l2_data"
    (event,) = message["events"]
    for update in event["updates"]:
        assert list(update) == ["side", "event_time", "price_level", "new_quantity"]
        assert update["side"] in ("bid", "offer")
        book.set(update["side"] == "bid", update["price_level"], update["new_quantity"])
    return str(event["type"])


def test_level2_snapshot_plus_updates_equals_the_server_book(replay: ReplayServer, cb: ClientConnection) -> None:
    subscribe(cb, "level2", "BTC-USD")
    book = ClientBook()
    first = recv_json(cb)
    assert first["channel"] == "l2_data" and first["events"][0]["product_id"] == "BTC-USD"
    assert apply_l2(book, first) == "snapshot" and len(book.bids) >= 50 and len(book.asks) >= 50
    received = 0
    while received < 15:
        message = recv_json(cb)
        if message["channel"] == "l2_data":
            assert apply_l2(book, message) == "update"
            assert not book.crossed()
            received += 1
    replay.pause()
    try:
        subscribe(cb, "heartbeats")  # its reply comes after everything the pause flushed
        for message in until_subscriptions(cb)[0]:
            if message["channel"] == "l2_data":
                apply_l2(book, message)
        server = replay.book("coinbase", "BTC-USD")
    finally:
        replay.resume()
    assert book.side(True) == server["bids"] and book.side(False) == server["asks"]


def test_a_second_subscriber_gets_a_snapshot_consistent_with_the_first(replay: ReplayServer) -> None:
    url = f"{replay.ws_base_url}/coinbase"
    with connect(url) as a, connect(url) as b:
        subscribe(a, "level2", "ETH-USD")
        book_a = ClientBook()
        apply_l2(book_a, recv_json(a))
        recv_json(a)
        subscribe(b, "level2", "ETH-USD")
        book_b = ClientBook()
        apply_l2(book_b, recv_json(b))
        recv_json(b)  # its subscriptions reply, like a's above: both then expect the same two replies
        subscribe(a, "heartbeats")
        subscribe(b, "heartbeats")
        replay.pause()
        try:
            for ws, book in ((a, book_a), (b, book_b)):
                subscribe(ws, "heartbeats")
                for message in until_subscriptions(ws)[0] + until_subscriptions(ws)[0]:
                    if message["channel"] == "l2_data":
                        apply_l2(book, message)
        finally:
            replay.resume()
    assert book_a.side(True) == book_b.side(True) and book_a.side(False) == book_b.side(False)


def test_unsubscribe_drains_before_the_reply(cb: ClientConnection) -> None:
    subscribe(cb, "level2", "BTC-USD")
    subscribe(cb, "market_trades", "BTC-USD")
    for _ in range(5):
        recv_json(cb)
    subscribe(cb, "level2", "BTC-USD", kind="unsubscribe")
    subscribe(cb, "market_trades", "BTC-USD", kind="unsubscribe")
    until_subscriptions(cb)
    until_subscriptions(cb)
    with pytest.raises(TimeoutError):
        cb.recv(timeout=0.3)


@pytest.mark.parametrize(
    ("request_doc", "message"),
    [
        ({"type": "subscribe", "channel": "level2", "product_ids": ["FOO-USD"]}, "unknown product_ids"),
        ({"type": "subscribe", "channel": "user", "product_ids": ["BTC-USD"]}, "requires authentication"),
        ({"type": "subscribe", "channels": ["level2"], "product_ids": ["BTC-USD"]}, "one channel per message"),
        ({"type": "hello"}, "type must be"),
    ],
)
def test_bad_requests_get_error_messages(cb: ClientConnection, request_doc: Any, message: str) -> None:
    cb.send(json.dumps(request_doc))
    reply = recv_json(cb)
    assert reply["type"] == "error" and message in reply["message"]
    assert "sequence_num" not in reply


def test_trailing_slash_path_works(replay: ReplayServer) -> None:
    with connect(f"{replay.ws_base_url}/coinbase/") as ws:
        subscribe(ws, "heartbeats")
        assert until_subscriptions(ws)[1]["sequence_num"] == 0


def test_no_subscribe_within_the_deadline_disconnects(exchanges: ExchangesFile) -> None:
    with (
        running_replay_server(exchanges, rate_per_symbol=TEST_RATE, seed=1, subscribe_timeout_s=0.3) as server,
        connect(f"{server.ws_base_url}/coinbase") as ws,
        pytest.raises(ConnectionClosed) as closed,
    ):
        ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


def test_more_than_eight_messages_per_second_disconnects(cb: ClientConnection) -> None:
    for _ in range(9):
        subscribe(cb, "heartbeats")
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            cb.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


def test_sequence_gap_skips_numbers_on_every_connection(replay: ReplayServer) -> None:
    url = f"{replay.ws_base_url}/coinbase"
    with connect(url) as a, connect(url) as b:
        replies = []
        for ws in (a, b):
            subscribe(ws, "market_trades", "BTC-USD")
            replies.append(until_subscriptions(ws)[1]["sequence_num"])
        result = replay.inject(Fault(FaultKind.SEQUENCE_GAP, exchange="coinbase", count=3))
        numbers = [
            [reply] + [recv_json(ws)["sequence_num"] for _ in range(8)]
            for reply, ws in zip(replies, (a, b), strict=True)
        ]
    assert result.connections == 2
    for seq in numbers:
        jumps = [n2 - n1 for n1, n2 in itertools.pairwise(seq)]
        assert jumps.count(4) == 1 and set(jumps) == {1, 4}
        assert seq[-1] - seq[0] == len(seq) - 1 + 3
    assert replay.faults.get(FaultKind.SEQUENCE_GAP, "coinbase") == 6


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        (Fault(FaultKind.WRONG_TYPE, exchange="coinbase"), lambda t: t["price"] == {"x": 1}),
        (
            Fault(FaultKind.WRONG_TYPE, exchange="coinbase", variant="trade_id_string"),
            lambda t: t["trade_id"] == {"x": 1},
        ),
        (Fault(FaultKind.UNKNOWN_SYMBOL, exchange="coinbase"), lambda t: t["product_id"] == "ZZZ-USD"),
    ],
    ids=["price_object", "trade_id_object", "unknown_product"],
)
def test_frame_faults_are_sequenced_messages(
    replay: ReplayServer, cb: ClientConnection, fault: Fault, check: Any
) -> None:
    subscribe(cb, "market_trades", "BTC-USD")
    until_subscriptions(cb)
    replay.inject(fault)
    messages = [recv_json(cb) for _ in range(6)]
    bad = [m for m in messages if any(check(t) for t in m["events"][0]["trades"])]
    assert len(bad) == 1
    assert [m["sequence_num"] for m in messages] == list(
        range(messages[0]["sequence_num"], messages[0]["sequence_num"] + 6)
    )
    assert replay.faults.get(fault.kind, "coinbase") == 1


def test_malformed_json_frames_keep_their_sequence_numbers(replay: ReplayServer, cb: ClientConnection) -> None:
    """A cut frame still carries its envelope's ``sequence_num`` (the cut is past it), so a client reading
    the number leniently sees no lost message. A frame queued before the fault may come first: the test
    checks the numbers of all eight frames together rather than where the bad ones fall."""
    subscribe(cb, "market_trades", "BTC-USD")
    until_subscriptions(cb)
    replay.inject(Fault(FaultKind.MALFORMED_JSON, exchange="coinbase", count=2))
    texts = [str(cb.recv(timeout=5)) for _ in range(8)]
    numbers, unparsable = [], 0
    for text in texts:
        try:
            numbers.append(json.loads(text)["sequence_num"])
        except ValueError:
            unparsable += 1
            found = re.search(r'"sequence_num":(\d+)', text)
            assert found is not None, text
            numbers.append(int(found.group(1)))
    assert unparsable == 2
    assert numbers == list(range(numbers[0], numbers[0] + 8))
