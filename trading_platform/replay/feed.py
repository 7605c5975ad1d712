"""What every exchange protocol shares: sessions, the market, fan-out bookkeeping and faults.

An exchange module (``binance.py``; later Coinbase and Kraken) subclasses :class:`ExchangeFeed` and
supplies the wire format: which paths it answers, how requests on a connection are handled, how a
tick's trades are encoded, and what its bad frames look like.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from urllib.parse import parse_qs

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from trading_platform.config import ExchangeConfig
from trading_platform.replay.connection import ReplayConnection
from trading_platform.replay.faults import FRAME_FAULTS, Fault, FaultCounters, FaultKind, RefuseMode
from trading_platform.replay.ledger import TradeLedger
from trading_platform.replay.market import MarketSimulator, SymbolSpec, Trade
from trading_platform.replay.outbox import Outbox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedOptions:
    rate_per_symbol: float = 5.0
    seed: int = 0
    # Frames queued but not yet sent on one connection before it is dropped as a slow consumer.
    max_pending_frames: int = 500_000
    # Apply the exchange's documented per-connection limits (incoming message rate).
    enforce_limits: bool = True


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
        self.outbox = Outbox(feed.name, ws.connection_id, feed.ledger, feed.faults, feed.options.max_pending_frames)
        self.exchange = feed.name
        self.opened_at = time.time()

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

    def __init__(
        self, config: ExchangeConfig, ledger: TradeLedger, faults: FaultCounters, options: FeedOptions
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.faults = faults
        self.options = options
        self.market = MarketSimulator(
            self.name, config.symbols, options.rate_per_symbol, options.seed, int(time.time() * 1000)
        )
        self.sessions: set[Session] = set()
        self._refuse_until = 0.0
        self._refuse_mode: RefuseMode = "reset"

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

    # -- shared --------------------------------------------------------------------------------------

    def tick(self, now_ms: int) -> None:
        batches = self.market.advance(now_ms)
        if batches and self.sessions:
            self.publish(batches, now_ms)

    def route(self, path: str, raw_query: str) -> object:
        return self.parse_ws_target(path, parse_qs(raw_query, keep_blank_values=True))

    def refusal(self, now: float) -> RefuseMode | None:
        """The refusal mode if new connections are refused right now."""
        return self._refuse_mode if now < self._refuse_until else None

    def inject(self, fault: Fault, now: float) -> int:
        """Apply ``fault`` to this feed; returns how many connections it reached."""
        if fault.kind in FRAME_FAULTS:
            event_ms = int(time.time() * 1000)
            for session in self.sessions:
                for frame in self.fault_frames(fault, session, event_ms):
                    session.outbox.push_fault(fault.kind, frame)
                if fault.kind is FaultKind.SERVER_SHUTDOWN:
                    session.outbox.push_close(1001, "server shutdown")
            return len(self.sessions)
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
