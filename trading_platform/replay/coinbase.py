"""Coinbase Advanced Trade market-data WebSocket protocol (protocols doc, section 2a).

Path: ``/coinbase`` (also ``/coinbase/``). A client must subscribe within ``subscribe_timeout_s``
(5 s, as documented) or the connection is closed (1008). One channel per request::

    {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "level2"}

Every message is an envelope ``{"channel","client_id","timestamp","sequence_num","events"}``;
``timestamp`` is RFC3339 with nanoseconds and ``sequence_num`` counts every message of the connection
from 0, across channels and products. Channels with data:
- ``heartbeats``: one message per second, ``heartbeat_counter`` an integer incrementing per connection
  (the AsyncAPI spec's type; the prose docs show a string).
- ``market_trades``: first one ``snapshot`` message per product with its last 50 trades, then
  ``update`` messages (one per product and server tick). Trades are in ascending ``trade_id`` order;
  ``trade_id`` is the decimal id as a string. ``side`` is the MAKER side (``BUY``: the resting order
  bought, the aggressor sold), as Coinbase documents for its feeds and as ``exchanges/coinbase.py``
  reads it (``MARKET_TRADES_SIDE_IS_MAKER``); the protocols notes mark the live meaning unverified.
- ``level2``: frames carry ``"channel":"l2_data"``; first one ``snapshot`` per product with the whole
  book (bids best first, then offers best first, ``event_time`` the epoch as in the docs' example),
  then ``update`` events every 50 ms with the changed levels (``new_quantity`` absolute, ``"0"``
  removes). A new subscriber's snapshot follows a flush of pending updates to the others, so snapshot
  plus updates always rebuild the server's book exactly.
- ``subscriptions``: after each subscribe / unsubscribe, every current subscription
  (``{"subscriptions":{"level2":["BTC-USD"],"heartbeats":[]}}``). An unsubscribe removes first, then
  replies, so nothing of the removed products follows the reply.
Other public channels (``candles``, ``status``, ``ticker``, ``ticker_batch``) are accepted but silent;
``user`` / ``futures_balance_summary`` and malformed requests get ``{"type":"error","message":…}``,
which carries no ``sequence_num`` and does not consume one.

REST (plain HTTP on the same port): ``GET /coinbase/api/v3/brokerage/market/products/{product_id}/ticker
?limit=N[&start=S][&end=E]`` (public market trades): ``{"trades":[…],"best_bid","best_ask"}``, the newest
``limit`` executed trades (at most 1000, our cap) with ``start <= time < end`` (UNIX seconds), newest first,
in the WebSocket's trade shape (``side`` the maker side) plus ``bid``/``ask`` ``""`` and ``exchange``.

Limits: with ``enforce_limits``, more than 8 incoming messages within one second on a connection
close it (1008); the docs' limit is per IP, this server counts per connection.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from typing import Any
from urllib.parse import parse_qs

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from trading_platform.replay.book import ChangeTracker
from trading_platform.replay.clock import now_ns, rfc3339_ns, rfc3339_us
from trading_platform.replay.connection import ReplayConnection, json_text_response
from trading_platform.replay.faults import CONNECTION_FAULTS, OVERSIZED_BYTES, Fault, FaultKind
from trading_platform.replay.feed import CadencedBookFeed, RequestRejected, Session
from trading_platform.replay.market import SymbolMarket, SymbolSpec, Trade
from trading_platform.replay.outbox import TradeFrames

MAX_MESSAGES_PER_S = 8
DATA_CHANNELS = ("heartbeats", "market_trades", "level2")
SILENT_CHANNELS = ("candles", "status", "ticker", "ticker_batch")
AUTH_CHANNELS = ("user", "futures_balance_summary")
SNAPSHOT_EVENT_TIME = "1970-01-01T00:00:00Z"
FRAME_FAULT_KINDS = frozenset({FaultKind.MALFORMED_JSON, FaultKind.WRONG_TYPE, FaultKind.UNKNOWN_SYMBOL,
                               FaultKind.OVERSIZED, FaultKind.UNKNOWN_TYPE, FaultKind.INVALID_UTF8})
# The platform accepts Coinbase frames up to 32 MiB (a deep level2 snapshot): an oversized one is larger.
COINBASE_OVERSIZED_BYTES = max(OVERSIZED_BYTES, (32 << 20) + (1 << 20))
TICKER_PATH = re.compile(r"^/api/v3/brokerage/market/products/([A-Za-z0-9-]+)/ticker/?$")
TICKER_LIMIT_MAX = 1000


def native_symbol(symbol: str) -> str:
    """Normalized ``BTC-USD`` is already Coinbase's product id."""
    return symbol


class CoinbaseSession(Session):
    def __init__(self, ws: ReplayConnection, feed: CoinbaseFeed) -> None:
        super().__init__(ws, feed)
        self.sequence_num = 0
        self.heartbeat_counter = 0
        self.subscribed_once = False  # the 5 s subscribe deadline no longer applies
        # channel -> products (insertion-ordered); heartbeats and silent channels have no products.
        self.channels: dict[str, dict[str, None]] = {}

    def describe(self) -> dict[str, object]:
        subscriptions = {channel: list(products) for channel, products in self.channels.items()}
        return {**super().describe(), "subscriptions": subscriptions, "sequence_num": self.sequence_num}

    def envelope(self, channel: str, timestamp: str, events: str) -> str:
        """One message with this connection's next ``sequence_num``."""
        number = self.sequence_num
        self.sequence_num += 1
        return (
            f'{{"channel":"{channel}","client_id":"","timestamp":"{timestamp}",'
            f'"sequence_num":{number},"events":{events}}}'
        )



class _BadRequest(Exception):
    pass


def _error(message: str) -> str:
    return json.dumps({"type": "error", "message": message}, separators=(",", ":"))


class CoinbaseFeed(CadencedBookFeed):
    name = "coinbase"
    supported_faults = FRAME_FAULT_KINDS | CONNECTION_FAULTS | {FaultKind.SEQUENCE_GAP}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trade_subscribers: dict[str, set[CoinbaseSession]] = {}
        self._book_subscribers: dict[str, set[CoinbaseSession]] = {}
        self._heartbeat_subscribers: set[CoinbaseSession] = set()
        self._trackers: dict[str, ChangeTracker] = {
            symbol: market.book.tracker() for symbol, market in self.market.markets.items()
        }
        self._started_ns = now_ns()

    # -- connection ----------------------------------------------------------------------------------

    def parse_ws_target(self, path: str, query: dict[str, list[str]]) -> object:
        if path.rstrip("/") != self.path_prefix:
            raise RequestRejected(404, f"Not Found: {path}\n")
        return None

    async def serve(self, ws: ReplayConnection, target: object) -> None:
        session = CoinbaseSession(ws, self)
        sender = self.start_session(session)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.subscribe_timeout_s
        try:
            while True:
                if not session.subscribed_once:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise TimeoutError
                    message = await asyncio.wait_for(ws.recv(), remaining)
                else:
                    message = await ws.recv()
                if self.options.enforce_limits and session.over_rate_limit(loop.time(), MAX_MESSAGES_PER_S):
                    session.outbox.close()
                    await ws.close(1008, "Too many requests")
                    break
                self._handle(session, message)
        except TimeoutError:
            session.outbox.close()
            await ws.close(1008, f"no subscribe within {self.options.subscribe_timeout_s:g} s")
        except ConnectionClosed:
            pass
        finally:
            self._unsubscribe_all(session)
            await self.end_session(session, sender)

    # -- requests ------------------------------------------------------------------------------------

    def _handle(self, session: CoinbaseSession, message: str | bytes) -> None:
        kind: object = "subscribe"
        try:
            request = json.loads(message)
            if not isinstance(request, dict):
                raise _BadRequest("request must be a JSON object")
            kind = request.get("type")
            if kind not in ("subscribe", "unsubscribe"):
                raise _BadRequest(f"type must be subscribe or unsubscribe, got {kind!r}")
            channel = request.get("channel")
            if not isinstance(channel, str) or not channel:
                raise _BadRequest("channel must be a channel name (one channel per message)")
            if channel in AUTH_CHANNELS:
                raise _BadRequest(f"channel {channel} requires authentication")
            if channel not in DATA_CHANNELS and channel not in SILENT_CHANNELS:
                raise _BadRequest(f"unknown channel {channel}")
            products = self._products(channel, request.get("product_ids"))
        except (ValueError, UnicodeDecodeError):
            session.outbox.push_control(_error("malformed JSON"))
            return
        except _BadRequest as bad:
            action = kind if kind in ("subscribe", "unsubscribe") else "subscribe"
            session.outbox.push_control(_error(f"Failure to {action}: {bad}"))
            return
        if kind == "subscribe":
            session.subscribed_once = True
            self._subscribe(session, channel, products)
        else:
            self._unsubscribe(session, channel, products)
        subscriptions = json.dumps(
            [{"subscriptions": {name: list(items) for name, items in session.channels.items()}}],
            separators=(",", ":"),
        )
        session.outbox.push_control(session.envelope("subscriptions", rfc3339_ns(now_ns()), subscriptions))

    def _products(self, channel: str, raw: object) -> list[str]:
        if channel == "heartbeats" or (channel in SILENT_CHANNELS and raw is None):
            return []
        if not isinstance(raw, list) or not raw or not all(isinstance(p, str) for p in raw):
            raise _BadRequest(f"product_ids must be a non-empty list of product ids for {channel}")
        unknown = [p for p in raw if p not in self.market.markets]
        if unknown:
            raise _BadRequest(f"unknown product_ids {unknown}")
        return list(dict.fromkeys(raw))

    def _subscribe(self, session: CoinbaseSession, channel: str, products: list[str]) -> None:
        subscribed = session.channels.setdefault(channel, {})
        if channel == "heartbeats":
            self._heartbeat_subscribers.add(session)
        for product in products:
            if product in subscribed:
                continue
            subscribed[product] = None
            market = self.market.markets[product]
            if channel == "market_trades":
                self._trade_subscribers.setdefault(product, set()).add(session)
                self._send_trade_snapshot(session, market)
            elif channel == "level2":
                self.flush_book(product, market)  # others get pending changes first: the snapshot is current
                self._book_subscribers.setdefault(product, set()).add(session)
                self._send_book_snapshot(session, market)

    def _unsubscribe(self, session: CoinbaseSession, channel: str, products: list[str]) -> None:
        subscribed = session.channels.get(channel)
        if subscribed is None:
            return
        if channel == "heartbeats":
            self._heartbeat_subscribers.discard(session)
            del session.channels[channel]
            return
        registry = {"market_trades": self._trade_subscribers, "level2": self._book_subscribers}.get(channel, {})
        for product in products or list(subscribed):
            subscribed.pop(product, None)
            registry.get(product, set()).discard(session)
        if not subscribed:
            del session.channels[channel]

    def _unsubscribe_all(self, session: CoinbaseSession) -> None:
        self._heartbeat_subscribers.discard(session)
        for subscribers in (*self._trade_subscribers.values(), *self._book_subscribers.values()):
            subscribers.discard(session)
        session.channels.clear()

    # -- data ----------------------------------------------------------------------------------------

    def _trades_json(self, spec: SymbolSpec, trades: list[Trade] | deque[Trade]) -> str:
        product = spec.symbol
        return ",".join(
            f'{{"trade_id":"{t.trade_id}","product_id":"{product}","price":"{spec.price_text(t.price_ticks)}",'
            f'"size":"{spec.qty_text(t.qty_lots)}","side":"{"BUY" if t.buyer_maker else "SELL"}",'
            f'"time":"{rfc3339_us(t.time_ms * 1000)}"}}'
            for t in trades
        )

    def _send_trade_snapshot(self, session: CoinbaseSession, market: SymbolMarket) -> None:
        recent = market.recent
        events = f'[{{"type":"snapshot","trades":[{self._trades_json(market.spec, recent)}]}}]'
        frame = session.envelope("market_trades", rfc3339_ns(now_ns()), events)
        if recent:
            # Re-sent history: recorded in the ledger too (its trades() is a set, so repeats collapse).
            session.outbox.push_trades(TradeFrames(market.spec.symbol, recent[0].trade_id, [frame], len(recent)))
        else:
            session.outbox.push_control(frame)

    def publish(self, batches: list[tuple[SymbolSpec, list[Trade]]], event_ms: int) -> None:
        timestamp = ""
        for spec, trades in batches:
            subscribers = self._trade_subscribers.get(spec.symbol)
            if not subscribers:
                continue
            timestamp = timestamp or rfc3339_ns(now_ns())
            events = f'[{{"type":"update","trades":[{self._trades_json(spec, trades)}]}}]'
            first_id = trades[0].trade_id
            for session in subscribers:
                frame = session.envelope("market_trades", timestamp, events)
                session.outbox.push_trades(TradeFrames(spec.symbol, first_id, [frame], len(trades)))

    def _send_book_snapshot(self, session: CoinbaseSession, market: SymbolMarket) -> None:
        book, spec = market.book, market.spec
        bids = [
            f'{{"side":"bid","event_time":"{SNAPSHOT_EVENT_TIME}","price_level":"{spec.price_text(p)}",'
            f'"new_quantity":"{spec.qty_text(book.bids[p])}"}}'
            for p in reversed(book.bid_prices)
        ]
        asks = [
            f'{{"side":"offer","event_time":"{SNAPSHOT_EVENT_TIME}","price_level":"{spec.price_text(p)}",'
            f'"new_quantity":"{spec.qty_text(book.asks[p])}"}}'
            for p in book.ask_prices
        ]
        updates = ",".join(bids + asks)
        events = f'[{{"type":"snapshot","product_id":"{spec.symbol}","updates":[{updates}]}}]'
        session.outbox.push_control(session.envelope("l2_data", rfc3339_ns(now_ns()), events))

    def flush_book(self, symbol: str, market: SymbolMarket) -> None:
        tracker = self._trackers[symbol]
        if not tracker.first_id:
            return
        subscribers = self._book_subscribers.get(symbol)
        if subscribers:
            book, spec = market.book, market.spec
            ns = now_ns()
            event_time = rfc3339_us(ns // 1000)
            levels = [
                f'{{"side":"bid","event_time":"{event_time}","price_level":"{spec.price_text(p)}",'
                f'"new_quantity":"{_qty(spec, book.bids.get(p, 0))}"}}'
                for p in sorted(tracker.bids, reverse=True)
            ]
            levels += [
                f'{{"side":"offer","event_time":"{event_time}","price_level":"{spec.price_text(p)}",'
                f'"new_quantity":"{_qty(spec, book.asks.get(p, 0))}"}}'
                for p in sorted(tracker.asks)
            ]
            events = f'[{{"type":"update","product_id":"{symbol}","updates":[{",".join(levels)}]}}]'
            timestamp = rfc3339_ns(ns)
            for session in subscribers:
                session.outbox.push_control(session.envelope("l2_data", timestamp, events))
        tracker.clear()

    def send_heartbeats(self) -> None:
        if not self._heartbeat_subscribers:
            return
        ns = now_ns()
        fraction = ns % 1_000_000_000
        stamp = rfc3339_ns(ns)
        date_time = stamp[:19].replace("T", " ")
        monotonic = (ns - self._started_ns) / 1e9
        current = f"{date_time}.{fraction:09d} +0000 UTC m=+{monotonic:.9f}"
        for session in self._heartbeat_subscribers:
            session.heartbeat_counter += 1
            events = f'[{{"current_time":"{current}","heartbeat_counter":{session.heartbeat_counter}}}]'
            session.outbox.push_control(session.envelope("heartbeats", stamp, events))

    # -- faults --------------------------------------------------------------------------------------

    def inject_book_fault(self, fault: Fault) -> int:
        # SEQUENCE_GAP: the next message of every open connection skips ``count`` numbers.
        for session in self.sessions:
            assert isinstance(session, CoinbaseSession)
            session.sequence_num += fault.count
        self.faults.add(self.name, FaultKind.SEQUENCE_GAP, fault.count * len(self.sessions))
        return len(self.sessions)

    def fault_frames(self, fault: Fault, session: Session, event_ms: int) -> list[str]:
        """Bad frames in real envelopes: each takes the connection's next ``sequence_num``, as any message
        Coinbase sends does (a client must not mistake the bad frame for lost messages)."""
        assert isinstance(session, CoinbaseSession)
        products = session.channels.get("market_trades") or session.channels.get("level2") or {}
        product = next(iter(products), self.config.symbols[0])
        market = self.market.markets[product]
        spec = market.spec
        trade_id: str = f'"{market.next_trade_id - 1}"'
        price = f'"{spec.price_text(round(market.last_price * 10**spec.price_decimals))}"'
        side, extra, channel = '"BUY"', "", "market_trades"
        if fault.kind is FaultKind.UNKNOWN_SYMBOL:
            product = fault.symbol or "ZZZ-USD"
            trade_id = '"1"'
        elif fault.kind is FaultKind.WRONG_TYPE:
            if fault.variant == "price_object":
                price = '{"x":1}'
            else:
                trade_id = '{"x":1}'  # Coinbase ids are strings: an object is the wrong type
        elif fault.kind is FaultKind.INVALID_UTF8:
            product = "ZZZ\udcff-USD"  # byte 0xff once the outbox encodes it
        elif fault.kind is FaultKind.OVERSIZED:
            extra = f',"pad":"{"x" * COINBASE_OVERSIZED_BYTES}"'
        time_text = rfc3339_us(event_ms * 1000)
        if fault.kind is FaultKind.UNKNOWN_TYPE:
            # A channel nobody subscribed to, as Coinbase says new message types may appear at any time.
            channel = "candles"
            events = (f'[{{"type":"update","candles":[{{"start":"{event_ms // 1000}","product_id":"{product}",'
                      f'"open":{price},"close":{price}}}]}}]')
        else:
            events = (
                f'[{{"type":"update","trades":[{{"trade_id":{trade_id},"product_id":"{product}","price":{price},'
                f'"size":"{spec.qty_text(1)}","side":{side},"time":"{time_text}"{extra}}}]}}]'
            )
        timestamp = rfc3339_ns(now_ns())
        frames = []
        for _ in range(fault.count):
            frame = session.envelope(channel, timestamp, events)
            if fault.kind is FaultKind.MALFORMED_JSON:
                frame = frame[: len(frame) // 2]  # cut mid-object, after the envelope's sequence_num
            frames.append(frame)
        return frames

    # -- REST ----------------------------------------------------------------------------------------

    def http_request(self, ws: ServerConnection, request: Request, path: str) -> Response | None:
        match = TICKER_PATH.match(path[len(self.path_prefix):])
        if match is None:
            return None
        product = match.group(1)
        if product not in self.market.markets:
            return _rest_error(ws, 404, "NOT_FOUND", f"product {product} not found")
        query = {key: values[0] for key, values in parse_qs(request.path.partition("?")[2]).items()}
        try:
            limit = int(query["limit"])
            start_ms = float(query["start"]) * 1000 if query.get("start") else None
            end_ms = float(query["end"]) * 1000 if query.get("end") else None
        except (KeyError, ValueError):
            return _rest_error(ws, 400, "INVALID_ARGUMENT", "limit (integer) is required; start/end are UNIX seconds")
        if not 1 <= limit <= TICKER_LIMIT_MAX:
            return _rest_error(ws, 400, "INVALID_ARGUMENT", f"limit must be 1..{TICKER_LIMIT_MAX}")
        history, _ = self.rest_history(product)
        lo = history.index_at_time(start_ms) if start_ms is not None else 0
        hi = history.index_at_time(end_ms) if end_ms is not None else len(history)
        rows = self.rest_rows(product, max(lo, hi - limit), hi)
        market = self.market.markets[product]
        spec, book = market.spec, market.book
        trades = ",".join(
            f'{{"trade_id":"{r.trade_id}","product_id":"{product}","price":"{spec.price_text(r.price_ticks)}",'
            f'"size":"{spec.qty_text(r.qty_lots)}","time":"{rfc3339_us(r.time_ms * 1000)}",'
            f'"side":"{"BUY" if r.buyer_maker else "SELL"}","bid":"","ask":"","exchange":"coinbase"}}'
            for r in reversed(rows))
        body = (f'{{"trades":[{trades}],"best_bid":"{spec.price_text(book.best_bid())}",'
                f'"best_ask":"{spec.price_text(book.best_ask())}"}}')
        return json_text_response(ws, 200, body)


def _rest_error(ws: ServerConnection, status: int, error: str, message: str) -> Response:
    return json_text_response(ws, status, json.dumps({"error": error, "error_details": message, "message": message}))


def _qty(spec: SymbolSpec, lots: int) -> str:
    return spec.qty_text(lots) if lots else "0"
