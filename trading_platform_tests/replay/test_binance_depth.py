"""Binance diff depth and the REST snapshot: exact shapes, U/u continuity, snapshot + diffs = server book."""

from __future__ import annotations

import itertools
import re
import time
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from trading_platform.replay import Fault, FaultKind, ReplayServer
from trading_platform_tests.replay.clients import ClientBook, http_get
from trading_platform_tests.replay.conftest import combined_url, read_until_reply, recv_json, request

DEPTH_KEYS = ["e", "E", "s", "U", "u", "b", "a"]


def depth_url(server: ReplayServer, symbol: str = "BTCUSDT", limit: int = 5000) -> str:
    return f"{server.http_base_url}/binance/api/v3/depth?symbol={symbol}&limit={limit}"


def frames_for(ws: ClientConnection, seconds: float) -> list[Any]:
    frames, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        frames.append(recv_json(ws))
    return frames


def sync_book(ws: ClientConnection, server: ReplayServer, stream: str) -> tuple[ClientBook, int]:
    """The documented procedure: buffer, fetch the snapshot, drop stale diffs, apply the rest."""
    buffered = [recv_json(ws)["data"]]
    status, snapshot = http_get(depth_url(server))
    assert status == 200
    last_id = snapshot["lastUpdateId"]
    assert last_id >= buffered[0]["U"]  # served after the first buffered diff: never too old
    while buffered[-1]["u"] <= last_id:
        frame = recv_json(ws)
        assert frame["stream"] == stream
        buffered.append(frame["data"])
    book = ClientBook()
    for price, qty in snapshot["bids"]:
        book.set(True, price, qty)
    for price, qty in snapshot["asks"]:
        book.set(False, price, qty)
    kept = [diff for diff in buffered if diff["u"] > last_id]
    assert kept[0]["U"] <= last_id + 1 <= kept[0]["u"]
    book_id = last_id
    for diff in kept:
        book_id = apply_diff(book, diff, book_id)
    return book, book_id


def apply_diff(book: ClientBook, diff: dict[str, Any], book_id: int) -> int:
    if diff["u"] <= book_id:
        return book_id
    assert diff["U"] <= book_id + 1, f"gap: {diff['U']} after {book_id}"
    for price, qty in diff["b"]:
        book.set(True, price, qty)
    for price, qty in diff["a"]:
        book.set(False, price, qty)
    return int(diff["u"])


def test_diff_frames_have_the_exact_shape(replay: ReplayServer) -> None:
    with connect(combined_url(replay, "dogeusdt@depth@100ms")) as ws:
        frames = [recv_json(ws) for _ in range(5)]
    for frame in frames:
        assert list(frame) == ["stream", "data"] and frame["stream"] == "dogeusdt@depth@100ms"
        data = frame["data"]
        assert list(data) == DEPTH_KEYS
        assert (data["e"], data["s"]) == ("depthUpdate", "DOGEUSDT")
        assert all(type(data[key]) is int for key in ("E", "U", "u")) and data["U"] <= data["u"]
        for levels in (data["b"], data["a"]):
            for price, qty in levels:
                assert re.fullmatch(r"\d+\.\d{6}", price) and re.fullmatch(r"\d+\.\d{5,8}", qty)
        assert data["b"] == sorted(data["b"], key=lambda level: -float(level[0]))
        assert data["a"] == sorted(data["a"], key=lambda level: float(level[0]))


def test_update_ids_are_contiguous_on_both_cadences(replay: ReplayServer) -> None:
    streams = ["btcusdt@depth@100ms", "btcusdt@depth", "btcusdt@trade"]
    with connect(combined_url(replay, *streams)) as ws:
        frames = frames_for(ws, 2.2)
    for stream in ("btcusdt@depth@100ms", "btcusdt@depth"):
        diffs = [f["data"] for f in frames if f["stream"] == stream]
        assert len(diffs) >= (15 if stream.endswith("100ms") else 2)
        for previous, diff in itertools.pairwise(diffs):
            assert diff["U"] == previous["u"] + 1
    fast = [f["data"] for f in frames if f["stream"] == "btcusdt@depth@100ms"]
    slow = [f["data"] for f in frames if f["stream"] == "btcusdt@depth"]
    assert {d["u"] for d in slow} <= {d["u"] for d in fast}  # the same id space, cut at common boundaries
    assert any(f["stream"] == "btcusdt@trade" for f in frames)  # a combined URL mixes trades and depth


def test_snapshot_plus_diffs_equals_the_server_book(replay: ReplayServer) -> None:
    with connect(combined_url(replay, "btcusdt@depth@100ms")) as ws:
        book, book_id = sync_book(ws, replay, "btcusdt@depth@100ms")
        for frame in frames_for(ws, 0.5):
            book_id = apply_diff(book, frame["data"], book_id)
            assert not book.crossed()
        replay.pause()
        try:
            request(ws, "LIST_SUBSCRIPTIONS", request_id=1)
            for frame in read_until_reply(ws, 1)[0]:
                book_id = apply_diff(book, frame["data"], book_id)
            server = replay.book("binance", "BTC-USDT")
            snapshot = http_get(depth_url(replay))[1]
        finally:
            replay.resume()
    assert book_id == server["update_id"] == snapshot["lastUpdateId"]
    assert book.side(True) == server["bids"] and book.side(False) == server["asks"]
    assert [tuple(level) for level in snapshot["bids"]] == server["bids"]
    assert [tuple(level) for level in snapshot["asks"]] == server["asks"]
    assert len(server["bids"]) >= 50 and len(server["asks"]) >= 50


def test_rest_snapshot_shape_and_limit(replay: ReplayServer) -> None:
    status, snapshot = http_get(depth_url(replay, "ETHUSDT", limit=5))
    assert status == 200
    assert list(snapshot) == ["lastUpdateId", "bids", "asks"]
    assert type(snapshot["lastUpdateId"]) is int
    assert len(snapshot["bids"]) == len(snapshot["asks"]) == 5
    assert float(snapshot["bids"][0][0]) < float(snapshot["asks"][0][0])
    assert all(isinstance(text, str) for level in snapshot["bids"] + snapshot["asks"] for text in level)
    status, default = http_get(f"{replay.http_base_url}/binance/api/v3/depth?symbol=ETHUSDT")
    assert len(default["bids"]) >= 50  # default limit 100 covers the whole side


def test_rest_errors_look_like_binance(replay: ReplayServer) -> None:
    assert http_get(depth_url(replay, "FOOUSDT")) == (400, {"code": -1121, "msg": "Invalid symbol."})
    status, body = http_get(f"{replay.http_base_url}/binance/api/v3/depth")
    assert (status, body["code"]) == (400, -1102)
    status, body = http_get(depth_url(replay, limit=0))
    assert (status, body["code"]) == (400, -1100)


def test_sequence_gap_skips_update_ids_then_resync_works(replay: ReplayServer) -> None:
    streams = ["ethusdt@depth@100ms", "ethusdt@depth"]
    with connect(combined_url(replay, *streams)) as ws:
        first = recv_json(ws)  # kept: the skip may come right after it, and the jump is measured from it
        result = replay.inject(Fault(FaultKind.SEQUENCE_GAP, exchange="binance", symbol="ETHUSDT", count=2))
        # Until the 1 s stream has sent a diff after the gap too (a fixed window misses it on a busy machine).
        frames = [first, *frames_for(ws, 1.2)]
        deadline = time.monotonic() + 5
        while (sum(f["stream"] == "ethusdt@depth" for f in frames) < 3 and time.monotonic() < deadline):
            frames.append(recv_json(ws))
        # Resync from a fresh snapshot, as a client does after a gap, and continue without gaps.
        snapshot = http_get(depth_url(replay, "ETHUSDT"))[1]
        after = frames_for(ws, 0.4)
    assert result.connections == 1
    for stream in streams:
        diffs = [f["data"] for f in frames if f["stream"] == stream]
        jumps = [b["U"] - a["u"] for a, b in itertools.pairwise(diffs)]
        assert jumps.count(3) == 1 and set(jumps) == {1, 3}  # ids skipped once, by 2
    fast = [f["data"] for f in after if f["stream"] == "ethusdt@depth@100ms"]
    kept = [d for d in fast if d["u"] > snapshot["lastUpdateId"]]
    assert kept[0]["U"] <= snapshot["lastUpdateId"] + 1 <= kept[0]["u"]
    assert replay.faults.get(FaultKind.SEQUENCE_GAP, "binance") == 2


def test_depth_unsubscribe_drains_before_the_reply(replay: ReplayServer) -> None:
    with connect(combined_url(replay, "btcusdt@depth@100ms")) as ws:
        recv_json(ws)
        request(ws, "UNSUBSCRIBE", ["btcusdt@depth@100ms"], request_id=5)
        read_until_reply(ws, 5)
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)
