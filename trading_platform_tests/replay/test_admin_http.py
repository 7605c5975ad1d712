"""The admin HTTP API on the feed port, as a test in another process would use it."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from websockets.sync.client import connect

from trading_platform.replay import FaultKind, ReplayServer
from trading_platform_tests.replay.conftest import combined_url, connection_id, read_until_reply, recv_json, request


def get(server: ReplayServer, path: str) -> Any:
    with urllib.request.urlopen(server.http_base_url + path, timeout=5) as response:
        assert response.headers["Content-Type"] == "application/json"
        return json.loads(response.read())


def post(server: ReplayServer, path: str, body: object) -> Any:
    data = json.dumps(body).encode()
    req = urllib.request.Request(
        server.http_base_url + path, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=5) as response:
        return json.loads(response.read())


def test_ledger_over_http_matches_what_was_received(replay: ReplayServer) -> None:
    with connect(combined_url(replay, "btcusdt@trade", "ethusdt@trade")) as ws:
        received = [recv_json(ws) for _ in range(20)]
        request(ws, "UNSUBSCRIBE", ["btcusdt@trade", "ethusdt@trade"], request_id=1)
        received += read_until_reply(ws, 1)[0]
    ledger = get(replay, "/_replay/ledger?exchange=binance")
    ids: dict[str, list[int]] = {}
    for frame in received:
        ids.setdefault(frame["data"]["s"], []).append(frame["data"]["t"])
    assert set(ledger) == {"binance"}
    for symbol, symbol_ids in ids.items():
        entry = ledger["binance"][symbol]
        assert entry["ids"] == symbol_ids
        assert entry["count"] == entry["frames"] == len(symbol_ids)
        assert (entry["first_id"], entry["last_id"]) == (symbol_ids[0], symbol_ids[-1])
        assert entry["ranges"] == [[symbol_ids[0], symbol_ids[-1]]]
    assert "ids" not in get(replay, "/_replay/ledger?exchange=binance&ids=0")["binance"]["BTCUSDT"]


def test_post_fault_is_injected(replay: ReplayServer) -> None:
    with connect(combined_url(replay, "btcusdt@trade")) as ws:
        recv_json(ws)
        answer = post(replay, "/_replay/faults", {"kind": "malformed_json", "exchange": "binance", "count": 3})
        assert answer == {"kind": "malformed_json", "exchanges": ["binance"], "connections": 1}
        bad = 0
        while bad < 3:
            try:
                json.loads(ws.recv(timeout=5))
            except ValueError:
                bad += 1
    assert get(replay, "/_replay/faults") == {"binance": {"malformed_json": 3}}
    assert replay.faults.get(FaultKind.MALFORMED_JSON) == 3


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "meteor"},
        {"kind": "malformed_json", "count": "two"},
        {"kind": "drop_connections", "exchange": "nyse"},
        {"kind": "bad_checksum", "exchange": "binance"},
        {"kind": "sequence_gap", "exchange": "binance", "symbol": "NOPEUSDT"},
        [1, 2],
    ],
)
def test_bad_fault_request_is_400(replay: ReplayServer, body: object) -> None:
    with pytest.raises(urllib.error.HTTPError) as error:
        post(replay, "/_replay/faults", body)
    assert error.value.code == 400
    assert "error" in json.loads(error.value.read())


def test_post_book_fault(replay: ReplayServer) -> None:
    answer = post(replay, "/_replay/faults", {"kind": "sequence_gap", "exchange": "binance", "symbol": "BTCUSDT"})
    assert answer == {"kind": "sequence_gap", "exchanges": ["binance"], "connections": 0}


def test_connections_lists_streams_and_ids(replay: ReplayServer) -> None:
    with connect(combined_url(replay, "btcusdt@trade")) as ws:
        recv_json(ws)
        connections = get(replay, "/_replay/connections")
        own_id = connection_id(ws)
    assert [(c["id"], c["exchange"], c["streams"], c["combined"]) for c in connections] == [
        (own_id, "binance", ["btcusdt@trade"], True)
    ]


def test_health_reports_seed_and_exchanges(replay: ReplayServer) -> None:
    assert get(replay, "/_replay/health") == {
        "status": "ok",
        "seed": 7,
        "exchanges": ["binance", "coinbase", "kraken"],
        "connections": {"binance": 0, "coinbase": 0, "kraken": 0},
    }


def test_unknown_admin_path_is_404(replay: ReplayServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as error:
        get(replay, "/_replay/nothing")
    assert error.value.code == 404


def test_post_body_arriving_after_the_head_is_read(replay: ReplayServer) -> None:
    body = b'{"kind": "refuse_connections", "seconds": 0, "mode": "http_503"}'
    head = (
        f"POST /_replay/faults HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", replay.port), timeout=5) as raw:
        raw.sendall(head)
        time.sleep(0.05)  # a separate TCP segment
        raw.sendall(body)
        answer = b""
        while chunk := raw.recv(4096):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK"
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["kind"] == "refuse_connections"
