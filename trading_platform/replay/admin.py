"""Plain-HTTP control API on the replay port, for tests that run in another process.

    GET  /_replay/health                      {"status":"ok","seed":…,"exchanges":[…],"connections":{…}}
                                              (+ "lake_replay":{exchange:{"frames_sent","done",…}} with
                                              --from-lake)
    GET  /_replay/ledger?exchange=binance     {"binance":{"BTCUSDT":{"count","frames","first_id",
                                               "last_id","ranges":[[a,b],…],"ids":[…]}}}
         (&ids=0 omits "ids"; without exchange= every exchange that sent something)
    GET  /_replay/history?exchange=kraken     every trade the market EXECUTED, connected clients or not:
                                              {"BTC/USD":{"first_id","last_id","count","trades":[[id,
                                               price,qty,side,time_ms],…]}} (&symbol=BTC/USD one pair,
                                               &trades=0 counts only); side is the aggressor's
    GET  /_replay/connections                 [{"id","exchange","path","streams",…}, …]
    GET  /_replay/faults                      {"binance":{"malformed_json":2,…}}  (faults that took effect)
    POST /_replay/faults  {"kind":…,…}        inject (see faults.Fault: malformed_json, wrong_type,
                                               unknown_symbol, server_shutdown, drop_connections,
                                               refuse_connections, sequence_gap, bad_checksum);
                                               answers {"kind","exchanges","connections"} or 400 with
                                               the reason (also: a kind the named exchange cannot do)

Served from websockets' ``process_request`` hook, so it shares the port with the feeds.
"""

from __future__ import annotations

import http
import json
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from websockets.http11 import Request, Response

from trading_platform.replay.connection import ReplayConnection, json_text_response
from trading_platform.replay.faults import Fault

if TYPE_CHECKING:
    from trading_platform.replay.server import ReplayServer

PREFIX = "/_replay"


def json_response(ws: ReplayConnection, status: int, doc: object) -> Response:
    return json_text_response(ws, status, json.dumps(doc, separators=(",", ":")) + "\n")


def handle(server: ReplayServer, ws: ReplayConnection, request: Request, path: str, raw_query: str) -> Response:
    query = {key: values[0] for key, values in parse_qs(raw_query).items()}
    route = (request.method, path[len(PREFIX) :].rstrip("/"))
    if route == ("GET", "/health"):
        return json_response(ws, 200, server.health())
    if route == ("GET", "/ledger"):
        exchange = query.get("exchange")
        if exchange is not None and exchange not in server.feeds:
            return json_response(
                ws, 404, {"error": f"exchange {exchange!r} is not served", "served": sorted(server.feeds)}
            )
        include_ids = query.get("ids", "1").lower() not in ("0", "false", "no")
        doc = server.ledger.snapshot(exchange, include_ids=include_ids)
        return json_response(ws, 200, doc)
    if route == ("GET", "/history"):
        exchange = query.get("exchange")
        if exchange not in server.feeds:
            return json_response(
                ws, 404, {"error": f"exchange {exchange!r} is not served", "served": sorted(server.feeds)}
            )
        with_trades = query.get("trades", "1").lower() not in ("0", "false", "no")
        return json_response(ws, 200, server.history(exchange, query.get("symbol"), with_trades))
    if route == ("GET", "/connections"):
        return json_response(ws, 200, server.connections())
    if route == ("GET", "/faults"):
        return json_response(ws, 200, server.faults.snapshot())
    if route == ("POST", "/faults"):
        try:
            fault = Fault.from_json(json.loads(ws.request_body or b"null"))
            result = server.inject(fault)
        except ValueError as error:  # also json.JSONDecodeError
            return json_response(ws, 400, {"error": str(error)})
        return json_response(ws, 200, result.to_json())
    known = [
        "GET /_replay/health",
        "GET /_replay/ledger",
        "GET /_replay/history",
        "GET /_replay/connections",
        "GET /_replay/faults",
        "POST /_replay/faults",
    ]
    return json_response(ws, http.HTTPStatus.NOT_FOUND, {"error": f"no {request.method} {path}", "known": known})
