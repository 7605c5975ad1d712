"""What every exchange module provides, and the columnar result all of them decode into.

An exchange module turns a list of raw frames into one Arrow table in the ``schema.MARKET_TRADES``
layout (without ``batch_id``, which the batcher assigns) plus rejected frames with their raw text.
Frames are decoded a batch at a time: the fast path is one typed msgspec decode of the whole batch;
only a batch holding a control or malformed frame falls back to frame-by-frame decoding.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from trading_platform.config import Endpoints, ExchangeConfig
from trading_platform.exchanges.book import BookEvents, BookSnapshots, OrderBook
from trading_platform.schema import MARKET_TRADES, QUARANTINE

# Columns an exchange module produces; batch_id is added when the batch is sealed.
DECODED_TRADE_SCHEMA = pa.schema([f for f in MARKET_TRADES.arrow_schema if f.name != "batch_id"]).append(
    pa.field("frame_index", pa.int64(), nullable=False)  # row -> raw frame, for quarantine
)
REJECT_SCHEMA = pa.schema([f for f in QUARANTINE.arrow_schema if f.name != "batch_id"])


def strings_to_float(values: list[str]) -> pa.Array:
    """Exchange number strings -> float64, vectorized; unparseable ones become NaN, which the quality
    rules then reject with the raw frame (one bad number never fails the whole batch)."""
    array = pa.array(values, pa.string())
    try:
        return pc.cast(array, pa.float64())
    except pa.ArrowInvalid:
        return pa.array([_float_or_nan(v) for v in values], pa.float64())


def _float_or_nan(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return float("nan")


@dataclass
class Rejects:
    """Frames (or rows of frames) set aside, with the rule that rejected them and the raw text."""

    received_us: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    raws: list[str] = field(default_factory=list)

    def add(self, received_us: int, reason: str, detail: str, raw: bytes | str) -> None:
        self.received_us.append(received_us)
        self.reasons.append(reason)
        self.details.append(detail)
        self.raws.append(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw)

    def __len__(self) -> int:
        return len(self.reasons)

    def to_arrow(self, exchange: str) -> pa.Table:
        return pa.table(
            {
                "exchange": pa.array([exchange] * len(self), pa.string()),
                "received_at": pa.array(self.received_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                "reason": pa.array(self.reasons, pa.string()),
                "detail": pa.array(self.details, pa.string()),
                "raw": pa.array(self.raws, pa.string()),
            },
            schema=REJECT_SCHEMA,
        )


class RecordKind(IntEnum):
    """What a WAL record / decode input is. Stored in the WAL, so values never change."""

    FRAME = 0  # a WebSocket frame as received
    REST = 1  # a REST response: b"<symbol>\n" + body (e.g. Binance's depth snapshot)
    CONNECTED = 2  # a new connection opened (books and per-connection sequences restart); payload: URL


@dataclass(frozen=True)
class FetchSnapshot:
    """Ask the runner to GET ``url`` and feed the body back as a REST record for ``symbol``.

    The record's first line is ``symbol`` for the book snapshot, or ``symbol purpose`` for any other
    request (e.g. ``BTC-USDT trades 101 150``, a trade-gap backfill), so the answer finds its question.
    """

    symbol: str
    url: str
    purpose: str = ""

    @property
    def header(self) -> bytes:
        return (f"{self.symbol} {self.purpose}" if self.purpose else self.symbol).encode()


@dataclass(frozen=True)
class SendFrames:
    """Ask the runner to send these frames on the current connection (e.g. resubscribe one book)."""

    frames: tuple[str, ...]


@dataclass(frozen=True)
class Reconnect:
    """Ask the session to drop the connection and reconnect (e.g. a per-connection sequence gap)."""

    reason: str


Action = FetchSnapshot | SendFrames | Reconnect


@dataclass
class DecodedFrames:
    trades: pa.Table  # DECODED_TRADE_SCHEMA
    rejects: Rejects
    control_frames: int = 0  # subscribe acks, heartbeats: expected, neither data nor errors
    book_snapshots: BookSnapshots | None = None
    book_events: BookEvents | None = None
    actions: list[Action] = field(default_factory=list)


class Exchange(ABC):
    """One exchange's protocol. Subclasses live one per module in ``trading_platform.exchanges``.

    An instance is stateful: it owns the order books of its symbols. Inputs arrive in receive order as
    (payload, received_us, kind) records; the same sequence always yields the same outputs, which is
    what lets WAL recovery and the offline importer reproduce the live path.
    """

    name: str
    # Larger frames are quarantined, not decoded. Coinbase's full level2 snapshot of a busy book can be
    # several MiB, so modules raise this where their protocol needs it.
    max_frame_bytes: int = 1 << 20

    def __init__(self, config: ExchangeConfig) -> None:
        self.config = config
        self.symbols = list(config.symbols)
        self.native_to_symbol = {self.native_symbol(s): s for s in self.symbols}
        # Running totals the importer prints and the run logs: book_updates_applied, checksums_passed,
        # checksums_failed, sequence_gaps, snapshots_applied (modules add their own keys freely).
        self.counters: Counter[str] = Counter()
        self.books: dict[str, OrderBook] = {s: OrderBook() for s in self.symbols}
        self.synced: dict[str, bool] = dict.fromkeys(self.symbols, False)
        self._emitted_bucket: dict[str, int] = dict.fromkeys(self.symbols, -1)

    @property
    def wants_books(self) -> bool:
        return "book" in self.config.channels

    @staticmethod
    @abstractmethod
    def native_symbol(symbol: str) -> str:
        """The exchange's spelling of a normalized BASE-QUOTE symbol."""

    @abstractmethod
    def connect_url(self, endpoints: Endpoints) -> str:
        """The WebSocket URL to open (may already carry the subscriptions)."""

    @abstractmethod
    def subscribe_frames(self) -> list[str]:
        """Frames to send after connecting (empty when the URL subscribes)."""

    @abstractmethod
    def unsubscribe_frames(self) -> list[str]:
        """Frames that stop the data; every data frame sent before the ack precedes it on the wire."""

    @abstractmethod
    def is_unsubscribe_ack(self, frame: bytes) -> bool:
        """True for the reply that ends the drain (the last ack when there are several)."""

    @abstractmethod
    def decode(self, frames: list[bytes], received_us: list[int],
               kinds: list[RecordKind] | None = None) -> DecodedFrames:
        """Decode records in receive order (``kinds`` None: all are FRAME) into trades, book output,
        rejects and actions."""

    # --- state kept across runs -------------------------------------------------------------
    def export_state(self) -> dict[str, Any]:
        """What a later run needs to continue exactly (kept in the WAL checkpoint at every flush)."""
        return {}

    def import_state(self, state: dict[str, Any]) -> None:  # noqa: B027  (optional hook, empty by default)
        """Restore ``export_state()`` from the previous run."""

    def outstanding_actions(self) -> list[Action]:
        """Requests still owed after decoding the WAL (recovery performs no actions): the run asks again."""
        return []

    # --- shared book bookkeeping -------------------------------------------------------------
    def reset_books(self) -> None:
        """A new connection: every book is untrusted until it resyncs from a fresh snapshot."""
        for symbol in self.symbols:
            self.books[symbol].clear()
            self.synced[symbol] = False

    def emit_if_due(self, symbol: str, event_us: int, received_us: int, out: BookSnapshots) -> None:
        """Emit a top-N snapshot when the book's exchange time enters a new cadence bucket.

        Driven by exchange time, not wall-clock ticks, so re-decoding the same frames emits the same
        snapshots. A book that is out of sync or crossed is never emitted.
        """
        if not self.synced[symbol]:
            return
        bucket = event_us // (self.config.book_interval_ms * 1000)
        if bucket <= self._emitted_bucket[symbol]:
            return
        book = self.books[symbol]
        if book.crossed() or not book.bids or not book.asks:
            return
        self._emitted_bucket[symbol] = bucket
        out.add(symbol, self.native_symbol(symbol), book, self.config.book_depth, event_us, received_us)
