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
from typing import Annotated, Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trading_platform.config import Endpoints, ExchangeConfig
from trading_platform.exchanges.book import BookEvents, BookSnapshots, OrderBook
from trading_platform.exchanges.trade_gaps import (
    TRADE_GAP_FILLED,
    BackfillRequest,
    TradeGap,
    TradeGaps,
    TradePage,
)
from trading_platform.schema import MARKET_TRADES, QUARANTINE

# Integers the wire structs accept: a value outside fails the typed decode (wrong_type) instead of overflowing
# an Arrow column later. Ids and sequence numbers are int64 columns; exchange times in ms must stay in range
# once multiplied to µs.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
UInt32 = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]

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
    REST_FAILED = 3  # a REST request the exchange refused for good: b"<header>\n" + the error
    # Never in the WAL: a FRAME the normalizer quarantined before decoding (oversized, not UTF-8). The
    # exchange sees it only to keep its per-connection sequence (Coinbase's sequence_num) continuous.
    SCREENED = 100


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
BAD_HISTORY_ANSWERS = 3  # answers to one backfill that are no trade-history page before its range is given up


@dataclass
class DecodedFrames:
    trades: pa.Table  # DECODED_TRADE_SCHEMA
    rejects: Rejects
    control_frames: int = 0  # subscribe acks, heartbeats: expected, neither data nor errors
    book_snapshots: BookSnapshots | None = None
    book_events: BookEvents | None = None
    actions: list[Action] = field(default_factory=list)
    # Well-formed frames of a channel or message type we did not ask for (exchanges add new ones at any
    # time and clients are expected to skip them): counted, not quarantined as errors.
    ignored_frames: int = 0


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
        self.trade_gaps = TradeGaps(self.symbols, self.counters)
        # REST base URL for history backfills; connect_url() replaces it with the configured endpoint.
        self.rest_url = (config.live.rest_url or "").rstrip("/")
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

    # --- trade history (REST), for trade-gap backfills: what each module fills in ---------------
    def trade_history_url(self, request: BackfillRequest) -> str | None:
        """The REST URL of one page of ``request.gap`` (None: this exchange serves no trade history)."""
        return None

    def parse_trade_history(self, request: BackfillRequest, body: bytes, frame_index: int,
                            received_us: int) -> TradePage:
        """Trade rows of one REST page (raise ValueError for a body that is not such a page)."""
        raise ValueError(f"{self.name} serves no trade history")

    def rest_pause_s(self, headers: dict[str, str]) -> float:
        """Seconds to hold further REST calls after a successful answer (an exchange's weight budget)."""
        return 0.0

    def history_rows(self, symbol: str, ids: list[int], prices: list[str], quantities: list[str],
                     taker_sides: list[str], times_us: list[int], received_us: int, frame_index: int) -> pa.Table:
        """Trade rows (``DECODED_TRADE_SCHEMA``) of one REST history page, from the page's own fields."""
        count = len(ids)
        return pa.table({
            "exchange": pa.array([self.name] * count, pa.string()),
            "symbol": pa.array([symbol] * count, pa.string()),
            "native_symbol": pa.array([self.native_symbol(symbol)] * count, pa.string()),
            "trade_id": pa.array([str(i) for i in ids], pa.string()),
            "price": strings_to_float(prices),
            "quantity": strings_to_float(quantities),
            "side": pa.array(taker_sides, pa.string()),
            "timestamp": pa.array(times_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "received_at": pa.array([received_us] * count, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "frame_index": pa.array([frame_index] * count, pa.int64()),
        }, schema=DECODED_TRADE_SCHEMA)

    # --- trade continuity, shared by every module (see trade_gaps.py) ---------------------------
    def check_trades(self, table: pa.Table, ids: np.ndarray, received_us: int, events: BookEvents,
                     actions: list[Action]) -> pa.Table:
        """Drop trades already stored; record gaps in the ids and ask REST for them."""
        table, gaps = self.trade_gaps.check(table, ids, received_us, events)
        for gap in gaps:
            self._ask_history(BackfillRequest(gap), received_us, events, actions)
        return table

    def _ask_history(self, request: BackfillRequest, received_us: int, events: BookEvents,
                     actions: list[Action]) -> None:
        url = self.trade_history_url(request)
        if url is None:
            self.trade_gaps.give_up(request.gap, f"{self.name} serves no REST trade history", received_us, events)
            return
        actions.append(FetchSnapshot(request.gap.symbol, url, purpose=request.purpose))

    def on_trade_history(self, header: str, body: bytes, kind: RecordKind, frame_index: int, received_us: int,
                         events: BookEvents, actions: list[Action], rejects: Rejects) -> pa.Table:
        """A REST record answering a backfill: the trades it brings that were still missing."""
        symbol, _, purpose = header.partition(" ")
        request = BackfillRequest.parse(symbol, purpose)
        if kind == RecordKind.REST_FAILED:
            self.trade_gaps.give_up(request.gap, f"REST refused the request ({body.decode(errors='replace')})",
                                    received_us, events)
            return DECODED_TRADE_SCHEMA.empty_table()
        try:
            page = self.parse_trade_history(request, body, frame_index, received_us)
        except ValueError as error:
            rejects.add(received_us, "bad_snapshot", f"not a trade-history page: {error}", header.encode() + body)
            if self.trade_gaps.bad_answer(request.gap) >= BAD_HISTORY_ANSWERS:
                self.trade_gaps.give_up(request.gap, f"REST answered {BAD_HISTORY_ANSWERS} times with something "
                                        f"that is not a trade-history page ({error})", received_us, events)
            else:
                self._ask_history(request, received_us, events, actions)  # the runner spaces re-asks
            return DECODED_TRADE_SCHEMA.empty_table()
        rows = self.trade_gaps.take_page(request, page)
        remaining = self.trade_gaps.still_open(request.gap)
        if not remaining:
            if rows.num_rows:
                events.add(symbol, received_us, TRADE_GAP_FILLED,
                           f"trade ids {request.gap.first}..{request.gap.last} complete from REST")
        elif page.next_cursor is not None and page.next_cursor != request.cursor:
            low, high = min(g.first for g in remaining), max(g.last for g in remaining)
            gap = TradeGap(symbol, low, high, request.gap.after_us, request.gap.before_us)
            self._ask_history(BackfillRequest(gap, page.next_cursor), received_us, events, actions)
        else:
            self.trade_gaps.give_up(request.gap, "not in the exchange's REST trade history", received_us, events)
        return rows

    # --- state kept across runs -------------------------------------------------------------
    def export_state(self) -> dict[str, Any]:
        """What a later run needs to continue exactly (kept in the WAL checkpoint at every flush).
        Modules that keep more extend it (``{**super().export_state(), ...}``)."""
        return self.trade_gaps.export_state()

    def import_state(self, state: dict[str, Any]) -> None:
        """Restore ``export_state()`` from the previous run."""
        self.trade_gaps.import_state(state)

    def outstanding_actions(self) -> list[Action]:
        """Requests still owed after decoding the WAL (recovery performs no actions): the run asks again,
        e.g. the backfill of every trade gap still open."""
        actions: list[Action] = []
        events = BookEvents(self.name)
        for gap in self.trade_gaps.open_gaps():
            self._ask_history(BackfillRequest(gap), 0, events, actions)
        return actions

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
