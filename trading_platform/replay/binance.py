"""Binance Spot public market-data protocol (protocols doc, section 1): trades, diff depth, REST snapshot.

Paths (under ``/binance``): ``/ws`` and ``/ws/<stream>[/<stream>...]`` (raw: payloads unwrapped),
``/stream`` and ``/stream?streams=<s1>/<s2>`` (combined: ``{"stream":…,"data":…}``). Live requests:
SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY/GET_PROPERTY ``combined``; errors use the
documented ``{"error":{"code":…,"msg":…},"id":…}`` shape (code 3 for bad JSON, 2 for bad requests).
Streams with data: ``<symbol>@trade``, ``<symbol>@depth@100ms`` and ``<symbol>@depth`` (also spelled
``<symbol>@depth@1000ms``), freely mixed on one connection.

Depth: every book event (a taker order, a maker action) takes the next update id of its symbol. A
diff covers the events since the previous diff of the same cadence: ``U`` its first id, ``u`` the
last, so ``U == previous u + 1`` on each cadence; levels are absolute, zero quantity removes, bids
best first then asks best first. Diffs go out on wall-clock boundaries (every 100 ms / 1000 ms); a
cadence with no book event sends nothing.

REST (plain HTTP on the same port): ``GET /binance/api/v3/historicalTrades?symbol=&fromId=&limit=`` serves
the market's executed trades (connected or not; see ``history.py``), oldest first from ``fromId``.
``GET /binance/api/v3/depth?symbol=BTCUSDT&limit=N`` (limit 1..5000, default 100) answers
``{"lastUpdateId":…,"bids":[[p,q],…],"asks":[…]}``, best first, where
``lastUpdateId`` is the id of the last book event included; the documented sync procedure (buffer
diffs, drop ``u <= lastUpdateId``, first kept diff has ``U <= lastUpdateId + 1 <= u``) rebuilds exactly
the server's book. Unknown symbol: HTTP 400 ``{"code":-1121,"msg":"Invalid symbol."}``.

Choices where the docs are silent:
- Any stream name is accepted (like Binance, which acknowledges streams it has no data for); only the
  streams above for a configured symbol, spelled in lower case, carry data.
- More than 1024 streams: a URL is refused with HTTP 400; a SUBSCRIBE is answered with error code 2
  and changes nothing.
- More than 5 incoming messages within one second closes the connection with 1008 (Binance
  disconnects too); WebSocket pings/pongs are not counted here (websockets answers them itself).
- Prices and quantities use the symbol's fixed decimals (BTC price "90000.12"); the live exchange pads
  to 8 decimals ("90000.12000000"): parsers must accept both.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from trading_platform.replay.book import ChangeTracker
from trading_platform.replay.connection import ReplayConnection, json_text_response
from trading_platform.replay.faults import CONNECTION_FAULTS, FRAME_FAULTS, OVERSIZED_BYTES, Fault, FaultKind
from trading_platform.replay.feed import ExchangeFeed, RequestRejected, Session
from trading_platform.replay.market import SymbolMarket, SymbolSpec, Trade
from trading_platform.replay.outbox import TradeFrames

MAX_STREAMS = 1024
MAX_MESSAGES_PER_S = 5
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_ID_STRING = re.compile(r"^[A-Za-z0-9_-]{1,36}$")
_INT64 = (-(2**63), 2**63 - 1)
DEPTH_CADENCES_MS = (100, 1000)
DEPTH_LIMIT_DEFAULT, DEPTH_LIMIT_MAX = 100, 5000


def native_symbol(symbol: str) -> str:
    """Normalized ``BTC-USDT`` → Binance ``BTCUSDT``."""
    return symbol.replace("-", "")


def trade_stream(symbol: str) -> str:
    return f"{native_symbol(symbol).lower()}@trade"


def depth_streams(symbol: str) -> dict[str, int]:
    """Diff-depth stream names of ``symbol`` and their cadence in ms."""
    base = f"{native_symbol(symbol).lower()}@depth"
    return {f"{base}@100ms": 100, base: 1000, f"{base}@1000ms": 1000}


@dataclass(frozen=True)
class BinanceTarget:
    combined: bool
    streams: list[str]


class BinanceSession(Session):
    def __init__(self, ws: ReplayConnection, feed: BinanceFeed, combined: bool) -> None:
        super().__init__(ws, feed)
        self.combined = combined
        self.streams: dict[str, None] = {}  # insertion-ordered set, listed in subscription order

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "combined": self.combined, "streams": list(self.streams)}



class _BadRequest(Exception):
    def __init__(self, code: int, msg: str, request_id: object = None) -> None:
        super().__init__(msg)
        self.code, self.msg, self.request_id = code, msg, request_id


def _dumps(doc: object) -> str:
    return json.dumps(doc, separators=(",", ":"))


class BinanceFeed(ExchangeFeed):
    name = "binance"
    supported_faults = FRAME_FAULTS | CONNECTION_FAULTS | {FaultKind.SEQUENCE_GAP}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._native = {symbol: native_symbol(symbol) for symbol in self.config.symbols}
        self._by_native = {native: symbol for symbol, native in self._native.items()}
        self._stream_symbol = {trade_stream(symbol): symbol for symbol in self.config.symbols}
        self._formats = {
            spec.symbol: (f".{spec.price_decimals}f", f".{spec.qty_decimals}f")
            for spec in (market.spec for market in self.market.markets.values())
        }
        self._scales = {market.spec.symbol: (10**market.spec.price_decimals, 10**market.spec.qty_decimals)
                        for market in self.market.markets.values()}
        # symbol -> a depth level's %-template of (price units, fraction, qty units, fraction).
        self._level_templates = {
            market.spec.symbol: f'["%d.%0{market.spec.price_decimals}d","%d.%0{market.spec.qty_decimals}d"]'
            for market in self.market.markets.values()
        }
        # symbol -> combined? -> buyer maker? -> the trade frame's %-template (see _trade_templates).
        self._trade_templates = {spec.symbol: {combined: _trade_templates(spec, combined) for combined in (False, True)}
                                 for spec in (market.spec for market in self.market.markets.values())}
        self._subscribers: dict[str, set[BinanceSession]] = {}
        # Depth: stream name -> (symbol, cadence); subscribers per stream; one tracker per symbol and cadence.
        self._depth_stream: dict[str, tuple[str, int]] = {
            stream: (symbol, cadence)
            for symbol in self.config.symbols
            for stream, cadence in depth_streams(symbol).items()
        }
        self._depth_subscribers: dict[str, set[BinanceSession]] = {}
        self._streams_of: dict[tuple[str, int], list[str]] = {}
        for stream, key in self._depth_stream.items():
            self._streams_of.setdefault(key, []).append(stream)
        self._trackers: dict[tuple[str, int], ChangeTracker] = {
            (symbol, cadence): self.market.markets[symbol].book.tracker()
            for symbol in self.config.symbols
            for cadence in DEPTH_CADENCES_MS
        }
        self._due_ms = dict.fromkeys(DEPTH_CADENCES_MS, 0)
        self._gaps: dict[str, int] = {}  # symbol -> update ids to skip at the next 100 ms boundary

    # -- connection setup ----------------------------------------------------------------------------

    def native(self, symbol: str) -> str:
        return self._native[symbol]

    def parse_ws_target(self, path: str, query: dict[str, list[str]]) -> BinanceTarget:
        rest = path[len(self.path_prefix) :].rstrip("/")
        if rest == "/stream":
            raw = query.get("streams", [""])[0]
            streams = [s for s in raw.split("/") if s]
            combined = True
        elif rest == "/ws" or rest.startswith("/ws/"):
            streams = [s for s in rest[len("/ws") :].split("/") if s]
            combined = False
        else:
            raise RequestRejected(404, f"Not Found: {path}\n")
        streams = list(dict.fromkeys(streams))
        if len(streams) > MAX_STREAMS:
            raise RequestRejected(400, f"Too many streams: {len(streams)} > {MAX_STREAMS} per connection\n")
        return BinanceTarget(combined, streams)

    async def serve(self, ws: ReplayConnection, target: object) -> None:
        assert isinstance(target, BinanceTarget)
        session = BinanceSession(ws, self, target.combined)
        self._add_streams(session, target.streams)
        sender = self.start_session(session)
        loop = asyncio.get_running_loop()
        try:
            async for message in ws:
                if self.options.enforce_limits and session.over_rate_limit(loop.time(), MAX_MESSAGES_PER_S):
                    session.outbox.close()
                    await ws.close(1008, "Too many requests")
                    break
                session.outbox.push_control(self._answer(session, message))
        except ConnectionClosed:
            pass
        finally:
            self._remove_streams(session, list(session.streams))
            await self.end_session(session, sender)

    # -- live requests -------------------------------------------------------------------------------

    def _answer(self, session: BinanceSession, message: str | bytes) -> str:
        try:
            request_id, result = self._execute(session, message)
        except _BadRequest as bad:
            return _dumps({"error": {"code": bad.code, "msg": bad.msg}, "id": bad.request_id})
        return _dumps({"result": result, "id": request_id})

    def _execute(self, session: BinanceSession, message: str | bytes) -> tuple[object, object]:
        try:
            request = json.loads(message)
        except (ValueError, UnicodeDecodeError) as error:
            line, column = getattr(error, "lineno", 1), getattr(error, "colno", 1)
            raise _BadRequest(3, f"Invalid JSON: expected value at line {line} column {column}") from None
        if not isinstance(request, dict):
            raise _BadRequest(2, "Invalid request: expected an object at line 1 column 1")
        request_id = request.get("id")
        if not _valid_id(request_id) or "id" not in request:
            raise _BadRequest(2, "Invalid request: request ID must be an unsigned integer")
        method = request.get("method")
        if method is None:
            raise _BadRequest(2, "Invalid request: missing field `method`", request_id)
        if method not in METHODS:
            expected = ", ".join(f"`{m}`" for m in METHODS)
            raise _BadRequest(2, f"Invalid request: unknown variant `{method}`, expected one of {expected}", request_id)
        params = request.get("params", [])
        if not isinstance(params, list):
            raise _BadRequest(2, "Invalid request: invalid type for `params`, expected a sequence", request_id)
        # Mutations happen here, before the reply is queued: see the drain guarantee in outbox.py.
        if method == "SUBSCRIBE":
            streams = _stream_names(params, request_id)
            if len(session.streams.keys() | set(streams)) > MAX_STREAMS:
                raise _BadRequest(
                    2, f"Invalid request: too many streams (max {MAX_STREAMS} per connection)", request_id
                )
            self._add_streams(session, streams)
            return request_id, None
        if method == "UNSUBSCRIBE":
            self._remove_streams(session, _stream_names(params, request_id))
            return request_id, None
        if method == "LIST_SUBSCRIPTIONS":
            return request_id, list(session.streams)
        if not params or not isinstance(params[0], str):
            raise _BadRequest(2, "Invalid request: property name must be a string", request_id)
        if params[0] != "combined":
            raise _BadRequest(0, "Unknown property", request_id)
        if method == "GET_PROPERTY":
            return request_id, session.combined
        if len(params) != 2 or not isinstance(params[1], bool):
            raise _BadRequest(1, "Invalid value type: expected Boolean", request_id)
        session.combined = params[1]
        return request_id, None

    def _add_streams(self, session: BinanceSession, streams: list[str]) -> None:
        for stream in streams:
            if stream in session.streams:
                continue
            session.streams[stream] = None
            symbol = self._stream_symbol.get(stream)
            if symbol is not None:
                self._subscribers.setdefault(symbol, set()).add(session)
            elif stream in self._depth_stream:
                self._depth_subscribers.setdefault(stream, set()).add(session)

    def _remove_streams(self, session: BinanceSession, streams: list[str]) -> None:
        for stream in streams:
            if stream in session.streams:
                del session.streams[stream]
                symbol = self._stream_symbol.get(stream)
                if symbol is not None:
                    self._subscribers.get(symbol, set()).discard(session)
                elif stream in self._depth_stream:
                    self._depth_subscribers.get(stream, set()).discard(session)

    # -- data ----------------------------------------------------------------------------------------

    def publish(self, batches: list[tuple[SymbolSpec, list[Trade]]], event_ms: int) -> None:
        for spec, trades in batches:
            subscribers = self._subscribers.get(spec.symbol)
            if not subscribers:
                continue
            native = self._native[spec.symbol]
            first_id = trades[0].trade_id
            # One %-format per trade with the symbol's precomputed pieces (stream, symbol, "m"), raw and
            # combined (wrapped) each formatted directly, only when a subscriber wants it. Price and quantity
            # are printed from their integers (units, then the fraction zero-padded to the decimals):
            # the exact decimal text, cheaper than formatting the floats.
            price_scale, qty_scale = self._scales[spec.symbol]
            shapes: dict[bool, TradeFrames] = {}
            for session in subscribers:
                item = shapes.get(session.combined)
                if item is None:
                    templates = self._trade_templates[spec.symbol][session.combined]
                    item = shapes[session.combined] = TradeFrames(native, first_id, [
                        templates[buyer_maker] % (event_ms, trade_id, price // price_scale, price % price_scale,
                                                  qty // qty_scale, qty % qty_scale, time_ms)
                        for trade_id, _, _, time_ms, buyer_maker, price, qty in trades
                    ])
                session.outbox.push_trades(item)

    def publish_books(self, now_ms: int) -> None:
        if now_ms < self._due_ms[100]:
            return
        self._due_ms[100] = (now_ms // 100 + 1) * 100
        slow_due = now_ms >= self._due_ms[1000]
        if slow_due:
            self._due_ms[1000] = (now_ms // 1000 + 1) * 1000
        for symbol in self.config.symbols:
            market = self.market.markets[symbol]
            self._emit_depth(symbol, market, 100, now_ms)
            gap = self._gaps.pop(symbol, 0)
            if slow_due or gap:
                # A gap cuts the 1000 ms window here too, so both cadences see U == previous u + 1 + gap.
                self._emit_depth(symbol, market, 1000, now_ms)
            if gap:
                market.book.update_id += gap
                self.faults.add(self.name, FaultKind.SEQUENCE_GAP, gap)

    def flush_books(self, now_ms: int) -> None:
        # Cuts both cadences' windows early; continuity (U == previous u + 1) is unaffected.
        for symbol in self.config.symbols:
            market = self.market.markets[symbol]
            for cadence in DEPTH_CADENCES_MS:
                self._emit_depth(symbol, market, cadence, now_ms)

    def _emit_depth(self, symbol: str, market: SymbolMarket, cadence: int, now_ms: int) -> None:
        tracker = self._trackers[(symbol, cadence)]
        if not tracker.first_id:
            return
        subscribers = self._depth_subscribers
        streams = self._streams_of[(symbol, cadence)]
        targets = [(stream, subscribers[stream]) for stream in streams if subscribers.get(stream)]
        if targets:
            book, level, scales = market.book, self._level_templates[symbol], self._scales[symbol]
            bids = _levels_json(level, *scales, book.bids, sorted(tracker.bids, reverse=True))
            asks = _levels_json(level, *scales, book.asks, sorted(tracker.asks))
            payload = (
                f'{{"e":"depthUpdate","E":{now_ms},"s":"{self._native[symbol]}","U":{tracker.first_id},'
                f'"u":{book.update_id},"b":[{bids}],"a":[{asks}]}}'
            )
            for stream, sessions in targets:
                wrapped = f'{{"stream":"{stream}","data":{payload}}}'
                for session in sessions:
                    session.outbox.push_control(wrapped if session.combined else payload)
        tracker.clear()

    # -- REST ----------------------------------------------------------------------------------------

    def http_request(self, ws: ServerConnection, request: Request, path: str) -> Response | None:
        if path.rstrip("/") == f"{self.path_prefix}/api/v3/historicalTrades":
            return self._historical_trades(ws, request)
        if path.rstrip("/") != f"{self.path_prefix}/api/v3/depth":
            return None
        query = parse_qs(request.path.partition("?")[2])
        native = query.get("symbol", [""])[0]
        if not native:
            error = "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
            return _rest_error(ws, -1102, error)
        symbol = self._by_native.get(native)
        if symbol is None:
            return _rest_error(ws, -1121, "Invalid symbol.")
        raw_limit = query.get("limit", [str(DEPTH_LIMIT_DEFAULT)])[0]
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= DEPTH_LIMIT_MAX:
            error = f"Illegal characters found in parameter 'limit'; legal range is '1-{DEPTH_LIMIT_MAX}'."
            return _rest_error(ws, -1100, error)
        body = self.depth_snapshot(symbol, int(raw_limit))
        if self.recorder is not None:
            self.recorder.rest(request.path, body)
        return json_text_response(ws, 200, body)

    def _historical_trades(self, ws: ServerConnection, request: Request) -> Response:
        """``GET /api/v3/historicalTrades?symbol=&fromId=&limit=`` (limit 1-1000, default 500), as Binance
        answers it. Served trades count as sent in the ledger (connection id 0: REST). Trades older than the
        servable history are simply not there: asked from an older id, the answer starts later."""
        query = parse_qs(request.path.partition("?")[2])
        native = query.get("symbol", [""])[0]
        symbol = self._by_native.get(native)
        if symbol is None:
            return _rest_error(ws, -1121, "Invalid symbol.")
        raw_limit = query.get("limit", ["500"])[0]
        raw_from = query.get("fromId", [""])[0]
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000 or (raw_from and not raw_from.isdigit()):
            return _rest_error(ws, -1100, "Illegal characters found in parameter 'limit' or 'fromId'.")
        history, first = self.rest_history(symbol)
        limit = int(raw_limit)
        # Without fromId: the most recent trades. Ids are consecutive, so fromId is a row number.
        start = history.index_of_id(int(raw_from)) if raw_from else len(history) - limit
        rows = self.rest_rows(symbol, max(start, first), max(start, first) + limit)
        spec = history.spec
        body = "[" + ",".join(
            f'{{"id":{r.trade_id},"price":"{spec.price_text(r.price_ticks)}","qty":"{spec.qty_text(r.qty_lots)}",'
            f'"quoteQty":"{history.price(r) * history.qty(r):.8f}","time":{r.time_ms},'
            f'"isBuyerMaker":{"true" if r.buyer_maker else "false"},"isBestMatch":true}}'
            for r in rows) + "]"
        return json_text_response(ws, 200, body)

    def depth_snapshot(self, symbol: str, limit: int) -> str:
        """The REST depth answer for ``symbol``: the top ``limit`` levels and the last update id."""
        market = self.market.markets[symbol]
        book, spec = market.book, market.spec
        bids = ",".join(f'["{spec.price_text(p)}","{spec.qty_text(book.bids[p])}"]' for p in book.top_bids(limit))
        asks = ",".join(f'["{spec.price_text(p)}","{spec.qty_text(book.asks[p])}"]' for p in book.top_asks(limit))
        return f'{{"lastUpdateId":{book.update_id},"bids":[{bids}],"asks":[{asks}]}}'

    # -- faults --------------------------------------------------------------------------------------

    def inject_book_fault(self, fault: Fault) -> int:
        # SEQUENCE_GAP: applied at the next 100 ms boundary, between two diffs of both cadences.
        symbol = self.target_symbol(fault, native_symbol)
        self._gaps[symbol] = self._gaps.get(symbol, 0) + fault.count
        streams = [stream for cadence in DEPTH_CADENCES_MS for stream in self._streams_of[(symbol, cadence)]]
        return len({session for stream in streams for session in self._depth_subscribers.get(stream, ())})

    def fault_frames(self, fault: Fault, session: Session, event_ms: int) -> list[str]:
        assert isinstance(session, BinanceSession)
        if fault.kind is FaultKind.SERVER_SHUTDOWN:
            event = f'{{"e":"serverShutdown","E":{event_ms}}}'
            return [_wrap(session, "!serverShutdown", event)]
        if fault.kind is FaultKind.OVERSIZED:
            # A real trade frame with an unknown field padded to 2 MiB: valid JSON, just too large.
            padding = "x" * OVERSIZED_BYTES
            payload = (f'{{"e":"trade","E":{event_ms},"s":"ZZZUSDT","t":1,"p":"1.00","q":"1.00000",'
                       f'"T":{event_ms},"m":false,"M":true,"pad":"{padding}"}}')
            return [_wrap(session, "zzzusdt@trade", payload)] * fault.count
        if fault.kind is FaultKind.UNKNOWN_TYPE:
            # A stream the client never asked for (bookTicker frames have no "e"), like a shared socket.
            symbol = self.config.symbols[0]
            payload = (f'{{"u":{event_ms},"s":"{self._native[symbol]}","b":"1.00","B":"2.00000","a":"1.01",'
                       f'"A":"3.00000"}}')
            return [_wrap(session, f"{self._native[symbol].lower()}@bookTicker", payload)] * fault.count
        if fault.kind is FaultKind.INVALID_UTF8:
            # \udcff is byte 0xff once the outbox encodes with surrogateescape: not UTF-8.
            payload = (f'{{"e":"trade","E":{event_ms},"s":"ZZZ\udcffUSDT","t":1,"p":"1.00","q":"1.00000",'
                       f'"T":{event_ms},"m":false,"M":true}}')
            return [_wrap(session, "zzzusdt@trade", payload)] * fault.count
        if fault.kind is FaultKind.UNKNOWN_SYMBOL:
            native = fault.symbol or "ZZZUSDT"
            payload = (
                f'{{"e":"trade","E":{event_ms},"s":"{native}","t":1,"p":"1.00","q":"1.00000",'
                f'"T":{event_ms},"m":false,"M":true}}'
            )
            return [_wrap(session, f"{native.lower()}@trade", payload)] * fault.count
        # Malformed / wrong type: imitate a trade of a symbol the client listens to, reusing the last
        # real trade id so a parser that accepts the frame would create a detectable duplicate.
        symbol = next((s for s in (self._stream_symbol.get(x) for x in session.streams) if s), self.config.symbols[0])
        market = self.market.markets[symbol]
        native = self._native[symbol]
        price_format, qty_format = self._formats[symbol]
        price = f'"{market.last_price:{price_format}}"'
        trade_id = str(market.next_trade_id - 1)
        if fault.kind is FaultKind.WRONG_TYPE:
            if fault.variant == "price_object":
                price = '{"x":1}'
            else:
                trade_id = '"abc"'
        payload = (
            f'{{"e":"trade","E":{event_ms},"s":"{native}","t":{trade_id},"p":{price},'
            f'"q":"{market.spec.lot:{qty_format}}","T":{event_ms},"m":true,"M":true}}'
        )
        frame = _wrap(session, trade_stream(symbol), payload)
        if fault.kind is FaultKind.MALFORMED_JSON:
            frame = frame[: len(frame) // 2]  # cut mid-object: not parseable JSON
        return [frame] * fault.count


def _trade_templates(spec: SymbolSpec, combined: bool) -> tuple[str, str]:
    """A trade frame of ``spec`` as %-templates indexed by the buyer-maker flag ("m"), of (E, t, price units,
    price fraction, qty units, qty fraction, T); prices and quantities always have decimals (2+ and 5+)."""
    payload = (f'{{"e":"trade","E":%d,"s":"{native_symbol(spec.symbol)}","t":%d,"p":"%d.%0{spec.price_decimals}d",'
               f'"q":"%d.%0{spec.qty_decimals}d","T":%d,"m":')
    head, tail = (f'{{"stream":"{trade_stream(spec.symbol)}","data":', "}") if combined else ("", "")
    return (f'{head}{payload}false,"M":true}}{tail}', f'{head}{payload}true,"M":true}}{tail}')


def _levels_json(template: str, price_scale: int, qty_scale: int, levels: dict[int, int], prices: list[int]) -> str:
    """Depth levels as ``["p","q"],…`` in the order of ``prices`` (quantity 0: removed), with the texts
    printed from the integers (spec.price_text's digits, without a call per text)."""
    parts = []
    for price in prices:
        qty = levels.get(price, 0)
        parts.append(template % (price // price_scale, price % price_scale, qty // qty_scale, qty % qty_scale))
    return ",".join(parts)


def _rest_error(ws: ServerConnection, code: int, msg: str) -> Response:
    return json_text_response(ws, 400, json.dumps({"code": code, "msg": msg}, separators=(",", ":")))


def _wrap(session: BinanceSession, stream: str, payload: str) -> str:
    return f'{{"stream":"{stream}","data":{payload}}}' if session.combined else payload


def _valid_id(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return _INT64[0] <= value <= _INT64[1]
    return isinstance(value, str) and bool(_ID_STRING.match(value))


def _stream_names(params: list[object], request_id: object) -> list[str]:
    if not all(isinstance(p, str) and p for p in params):
        raise _BadRequest(2, "Invalid request: stream names must be non-empty strings", request_id)
    return list(dict.fromkeys(str(p) for p in params))
