"""What every exchange protocol shares: sessions, the market, fan-out bookkeeping and faults.

An exchange module (``binance.py``, ``coinbase.py``, ``kraken.py``) subclasses :class:`ExchangeFeed`
and supplies the wire format: which paths it answers, how requests on a connection are handled, how a
tick's trades and book changes are encoded, and what its bad frames look like.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from trading_platform.capture_format import FrameRecorder
from trading_platform.config import ExchangeConfig
from trading_platform.replay.connection import ReplayConnection
from trading_platform.replay.faults import (
    CONNECTION_FAULTS,
    FRAME_FAULTS,
    Fault,
    FaultCounters,
    FaultKind,
    RefuseMode,
)
from trading_platform.replay.history import DEFAULT_HISTORY_TRADES, HistoryRow, TradeHistory
from trading_platform.replay.ledger import TradeLedger
from trading_platform.replay.market import DEFAULT_BOOK_RATE, MarketSimulator, SymbolMarket, SymbolSpec, Trade
from trading_platform.replay.outbox import Outbox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedOptions:
    rate_per_symbol: float = 5.0
    seed: int = 0
    # Frames queued but not yet sent on one connection before it is dropped as a slow consumer (one that stopped
    # reading; frames that wait for this server's own loop are let wait up to outbox.SERVER_BEHIND_FACTOR times this).
    max_pending_frames: int = 500_000
    # Apply the exchange's documented per-connection limits (incoming message rate).
    enforce_limits: bool = True
    # Maker events (level adds, resizes, cancels) per second per symbol, on top of the taker fills.
    book_rate_per_symbol: float = DEFAULT_BOOK_RATE
    # Coinbase closes a connection that has not subscribed within this many seconds.
    subscribe_timeout_s: float = 5.0
    # Executed trades kept per symbol (REST history and the admin API's ground truth).
    history_trades: int = DEFAULT_HISTORY_TRADES
    # Newest trades per symbol the REST history endpoints serve (None: all kept). Smaller than an outage,
    # it makes that outage unrecoverable, like an exchange whose public history is short.
    rest_history_trades: int | None = None
    # exchange -> symbol -> newest trades of a stopped market to continue from (empty: a fresh market).
    resume: dict[str, dict[str, list[list[int]]]] = field(default_factory=dict)


class RequestRejected(Exception):
    """A WebSocket request the exchange would refuse before the upgrade (bad path, too many streams)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class Session:
    """One client connection to a feed; exchange modules subclass it for their subscription state."""

    def __init__(self, ws: ReplayConnection, feed: ExchangeFeed) -> None:
        self.ws = ws
        self.connection_id = ws.connection_id
        self.outbox = Outbox(
            feed.name,
            ws.connection_id,
            feed.ledger,
            feed.faults,
            feed.options.max_pending_frames,
            feed.recorder.frame if feed.recorder is not None else None,
        )
        self.exchange = feed.name
        self.opened_at = time.time()
        self._recent_messages: deque[float] = deque()

    def over_rate_limit(self, now: float, limit_per_s: int) -> bool:
        """Count a client message received at ``now``; True when the last second holds more than the limit."""
        recent = self._recent_messages
        recent.append(now)
        while recent and recent[0] <= now - 1.0:
            recent.popleft()
        return len(recent) > limit_per_s

    def describe(self) -> dict[str, object]:
        """What ``GET /_replay/connections`` shows about this connection."""
        return {
            "id": self.connection_id,
            "exchange": self.exchange,
            "path": self.ws.request.path if self.ws.request else None,
            "opened_at": self.opened_at,
            "pending_frames": self.outbox.pending_frames,
        }


class ExchangeFeed(ABC):
    """Shared core of one exchange's replay endpoint. All methods run on the server's event loop."""

    name: str
    # Faults this exchange can act on (see faults.py); others are refused when aimed at it by name.
    supported_faults: frozenset[FaultKind] = FRAME_FAULTS | CONNECTION_FAULTS

    def __init__(
        self, config: ExchangeConfig, ledger: TradeLedger, faults: FaultCounters, options: FeedOptions
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.faults = faults
        self.options = options
        self.market = MarketSimulator(
            self.name,
            config.symbols,
            options.rate_per_symbol,
            options.seed,
            int(time.time() * 1000),
            options.book_rate_per_symbol,
            options.history_trades,
            options.resume.get(self.name),
        )
        self.sessions: set[Session] = set()
        # Gets every frame text sent on this exchange (set by the server when recording).
        self.recorder: FrameRecorder | None = None
        self._refuse_until = 0.0
        self._refuse_mode: RefuseMode = "reset"
        self._rest_error_until = 0.0
        self._rest_error_status = 429

    @property
    def path_prefix(self) -> str:
        return f"/{self.name}"

    # -- exchange-specific -------------------------------------------------------------------------

    @abstractmethod
    def parse_ws_target(self, path: str, query: dict[str, list[str]]) -> object:
        """Validate a WebSocket upgrade for ``path`` (already under this feed's prefix).

        Returns whatever :meth:`serve` needs; raises :class:`RequestRejected` to refuse it.
        """

    @abstractmethod
    async def serve(self, ws: ReplayConnection, target: object) -> None:
        """Run one client connection until it closes."""

    @abstractmethod
    def publish(self, batches: list[tuple[SymbolSpec, list[Trade]]], event_ms: int) -> None:
        """Encode one tick's trades and queue them on the subscribed sessions' outboxes."""

    @abstractmethod
    def fault_frames(self, fault: Fault, session: Session, event_ms: int) -> list[str]:
        """The bad frames a frame fault sends on ``session``."""

    def http_request(self, ws: ServerConnection, request: Request, path: str) -> Response | None:
        """Plain HTTP (REST) on this feed's prefix; None means 404. Exchanges override when needed."""
        return None

    def publish_books(self, now_ms: int) -> None:
        """Called every tick after the trades: send book changes when the exchange's cadence is due."""
        return None

    def flush_books(self, now_ms: int) -> None:
        """Send every pending book change now, off cadence (the server is pausing)."""
        return None

    def inject_book_fault(self, fault: Fault) -> int:
        """Apply a ``sequence_gap`` / ``bad_checksum`` fault listed in :attr:`supported_faults`."""
        raise ValueError(f"{fault.kind} is not supported on {self.name}")

    # -- shared --------------------------------------------------------------------------------------

    def tick(self, now_ms: int) -> None:
        batches = self.market.advance(now_ms)
        if batches and self.sessions:
            self.publish(batches, now_ms)
        self.publish_books(now_ms)

    def book(self, symbol: str) -> dict[str, Any]:
        """The server's book of a normalized symbol: update id and (price, qty) texts, best first."""
        market = self.market.markets[symbol]
        book, spec = market.book, market.spec
        return {
            "update_id": book.update_id,
            "bids": [(spec.price_text(p), spec.qty_text(book.bids[p])) for p in book.top_bids(len(book.bids))],
            "asks": [(spec.price_text(p), spec.qty_text(book.asks[p])) for p in book.ask_prices],
        }

    def target_symbol(self, fault: Fault, native: Callable[[str], str]) -> str:
        """The normalized symbol a book fault names by its native spelling (default: the first one)."""
        if fault.symbol is None:
            return self.config.symbols[0]
        for symbol in self.config.symbols:
            if native(symbol) == fault.symbol:
                return symbol
        raise ValueError(f"{self.name} does not serve {fault.symbol!r}")

    def route(self, path: str, raw_query: str) -> object:
        return self.parse_ws_target(path, parse_qs(raw_query, keep_blank_values=True))

    def rest_history(self, symbol: str) -> tuple[TradeHistory, int]:
        """A symbol's executed trades and the first row REST may serve (``rest_history_trades``)."""
        history = self.market.markets[symbol].history
        return history, history.window_start(self.options.rest_history_trades)

    def rest_rows(self, symbol: str, start: int, stop: int) -> list[HistoryRow]:
        """Rows [start, stop) of the servable history; every served trade is recorded as delivered."""
        history, first = self.rest_history(symbol)
        rows = history.rows(max(start, first), stop)
        native = self.native(symbol)
        for row in rows:
            self.ledger.record(self.name, native, row.trade_id, 1, 0)  # connection 0: REST
        return rows

    def history_document(self, native: str | None = None, with_trades: bool = True) -> dict[str, Any]:
        """See :meth:`ReplayServer.history`."""
        document: dict[str, Any] = {}
        for symbol, market in self.market.markets.items():
            name = self.native(symbol)
            if native is not None and name != native:
                continue
            history, spec = market.history, market.spec
            entry: dict[str, Any] = {"first_id": history.first_id, "last_id": history.last_id, "count": len(history)}
            if with_trades:
                entry["trades"] = [[r.trade_id, spec.price_text(r.price_ticks), spec.qty_text(r.qty_lots),
                                    "sell" if r.buyer_maker else "buy", r.time_ms]
                                   for r in history.rows(0, len(history))]
            document[name] = entry
        return document

    def native(self, symbol: str) -> str:
        """The exchange's spelling of a normalized symbol, as the ledger records it."""
        return symbol

    def rest_error_status(self, now: float) -> tuple[int, int] | None:
        """While a ``rest_error`` fault lasts: the (status, Retry-After seconds) every REST answer gets."""
        if now >= self._rest_error_until:
            return None
        return self._rest_error_status, max(1, math.ceil(self._rest_error_until - now))

    def refusal(self, now: float) -> RefuseMode | None:
        """The refusal mode if new connections are refused right now."""
        return self._refuse_mode if now < self._refuse_until else None

    def inject(self, fault: Fault, now: float) -> int:
        """Apply ``fault`` to this feed; returns how many connections it reached."""
        if fault.kind not in self.supported_faults:
            raise ValueError(f"{fault.kind} is not supported on {self.name}")
        if fault.kind not in FRAME_FAULTS and fault.kind not in CONNECTION_FAULTS:
            return self.inject_book_fault(fault)
        if fault.kind in FRAME_FAULTS:
            event_ms = int(time.time() * 1000)
            for session in self.sessions:
                for frame in self.fault_frames(fault, session, event_ms):
                    session.outbox.push_fault(fault.kind, frame)
                if fault.kind is FaultKind.SERVER_SHUTDOWN:
                    session.outbox.push_close(1001, "server shutdown")
            return len(self.sessions)
        if fault.kind is FaultKind.REST_ERROR:
            self._rest_error_until = now + fault.seconds
            self._rest_error_status = fault.status
            return 0
        if fault.kind is FaultKind.DROP_CONNECTIONS:
            dropped = list(self.sessions)
            for session in dropped:
                # Queued frames die with the socket and are not in the ledger: they were never sent.
                session.outbox.close()
                session.ws.abort()
            self.faults.add(self.name, FaultKind.DROP_CONNECTIONS, len(dropped))
            return len(dropped)
        # REFUSE_CONNECTIONS
        self._refuse_until = now + fault.seconds
        self._refuse_mode = fault.mode
        return 0

    def note_refused(self) -> None:
        self.faults.add(self.name, FaultKind.REFUSE_CONNECTIONS)

    def start_session(self, session: Session) -> asyncio.Task[None]:
        """Register ``session`` and start its sender; the caller runs the receive loop."""
        self.sessions.add(session)
        if self.recorder is not None and session.ws.request is not None:
            self.recorder.connected(session.ws.request.path)
        name = f"{self.name}-send-{session.connection_id}"
        return asyncio.create_task(session.outbox.run(session.ws), name=name)

    async def end_session(self, session: Session, sender: asyncio.Task[None]) -> None:
        """Unregister and wait for the sender, so the ledger is final when the handler returns."""
        self.sessions.discard(session)
        session.outbox.close()
        try:
            await sender
        except Exception:
            log.exception("%s connection %d: sender failed", self.name, session.connection_id)


class CadencedBookFeed(ExchangeFeed):
    """A feed that sends book changes per symbol on a fixed cadence and a heartbeat every second (Coinbase's
    level2 and heartbeats channels, Kraken's book channel and heartbeat): the exchange module only says how a
    symbol's pending changes and a heartbeat look on its wire."""

    book_flush_ms = 50

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._book_due_ms = 0
        self._heartbeat_due_ms = 0

    def publish_books(self, now_ms: int) -> None:
        if now_ms >= self._heartbeat_due_ms:
            self._heartbeat_due_ms = (now_ms // 1000 + 1) * 1000
            self.send_heartbeats()
        if now_ms < self._book_due_ms:
            return
        self._book_due_ms = (now_ms // self.book_flush_ms + 1) * self.book_flush_ms
        self.flush_books(now_ms)

    def flush_books(self, now_ms: int) -> None:
        for symbol, market in self.market.markets.items():
            self.flush_book(symbol, market)

    @abstractmethod
    def send_heartbeats(self) -> None:
        """Send the heartbeat frame to every session that asked for heartbeats."""

    @abstractmethod
    def flush_book(self, symbol: str, market: SymbolMarket) -> None:
        """Send ``symbol``'s pending book changes to its subscribers, then forget them."""
