"""Kraken Spot WebSocket v2 public protocol (protocols doc, section 3).

Path: ``/kraken/v2``. On connect: ``{"channel":"status","type":"update","data":[{"api_version":"v2",
"connection_id":…,"system":"online","version":"2.0.10"}]}``. Requests (``req_id`` echoed when given):
- ``{"method":"subscribe","params":{"channel":"book"|"trade"|"instrument","symbol":["BTC/USD"],
  "depth":10,"snapshot":true},"req_id":1}``: one ack per symbol,
  ``{"method":"subscribe","result":{"channel":"book","symbol":"BTC/USD","depth":10,"snapshot":true},
  "success":true,"time_in":…,"time_out":…,"req_id":1}``, then that symbol's snapshot (if asked).
  Failures: ``{"error":…,"method":"subscribe","success":false,"symbol":…,"time_in","time_out","req_id"}``
  (unknown pair, already subscribed, bad depth).
- ``unsubscribe`` (same params; ack ``result`` without ``snapshot``): removes first, then acks, so
  nothing of that subscription follows the ack.
- ``{"method":"ping","req_id":101}`` → ``{"method":"pong","req_id":101,"time_in":…,"time_out":…}``.
While anything is subscribed, ``{"channel":"heartbeat"}`` once per second.

``trade``: the snapshot is the pair's last 50 trades; updates carry one server tick's trades of a pair.
``side`` is the taker side, ``trade_id`` an integer sequential per pair, ``ord_type`` ``market`` or
``limit``.

``book`` at depth 10/25/100/500/1000 (default 10): snapshot of the top ``depth`` levels, then every
50 ms an update per pair and depth with the levels whose quantity changed inside the top ``depth``,
the levels that entered it, and ``qty`` 0 for levels that left the book; a level merely pushed below
the depth gets no delete (clients truncate to their depth after applying, as documented). Prices and
quantities are JSON numbers printed with the pair's fixed decimals, trailing zeros included
(``0.10000000``). Every snapshot and update carries ``checksum``: CRC32 of the top 10 asks (ascending)
then bids (descending), each price and qty text with '.' removed and leading zeros stripped.
``instrument`` (snapshot only): the pairs with ``price_precision`` / ``qty_precision``.

REST (plain HTTP on the same port): ``GET /kraken/0/public/Trades?pair=BTC/USD[&since=T][&count=N]``
serves the market's executed trades (connected or not) in Kraken's shape, ``{"error":[],"result":{"<pair>":
[["price","volume",time,"b"|"s","m"|"l","",trade_id],…],"last":"<ns>"}}``, oldest first, the trades after
``since`` (nanoseconds like ``last``, or UNIX seconds), at most ``count`` (1..1000, default 1000); without
``since``, the newest ``count``. The pair may be given as ``BTC/USD`` or ``BTCUSD``.

Frames are batched per pair (a message never holds two pairs). ``bad_checksum`` corrupts only the
``checksum`` number of the next update(s) of one pair; the book itself stays right, so an unsubscribe
plus subscribe yields a correct snapshot.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any
from urllib.parse import parse_qs

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from trading_platform.replay.book import ChangeTracker
from trading_platform.replay.clock import now_ns, rfc3339_us
from trading_platform.replay.connection import ReplayConnection, json_text_response
from trading_platform.replay.faults import CONNECTION_FAULTS, OVERSIZED_BYTES, Fault, FaultKind
from trading_platform.replay.feed import CadencedBookFeed, RequestRejected, Session
from trading_platform.replay.market import SymbolMarket, SymbolSpec, Trade
from trading_platform.replay.outbox import TradeFrames

DEPTHS = (10, 25, 100, 500, 1000)
API_VERSION = "2.0.10"
FRAME_FAULT_KINDS = frozenset({FaultKind.MALFORMED_JSON, FaultKind.WRONG_TYPE, FaultKind.UNKNOWN_SYMBOL,
                               FaultKind.OVERSIZED, FaultKind.UNKNOWN_TYPE, FaultKind.INVALID_UTF8})
TRADES_COUNT_MAX = 1000
_SECONDS_BELOW = 10**12  # a `since` smaller than this is UNIX seconds, else nanoseconds


def native_symbol(symbol: str) -> str:
    """Normalized ``BTC-USD`` → Kraken v2 ``BTC/USD``."""
    return symbol.replace("-", "/")


class KrakenSession(Session):
    def __init__(self, ws: ReplayConnection, feed: KrakenFeed) -> None:
        super().__init__(ws, feed)
        self.trades: dict[str, None] = {}  # normalized symbols, in subscription order
        self.books: dict[str, int] = {}  # normalized symbol -> depth

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "trade": [native_symbol(s) for s in self.trades],
            "book": {native_symbol(s): depth for s, depth in self.books.items()},
        }

    @property
    def subscribed(self) -> bool:
        return bool(self.trades or self.books)


class _View:
    """What clients subscribed at one depth know of one pair: the top ``depth`` levels per side."""

    __slots__ = ("asks", "bids", "depth")

    def __init__(self, depth: int, market: SymbolMarket) -> None:
        self.depth = depth
        book = market.book
        self.bids = {p: book.bids[p] for p in book.top_bids(depth)}
        self.asks = {p: book.asks[p] for p in book.top_asks(depth)}


def _dumps(doc: object) -> str:
    return json.dumps(doc, separators=(",", ":"))


class KrakenFeed(CadencedBookFeed):
    name = "kraken"
    supported_faults = FRAME_FAULT_KINDS | CONNECTION_FAULTS | {FaultKind.BAD_CHECKSUM}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._by_native = {native_symbol(symbol): symbol for symbol in self.config.symbols}
        self._by_rest_pair = {**self._by_native, **{pair.replace("/", ""): s for pair, s in self._by_native.items()}}
        self._trade_subscribers: dict[str, set[KrakenSession]] = {}
        self._book_subscribers: dict[tuple[str, int], set[KrakenSession]] = {}
        self._views: dict[tuple[str, int], _View] = {}
        self._trackers: dict[str, ChangeTracker] = {
            symbol: market.book.tracker() for symbol, market in self.market.markets.items()
        }
        self._bad_checksums: dict[str, int] = {}

    # -- connection ----------------------------------------------------------------------------------

    def parse_ws_target(self, path: str, query: dict[str, list[str]]) -> object:
        if path.rstrip("/") != f"{self.path_prefix}/v2":
            raise RequestRejected(404, f"Not Found: {path}\n")
        return None

    async def serve(self, ws: ReplayConnection, target: object) -> None:
        session = KrakenSession(ws, self)
        sender = self.start_session(session)
        status = {"api_version": "v2", "connection_id": session.connection_id, "system": "online"}
        session.outbox.push_control(
            _dumps({"channel": "status", "type": "update", "data": [{**status, "version": API_VERSION}]})
        )
        try:
            async for message in ws:
                time_in = rfc3339_us(now_ns() // 1000)
                for reply in self._handle(session, message, time_in):
                    if isinstance(reply, str):
                        session.outbox.push_control(reply)
                    else:
                        session.outbox.push_trades(reply)
        except ConnectionClosed:
            pass
        finally:
            self._unsubscribe_all(session)
            await self.end_session(session, sender)

    # -- requests ------------------------------------------------------------------------------------

    def _handle(self, session: KrakenSession, message: str | bytes, time_in: str) -> list[str | TradeFrames]:
        def reply(doc: dict[str, Any], req_id: object = None) -> str:
            doc = {**doc, "time_in": time_in, "time_out": rfc3339_us(now_ns() // 1000)}
            if req_id is not None:
                doc["req_id"] = req_id
            return _dumps(doc)

        try:
            request = json.loads(message)
        except (ValueError, UnicodeDecodeError):
            return [reply({"error": "Malformed request", "method": "", "success": False})]
        if not isinstance(request, dict):
            return [reply({"error": "Malformed request", "method": "", "success": False})]
        method, req_id = request.get("method"), request.get("req_id")
        if method == "ping":
            return [reply({"method": "pong"}, req_id)]
        if method not in ("subscribe", "unsubscribe"):
            return [reply({"error": f"Method not found: {method}", "method": str(method), "success": False}, req_id)]
        params = request.get("params")
        channel = params.get("channel") if isinstance(params, dict) else None
        if not isinstance(params, dict) or channel not in ("book", "trade", "instrument"):
            error = f"Channel not supported: {channel}" if isinstance(params, dict) else "params must be an object"
            return [reply({"error": error, "method": method, "success": False}, req_id)]
        if channel == "instrument":
            if method == "unsubscribe":
                return [reply({"method": method, "result": {"channel": "instrument"}, "success": True}, req_id)]
            instrument = {"channel": "instrument", "snapshot": True}
            ack = reply({"method": method, "result": instrument, "success": True}, req_id)
            return [ack, self._instrument_snapshot()]
        symbols = params.get("symbol")
        if not isinstance(symbols, list) or not symbols or not all(isinstance(s, str) for s in symbols):
            return [reply({"error": "symbol must be a list of pairs", "method": method, "success": False}, req_id)]
        depth = params.get("depth", 10)
        snapshot = params.get("snapshot", True)
        if channel == "book" and depth not in DEPTHS:
            error = f"Invalid depth {depth}: one of {list(DEPTHS)}"
            return [reply({"error": error, "method": method, "success": False}, req_id)]
        if not isinstance(snapshot, bool):
            return [reply({"error": "snapshot must be a boolean", "method": method, "success": False}, req_id)]
        out: list[str | TradeFrames] = []
        for native in dict.fromkeys(symbols):
            symbol = self._by_native.get(native)
            failure = {"method": method, "success": False, "symbol": native}
            if symbol is None:
                out.append(reply({"error": f"Currency pair not supported {native}", **failure}, req_id))
                continue
            result: dict[str, Any] = {"channel": channel, "symbol": native}
            if channel == "book":
                result["depth"] = depth
            if method == "subscribe":
                if symbol in (session.books if channel == "book" else session.trades):
                    out.append(reply({"error": "Already subscribed", **failure}, req_id))
                    continue
                result["snapshot"] = snapshot
                out.append(reply({"method": method, "result": result, "success": True}, req_id))
                out.extend(self._subscribe(session, channel, symbol, depth, snapshot))
            else:
                if not self._unsubscribe(session, channel, symbol):
                    out.append(reply({"error": "Subscription Not Found", **failure}, req_id))
                    continue
                out.append(reply({"method": method, "result": result, "success": True}, req_id))
        return out

    def _subscribe(
        self, session: KrakenSession, channel: str, symbol: str, depth: int, snapshot: bool
    ) -> list[str | TradeFrames]:
        market = self.market.markets[symbol]
        if channel == "trade":
            session.trades[symbol] = None
            self._trade_subscribers.setdefault(symbol, set()).add(session)
            recent = market.recent
            if not snapshot or not recent:
                return []
            frame = f'{{"channel":"trade","type":"snapshot","data":[{self._trades_json(market.spec, recent)}]}}'
            # Re-sent history: recorded in the ledger too (its trades() is a set, so repeats collapse).
            return [TradeFrames(native_symbol(symbol), recent[0].trade_id, [frame], len(recent))]
        # Book: bring every view of this pair up to date first, so the snapshot and the views agree.
        self.flush_book(symbol, market)
        session.books[symbol] = depth
        self._book_subscribers.setdefault((symbol, depth), set()).add(session)
        view = self._views.get((symbol, depth))
        if view is None:
            view = self._views[(symbol, depth)] = _View(depth, market)
        if not snapshot:
            return []
        spec = market.spec
        bids = _levels(spec, sorted(view.bids.items(), reverse=True))
        asks = _levels(spec, sorted(view.asks.items()))
        return [
            f'{{"channel":"book","type":"snapshot","data":[{{"symbol":"{native_symbol(symbol)}",'
            f'"bids":[{bids}],"asks":[{asks}],"checksum":{market.book.checksum()},'
            f'"timestamp":"{rfc3339_us(now_ns() // 1000)}"}}]}}'
        ]

    def _unsubscribe(self, session: KrakenSession, channel: str, symbol: str) -> bool:
        if channel == "trade":
            if symbol not in session.trades:
                return False
            del session.trades[symbol]
            self._trade_subscribers.get(symbol, set()).discard(session)
            return True
        depth = session.books.pop(symbol, None)
        if depth is None:
            return False
        self._drop_book_subscriber(session, symbol, depth)
        return True

    def _drop_book_subscriber(self, session: KrakenSession, symbol: str, depth: int) -> None:
        subscribers = self._book_subscribers.get((symbol, depth))
        if subscribers is not None:
            subscribers.discard(session)
            if not subscribers:
                del self._book_subscribers[(symbol, depth)]
                self._views.pop((symbol, depth), None)

    def _unsubscribe_all(self, session: KrakenSession) -> None:
        for symbol in session.trades:
            self._trade_subscribers.get(symbol, set()).discard(session)
        for symbol, depth in session.books.items():
            self._drop_book_subscriber(session, symbol, depth)
        session.trades.clear()
        session.books.clear()

    def _instrument_snapshot(self) -> str:
        pairs = []
        for symbol, market in self.market.markets.items():
            spec = market.spec
            pairs.append({
                "symbol": native_symbol(symbol),
                "base": spec.base,
                "quote": spec.quote,
                "status": "online",
                "price_precision": spec.price_decimals,
                "qty_precision": spec.qty_decimals,
                "price_increment": spec.tick,
                "qty_increment": spec.lot,
            })
        return _dumps({"channel": "instrument", "type": "snapshot", "data": {"assets": [], "pairs": pairs}})

    # -- data ----------------------------------------------------------------------------------------

    @staticmethod
    def _trades_json(spec: SymbolSpec, trades: list[Trade] | deque[Trade]) -> str:
        pair = native_symbol(spec.symbol)
        return ",".join(
            f'{{"symbol":"{pair}","side":"{"sell" if t.buyer_maker else "buy"}",'
            f'"price":{spec.price_text(t.price_ticks)},"qty":{spec.qty_text(t.qty_lots)},'
            f'"ord_type":"{"limit" if t.trade_id % 4 == 0 else "market"}","trade_id":{t.trade_id},'
            f'"timestamp":"{rfc3339_us(t.time_ms * 1000)}"}}'
            for t in trades
        )

    def publish(self, batches: list[tuple[SymbolSpec, list[Trade]]], event_ms: int) -> None:
        for spec, trades in batches:
            subscribers = self._trade_subscribers.get(spec.symbol)
            if not subscribers:
                continue
            frame = f'{{"channel":"trade","type":"update","data":[{self._trades_json(spec, trades)}]}}'
            item = TradeFrames(native_symbol(spec.symbol), trades[0].trade_id, [frame], len(trades))
            for session in subscribers:
                session.outbox.push_trades(item)

    def send_heartbeats(self) -> None:
        for session in self.sessions:
            if isinstance(session, KrakenSession) and session.subscribed:
                session.outbox.push_control('{"channel":"heartbeat"}')

    def flush_book(self, symbol: str, market: SymbolMarket) -> None:
        tracker = self._trackers[symbol]
        if not tracker.first_id:
            return
        tracker.clear()
        views = [(view, self._book_subscribers[key]) for key, view in self._views.items() if key[0] == symbol]
        if not views:
            return
        book, spec = market.book, market.spec
        checksum = book.checksum()
        bad = self._bad_checksums.get(symbol, 0)
        sent = False
        timestamp = ""
        for view, subscribers in views:
            bids = _view_changes(book.bids, book.top_bids(view.depth), view.bids)
            asks = _view_changes(book.asks, book.top_asks(view.depth), view.asks)
            if not bids and not asks:
                continue  # only levels below this depth changed
            timestamp = timestamp or rfc3339_us(now_ns() // 1000)
            bids.sort(reverse=True)
            asks.sort()
            frame_checksum = (checksum + 1) % 2**32 if bad else checksum
            frame = (
                f'{{"channel":"book","type":"update","data":[{{"symbol":"{native_symbol(symbol)}",'
                f'"bids":[{_levels(spec, bids)}],"asks":[{_levels(spec, asks)}],"checksum":{frame_checksum},'
                f'"timestamp":"{timestamp}"}}]}}'
            )
            for session in subscribers:
                if bad:
                    session.outbox.push_fault(FaultKind.BAD_CHECKSUM, frame)
                else:
                    session.outbox.push_control(frame)
            sent = True
        if bad and sent:
            if bad > 1:
                self._bad_checksums[symbol] = bad - 1
            else:
                del self._bad_checksums[symbol]

    # -- faults --------------------------------------------------------------------------------------

    def inject_book_fault(self, fault: Fault) -> int:
        # BAD_CHECKSUM: the next ``count`` updates of one pair (to every depth's subscribers).
        symbol = self.target_symbol(fault, native_symbol)
        self._bad_checksums[symbol] = self._bad_checksums.get(symbol, 0) + fault.count
        return len({s for (sym, _), sessions in self._book_subscribers.items() if sym == symbol for s in sessions})

    def native(self, symbol: str) -> str:
        return native_symbol(symbol)

    def fault_frames(self, fault: Fault, session: Session, event_ms: int) -> list[str]:
        assert isinstance(session, KrakenSession)
        symbol = next(iter(session.trades), next(iter(session.books), self.config.symbols[0]))
        market = self.market.markets[symbol]
        spec = market.spec
        pair = native_symbol(symbol)
        trade_id = str(market.next_trade_id - 1)
        price = spec.price_text(round(market.last_price * 10**spec.price_decimals))
        extra = ""
        if fault.kind is FaultKind.UNKNOWN_SYMBOL:
            pair = fault.symbol or "ZZZ/USD"
            trade_id = "1"
        elif fault.kind is FaultKind.WRONG_TYPE:
            if fault.variant == "price_object":
                price = '{"x":1}'
            else:
                trade_id = '"abc"'
        elif fault.kind is FaultKind.INVALID_UTF8:
            pair, trade_id = "ZZZ\udcff/USD", "1"  # byte 0xff once the outbox encodes it
        elif fault.kind is FaultKind.OVERSIZED:
            pair, trade_id, extra = "ZZZ/USD", "1", f',"pad":"{"x" * OVERSIZED_BYTES}"'
        elif fault.kind is FaultKind.UNKNOWN_TYPE:
            # A channel nobody subscribed to (Kraken's ticker), a well-formed message of a kind we ignore.
            return [f'{{"channel":"ticker","type":"update","data":[{{"symbol":"{pair}","bid":{price},'
                    f'"ask":{price},"last":{price}}}]}}'] * fault.count
        frame = (
            f'{{"channel":"trade","type":"update","data":[{{"symbol":"{pair}","side":"buy","price":{price},'
            f'"qty":{spec.qty_text(1)},"ord_type":"market","trade_id":{trade_id},'
            f'"timestamp":"{rfc3339_us(event_ms * 1000)}"{extra}}}]}}'
        )
        if fault.kind is FaultKind.MALFORMED_JSON:
            frame = frame[: len(frame) // 2]
        return [frame] * fault.count

    # -- REST ----------------------------------------------------------------------------------------

    def http_request(self, ws: ServerConnection, request: Request, path: str) -> Response | None:
        if path.rstrip("/") != f"{self.path_prefix}/0/public/Trades":
            return None
        query = {key: values[0] for key, values in parse_qs(request.path.partition("?")[2]).items()}
        symbol = self._by_rest_pair.get(query.get("pair", ""))
        if symbol is None:
            return _kraken_error(ws, "EQuery:Unknown asset pair")
        try:
            count = int(query.get("count", str(TRADES_COUNT_MAX)))
            since = query.get("since")
            since_ns = None if since is None else (
                int(float(since) * 1e9) if float(since) < _SECONDS_BELOW else int(since))
        except ValueError:
            return _kraken_error(ws, "EGeneral:Invalid arguments")
        count = max(1, min(count, TRADES_COUNT_MAX))
        history, first = self.rest_history(symbol)
        # Trades strictly after `since` (ns): time_ms * 1e6 > since_ns; never older than REST serves.
        start = len(history) - count if since_ns is None else history.index_at_time(since_ns // 1_000_000 + 1)
        start = max(start, first)
        rows = self.rest_rows(symbol, start, start + count)
        spec = history.spec
        trades = ",".join(
            f'["{spec.price_text(r.price_ticks)}","{spec.qty_text(r.qty_lots)}",{r.time_ms / 1000:.3f},'
            f'"{"s" if r.buyer_maker else "b"}","{"l" if r.trade_id % 4 == 0 else "m"}","",{r.trade_id}]'
            for r in rows)
        last = rows[-1].time_ms * 1_000_000 if rows else (since_ns or 0)
        body = f'{{"error":[],"result":{{"{native_symbol(symbol)}":[{trades}],"last":"{last}"}}}}'
        return json_text_response(ws, 200, body)


def _kraken_error(ws: ServerConnection, message: str) -> Response:
    """Kraken answers request errors with HTTP 200 and an ``error`` list."""
    return json_text_response(ws, 200, json.dumps({"error": [message]}))


def _view_changes(levels: dict[int, int], top: list[int], view: dict[int, int]) -> list[tuple[int, int]]:
    """Update ``view`` to ``top`` and return what a client at this depth must apply.

    Changed or entering levels with their quantity, and 0 for view levels that left the book; levels
    pushed below the depth are not sent (the client's truncation drops them).
    """
    changes = [(p, levels[p]) for p in top if view.get(p) != levels[p]]
    changes += [(p, 0) for p in view if p not in levels]
    if changes:
        view.clear()
        view.update((p, levels[p]) for p in top)
    return changes


def _levels(spec: SymbolSpec, levels: list[tuple[int, int]]) -> str:
    return ",".join(f'{{"price":{spec.price_text(p)},"qty":{spec.qty_text(q)}}}' for p, q in levels)
