"""Coinbase Advanced Trade WebSocket: ``market_trades``, ``level2`` and ``heartbeats`` (exchange-protocols.md, 2a).

Trade side. The protocol notes flag as unverified whether ``market_trades.side`` is the maker's or the
taker's side. We read it as the MAKER side, so the taker (aggressor) is the opposite:
- Coinbase's channel page says ``side`` "refers to the makers side" and the AsyncAPI spec calls it "the
  maker's side of the trade" (both quoted in third-party adapters that cite those pages; our stored doc copy
  does not carry the sentence);
- NautilusTrader's Coinbase adapter moved from mapping ``side`` straight to the aggressor to "Coinbase
  reports the maker side on public market trades, so the aggressor is the opposite side";
- it matches Coinbase's older Exchange feed and REST trades, where ``side`` is documented as the maker side.
The mapping is the single constant ``MARKET_TRADES_SIDE_IS_MAKER``; flip it if recorded data disagrees. To
check a recording: a taker buy lifts the offer, so its price sits at (or above) the best ask of the level2
book just before it; a taker sell hits the bid.

Sequencing. ``sequence_num`` counts every message on one connection. A CONNECTED record (new connection)
resets the expectation and the books; the first frame after it sets the base. The number is read leniently
before the strict decode, so a frame we cannot or need not decode still consumes it: an unknown channel
(Coinbase says new message types may appear at any time) is counted as ignored, a frame that fails the strict
decode (``side: "UNKNOWN_ORDER_SIDE"``, a truncated frame) is quarantined, an oversized or non-UTF-8 frame
the normalizer screened out is read from its first bytes; none of them looks like lost messages. A frame
numbered below the expectation is a duplicate or late copy of something already applied (one TCP stream
cannot reorder): it is ignored (control, counted in ``stale_sequence_frames``); its trades could add nothing
anyway, since trade ids are deduplicated. Should ``STALE_SEQUENCE_RESET`` frames in a row be numbered
below, the server restarted its count: the expectation follows it and the books resync, as after a gap. A
jump records one ``sequence_gap`` book event per configured symbol (the counter is not per product, so any
book may have lost updates), marks every book unsynced and, when books are maintained, asks for one
``Reconnect``: a fresh connection sends a fresh ``level2`` snapshot. A ``resync`` event follows when the
snapshot restores the book. With trades only, the gap is recorded but no reconnect is requested: a new
connection cannot give back lost trades (its trade snapshot is dropped below the high-water mark) and would
lose more while it reconnects.

Trades exactly once. The ``market_trades`` snapshot replays recent trades on every subscription. Per product
the highest trade id seen is kept (numeric comparison for numeric ids, string comparison otherwise);
snapshot trades at or below it are dropped (counted in ``snapshot_trades_dropped``; a frame left with no
trade counts as control). ``trade_high_water`` can be seeded by the caller after a restart. Numeric ids are
consecutive per product, so the shared trade-gap check (``trade_gaps.py``) records any hole and fills it
from the public REST market trades (``GET /api/v3/brokerage/market/products/{id}/ticker``, newest first,
paged back with ``end``).

Rate limits: three subscribe frames per connection (data channels first, heartbeats last) stay far below
the 8 unauthenticated messages/s per IP; reconnect pacing is the session's backoff.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, Literal

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trading_platform.config import Endpoints, ExchangeConfig
from trading_platform.exchanges.base import Exchange, TradeColumns
from trading_platform.exchanges.book import PriceLevel, SidedLevel
from trading_platform.exchanges.conversions import (
    UTC_US,
    datetime_us,
    highest_per_key,
    rfc3339_timestamps,
    taker_sides,
)
from trading_platform.exchanges.decoded import IGNORED, BookNumber, DecodeOutput, Int64, Reconnect
from trading_platform.exchanges.trade_gaps import BackfillRequest, TradePage
from trading_platform.exchanges.wire_columns import SEQUENCE, TRADES, FrameShape, wire_columns

# True: ``side`` is the maker's side, the taker traded the other way. See the module docstring.
MARKET_TRADES_SIDE_IS_MAKER: Final = True

_DATA_CHANNELS = ("market_trades", "level2")
_ACKED_DATA_CHANNELS = frozenset({"market_trades", "level2", "l2_data"})
_KNOWN_CHANNELS = frozenset({"market_trades", "l2_data", "heartbeats", "subscriptions"})
STALE_SEQUENCE_RESET = 50  # frames in a row numbered below the expectation: the server restarted its count
_SEQUENCE = re.compile(rb'"sequence_num"\s*:\s*(\d+)')
_CHANNEL = re.compile(rb'"channel"\s*:\s*"([^"\\]{1,64})"')
_PROBE_BYTES = 4096  # the envelope's fields come before its events
_DEFAULT_REST_URL = "https://api.coinbase.com"
TICKER_PAGE = 1000  # market trades per REST page


# --- wire structs -------------------------------------------------------------------------------------------
# gc=False: a tick decodes thousands of these and they hold no reference cycles. Unlisted fields are skipped.
# Trade prices and sizes are JSON strings, read as floats by the lax (strict=False) decoders below in the
# decode's own pass: exactly the JSON number grammar (and nan/inf, which the quality rules reject), correctly
# rounded; a text that is no number fails its frame (wrong_type, naming the field).
class _Trade(msgspec.Struct, gc=False):
    trade_id: str
    product_id: str
    price: float
    size: float
    side: Literal["BUY", "SELL"]
    time: str  # RFC3339; parsed for the whole batch at once in Arrow (a datetime per trade costs far more)


class _TradesEvent(msgspec.Struct, gc=False):
    type: Literal["snapshot", "update"]
    trades: list[_Trade]


class _Level(msgspec.Struct, gc=False):
    side: Literal["bid", "offer"]
    # Number texts read as floats by the lax decoders, as the trades' are: the book's (price, quantity) tuple is
    # made from them with no float() per text. A text that is no finite number, or a negative one, fails the
    # events (wrong_type, naming it).
    price: BookNumber = msgspec.field(name="price_level")
    quantity: BookNumber = msgspec.field(name="new_quantity")
    event_time: datetime | None = None


class _L2Event(msgspec.Struct, gc=False):
    type: Literal["snapshot", "update"]
    product_id: str
    updates: list[_Level]


class _HeartbeatEvent(msgspec.Struct, gc=False):
    heartbeat_counter: int | str = -1  # the prose docs show a string, production (AsyncAPI) sends an int
    current_time: str = ""


class _SubscriptionsEvent(msgspec.Struct, gc=False):
    subscriptions: dict[str, list[str]] = {}


# The envelope: sequence_num -1 is absent, not tracked. Its other fields (client_id, timestamp) are decoded only
# where they are read: the book's time is the envelope's on l2_data; a trade carries its own time, so parsing
# the envelope's for every market_trades frame would cost a datetime per frame for nothing.
class _Envelope(msgspec.Struct, tag_field="channel", kw_only=True, gc=False):
    sequence_num: Int64 = -1


class _MarketTrades(_Envelope, tag="market_trades"):
    events: list[_TradesEvent]


class _L2Envelope(_Envelope):
    """An ``l2_data`` message's fields but its events, which the two shapes below read differently."""

    timestamp: datetime  # the book's time (see _Envelope)


class _L2Data(_L2Envelope, tag="l2_data"):  # subscribed as "level2", delivered as "l2_data"
    """What the batch decode of a book subscriber reads: the events typed in the same pass as the envelope. (Kept
    as raw JSON and decoded per message, the batch decode scanned each events text once to skip it and the
    per-message decode again: ~12% of a book update. The batch's event and level lists no longer set off
    collections of the heap: the cyclic GC is held off while a batch is decoded, ``record_decoder.paused_gc``.)"""

    events: list[_L2Event]


class _RawL2Data(_L2Envelope, tag="l2_data"):
    """The same message with its events left as raw JSON, decoded per message (``_l2_events_decoder``): the
    frame-by-frame fallback reads this one, so a frame whose events are wrong-typed (which failed the typed batch)
    still consumes its sequence number and is quarantined by ``decode_field`` naming the field's full path, and the
    books it names are resynced, exactly as a batch with no such frame treats it; a trades-only subscriber never
    decodes book events at all."""

    events: msgspec.Raw


class _Heartbeats(_Envelope, tag="heartbeats"):
    events: list[_HeartbeatEvent] = []


class _Subscriptions(_Envelope, tag="subscriptions"):
    events: list[_SubscriptionsEvent] = []


_Message = _MarketTrades | _RawL2Data | _Heartbeats | _Subscriptions
_BookMessage = _MarketTrades | _L2Data | _Heartbeats | _Subscriptions  # the batch decode of a book subscriber


class _AckProbe(msgspec.Struct):
    channel: str = ""
    events: list[_SubscriptionsEvent] = []


class _Skipped:
    """Stands in the message list for a frame that was not decoded but carried a ``sequence_num``."""

    __slots__ = ("sequence_num",)

    def __init__(self, sequence_num: int) -> None:
        self.sequence_num = sequence_num


def _lenient_envelope(frame: bytes) -> tuple[str | None, int | None]:
    """(channel, sequence_num) read from the envelope's first bytes without decoding the frame."""
    head = frame[:_PROBE_BYTES]
    channel, sequence = _CHANNEL.search(head), _SEQUENCE.search(head)
    return (channel.group(1).decode("ascii", "replace") if channel else None,
            int(sequence.group(1)) if sequence else None)


class _HistoryPage(msgspec.Struct, gc=False):
    trades: list[_Trade]  # REST market trades have the WebSocket's trade fields (plus bid/ask, skipped)


_history_decoder = msgspec.json.Decoder(_HistoryPage, strict=False)  # lax: number strings read as floats
_batch_decoder = msgspec.json.Decoder(list[_Message], strict=False)
_book_batch_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(list[_BookMessage], strict=False)
_l2_events_decoder = msgspec.json.Decoder(list[_L2Event], strict=False)
_frame_decoder = msgspec.json.Decoder(_Message, strict=False)
_ack_decoder = msgspec.json.Decoder(_AckProbe)


def _numeric_id(trade_id: str) -> int | None:
    return int(trade_id) if trade_id.isascii() and trade_id.isdigit() else None


_TAKER_SOLD = "BUY" if MARKET_TRADES_SIDE_IS_MAKER else "SELL"  # a resting buy was hit


class Coinbase(Exchange):
    name = "coinbase"
    max_frame_bytes = 32 << 20  # a full level2 snapshot of a deep book
    symbol_noun = "product"
    trade_time_format = "RFC3339"
    # side: the maker's (see the module docstring).
    trade_fields = (("product_id", pa.string()), ("trade_id", pa.string()), ("price", pa.float64()),
                    ("size", pa.float64()), ("side", pa.string()), ("time", pa.string()), ("time", UTC_US))
    # An in-order update of trades, nearly every frame of a trade subscription: read by the compiled scan.
    trade_frame = FrameShape({"channel": "market_trades", "sequence_num": SEQUENCE,
                              "events": [{"type": "update", "trades": TRADES}]}, trade_fields,
                             {"side": ("BUY", "SELL")}, lax=True)  # as the decoders: number texts
    batch_decoder = _batch_decoder
    frame_decoder = _frame_decoder

    def __init__(self, config: ExchangeConfig) -> None:
        super().__init__(config)
        self._expected_sequence: int | None = None
        self._reconnect_requested = False
        self._gap_open: set[str] = set()  # symbols with a recorded gap and no resync yet
        self.trade_high_water: dict[str, int | str] = {}  # native product -> highest trade id seen
        self.snapshot_trades_dropped = 0
        self.heartbeat_counter: int | None = None
        self.rest_url = self.rest_url or _DEFAULT_REST_URL
        self._symbol_to_native = {symbol: native for native, symbol in self.native_to_symbol.items()}
        self._stale_in_a_row = 0  # frames numbered below the expectation, with no frame in order between them
        self._stale_expectation: int | None = None  # the expectation when the last of them came
        if self.wants_books:
            self.batch_decoder = _book_batch_decoder

    # --- connection ------------------------------------------------------------------------------------------
    @staticmethod
    def native_symbol(symbol: str) -> str:
        return symbol

    def connect_url(self, endpoints: Endpoints) -> str:
        return endpoints.ws_url

    def _channels(self) -> list[str]:
        # Data channels first: every subscribe acknowledgement then lists a data channel, so none of them can
        # be mistaken for the final unsubscribe acknowledgement (see is_unsubscribe_ack).
        wanted = {"market_trades": "trades" in self.config.channels, "level2": self.wants_books}
        return [channel for channel in _DATA_CHANNELS if wanted[channel]] + ["heartbeats"]

    def _frames(self, kind: str) -> list[str]:
        return [msgspec.json.encode({"type": kind, "product_ids": self.symbols, "channel": channel}).decode()
                for channel in self._channels()]

    def subscribe_frames(self) -> list[str]:
        return self._frames("subscribe")

    def unsubscribe_frames(self) -> list[str]:
        return self._frames("unsubscribe")

    def is_unsubscribe_ack(self, frame: bytes) -> bool:
        """A ``subscriptions`` message listing no product on any data channel: the data has stopped."""
        if b'"subscriptions"' not in frame:
            return False
        try:
            probe = _ack_decoder.decode(frame)
        except msgspec.DecodeError:
            return False
        return probe.channel == "subscriptions" and not any(
            products for event in probe.events for channel, products in event.subscriptions.items()
            if channel in _ACKED_DATA_CHANNELS)

    # --- decoding: the protocol's part of the template ------------------------------------------------------
    def on_screened(self, payload: bytes, received_us: int, out: DecodeOutput) -> None:
        # Quarantined by the normalizer (oversized, not UTF-8), but it was a message: count its number.
        _, sequence = _lenient_envelope(payload)
        if sequence is not None:
            self._in_sequence(sequence, received_us, out)

    def classify_rejected(self, frame: bytes, error: msgspec.DecodeError) -> tuple[str, str]:
        channel, _ = _lenient_envelope(frame)
        if channel is not None and channel not in _KNOWN_CHANNELS:
            self.counters[f"ignored_channel_{channel}"] += 1
            return IGNORED, f"channel {channel!r}"
        return super().classify_rejected(frame, error)

    def classify_message(self, message: Any) -> tuple[str, str] | None:
        if isinstance(message, dict) and message.get("type") == "error":
            return "exchange_error", f"error reply: {message.get('message')} {message.get('reason') or ''}".strip()
        return None

    def stand_in(self, frame: bytes) -> _Skipped | None:
        # A refused frame was a message all the same: keep the numbering whole.
        _, sequence = _lenient_envelope(frame)
        return _Skipped(sequence) if sequence is not None else None

    def export_state(self) -> dict[str, Any]:
        # Snapshot trades after a restart must not re-add trades an earlier run stored.
        return {**super().export_state(), "trade_high_water": dict(self.trade_high_water)}

    def import_state(self, state: dict[str, Any]) -> None:
        super().import_state(state)
        self.trade_high_water = dict(state.get("trade_high_water", {}))

    # --- trade history: GET /api/v3/brokerage/market/products/{id}/ticker (newest first) ---------------------
    def trade_history_url(self, request: BackfillRequest) -> str:
        gap = request.gap
        after_s = (gap.after_us or max(gap.before_us - 60_000_000, 0)) // 1_000_000
        # `end` pages back: the first page ends just after the trade that followed the gap.
        end = request.cursor or str(-(-gap.before_us // 1_000_000) + 1)
        return (f"{self.rest_url}/api/v3/brokerage/market/products/{gap.symbol}/ticker"
                f"?limit={TICKER_PAGE}&start={after_s}&end={end}")

    def parse_trade_history(self, request: BackfillRequest, body: bytes, frame_index: int,
                            received_us: int) -> TradePage:
        try:
            page = _history_decoder.decode(body)
        except msgspec.DecodeError as error:
            raise ValueError(f"not a market-trades page: {error}") from None
        trades = page.trades
        try:
            ids = np.array([int(t.trade_id) for t in trades], dtype=np.int64)
        except ValueError as error:
            raise ValueError(f"non-numeric trade id: {error}") from None
        columns = self.trade_columns(wire_columns(trades, self.trade_fields))
        if columns.timestamps.null_count:
            bad = pc.indices_nonzero(pc.is_null(columns.timestamps))[0].as_py()
            raise ValueError(f"trade time {trades[bad].time!r} is not RFC3339")
        table, _ = self.trade_rows(columns, [frame_index] * len(trades), [received_us] * len(trades))
        # A full page that has not reached back to the gap's start continues before its oldest trade.
        more = len(trades) >= TICKER_PAGE and int(ids.min()) > request.gap.first
        oldest_us = pc.min(columns.timestamps.cast(pa.int64())).as_py() if more else None
        cursor = str(oldest_us // 1_000_000 + 1) if oldest_us is not None else None
        return TradePage(table, ids, cursor)

    def new_connection(self) -> None:
        """Books and the per-connection sequence restart; trade high-water marks carry over."""
        super().new_connection()
        self._expected_sequence = None
        self._reconnect_requested = False

    def scan_frames(self, frames: list[bytes], lo: int, hi: int, out: DecodeOutput) -> int:
        # Only the frames numbered on from the expectation: the rest take the decode (its sequence rules).
        expected = self._expected_sequence
        if expected is None or self.trade_frame is None:
            return 0
        scanned = self.scan_trade_frames(frames, lo, hi, out, expected)
        self._expected_sequence = expected + scanned
        return scanned

    def on_messages(self, messages: list[Any], indices: Sequence[int], frames: list[bytes],
                    received_us: list[int], out: DecodeOutput) -> None:
        # The hot loop: an in-order frame holding one update event of trades is handled inline; anything else
        # (a gap, a duplicate, a snapshot, books, control) takes the general path.
        expected = self._expected_sequence
        trades, trade_frames = out.trades, out.trade_frames
        decoded: list[_Message | _BookMessage | _Skipped] = messages
        for message, index in zip(decoded, indices, strict=True):
            if message.sequence_num == expected:
                expected += 1
            else:
                self._expected_sequence = expected
                if not self._in_sequence(message.sequence_num, received_us[index], out):
                    expected = self._expected_sequence
                    out.control += 1
                    continue
                expected = self._expected_sequence
            if type(message) is _MarketTrades:
                events = message.events
                if len(events) == 1:
                    event = events[0]
                    if event.type == "update":
                        count = len(event.trades)
                        if count == 1:
                            trades.append(event.trades[0])
                            trade_frames.append(index)
                            continue
                        if count:
                            trades += event.trades
                            trade_frames += [index] * count
                            continue
            elif type(message) is _L2Data:  # events typed by the batch decode
                for l2_event in message.events:
                    self._l2_event(l2_event, message, received_us[index], frames[index], out)
                continue
            elif isinstance(message, _Skipped):
                continue
            self._apply(message, index, frames, received_us, out)
        self._expected_sequence = expected

    def _apply(self, message: _Message | _BookMessage, index: int, frames: list[bytes], received_us: list[int],
               out: DecodeOutput) -> None:
        """A frame already checked for sequence."""
        received, frame = received_us[index], frames[index]
        if isinstance(message, _MarketTrades):
            self._trades(message, index, frames, received_us, out)
        elif isinstance(message, _RawL2Data):
            if not self.wants_books:
                out.control += 1
                return
            events = self.decode_field(_l2_events_decoder, message.events, "events", received, frame, out.rejects)
            if events is None:
                # Its changes are lost, so the books they were for are untrusted until a fresh snapshot.
                for symbol, kind in self._books_named(message.events).items():
                    self._book_refused(symbol, kind, out.rejects.details[-1], received, out)
                return
            for event in events:
                self._l2_event(event, message, received, frame, out)
        else:
            if isinstance(message, _Heartbeats):
                for beat in message.events:
                    counter = _counter(beat.heartbeat_counter)
                    if counter is not None:
                        self.heartbeat_counter = counter
            out.control += 1

    def _in_sequence(self, sequence: int, received: int, out: DecodeOutput) -> bool:
        """False for a frame already seen (numbered below the expectation); records gaps."""
        if sequence < 0:
            return True
        expected = self._expected_sequence
        if expected is None or sequence == expected:
            self._expected_sequence = sequence + 1
            return True
        if sequence < expected:
            self.counters["stale_sequence_frames"] += 1
            # In a row: no frame came in order since the last one below (the expectation has not moved). Copies
            # between frames in order are copies, however many a connection sees.
            self._stale_in_a_row = self._stale_in_a_row + 1 if expected == self._stale_expectation else 1
            self._stale_expectation = expected
            if self._stale_in_a_row < STALE_SEQUENCE_RESET:
                return False
            # The count restarted on this connection: follow it, and resync the books like after a gap.
            self._expected_sequence = sequence + 1
            detail = f"sequence_num restarted at {sequence} (expected {expected})"
            self._lose_books(self.symbols, "sequence_gap", detail, received, out)
            return True
        self._expected_sequence = sequence + 1
        detail = f"sequence_num expected {expected} got {sequence} ({sequence - expected} messages missing)"
        self._lose_books(self.symbols, "sequence_gap", detail, received, out)
        return True

    def _books_named(self, raw_events: bytes) -> dict[str, str]:
        """The books a refused ``events`` text was for, each with the kind of event lost ("snapshot" if any of its
        events was one, else "update"); every book, as "update", if it names no configured product."""
        lost: dict[str, str] = {}
        for symbol, event in self.entries_naming(raw_events, "product_id"):
            if lost.get(symbol) != "snapshot":
                lost[symbol] = "snapshot" if event.get("type") == "snapshot" else "update"
        return lost or dict.fromkeys(self.symbols, "update")

    def _book_refused(self, symbol: str, kind: str, detail: str, received: int, out: DecodeOutput) -> None:
        """A ``kind`` ("snapshot" or "update") event of ``symbol``'s book was refused, none of its levels applied:
        a book in sync is untrusted until a fresh snapshot, and so is one whose snapshot was lost (it would wait
        forever)."""
        if self.synced[symbol] or kind == "snapshot":
            self._lose_books([symbol], f"{kind}_rejected", detail, received, out)

    def _lose_books(self, symbols: list[str], kind: str, detail: str, received: int, out: DecodeOutput) -> None:
        """Messages or updates of these books were lost (a ``kind`` event each): untrusted until a fresh snapshot,
        which only a new connection sends."""
        for symbol in symbols:
            out.events.add(symbol, received, kind, detail)
            self.synced[symbol] = False
        if self.wants_books:
            self._gap_open.update(symbols)
            if not self._reconnect_requested:
                self._reconnect_requested = True
                out.actions.append(Reconnect(f"coinbase {detail}: fresh level2 snapshot needed"))

    # --- trades ----------------------------------------------------------------------------------------------
    def _trades(self, message: _MarketTrades, index: int, frames: list[bytes], received_us: list[int],
                out: DecodeOutput) -> None:
        produced = 0
        for event in message.events:
            trades = event.trades
            if event.type == "snapshot":
                # The high-water marks must include every earlier trade before judging a replay: the trades so
                # far are made final first (which raises the marks), as at the end of a call.
                self.settle(frames, received_us, out)
                trades = self._unseen(trades)
            out.trades.extend(trades)
            out.trade_frames.extend([index] * len(trades))
            produced += len(trades)
        if not produced:
            out.control += 1

    def _unseen(self, trades: list[_Trade]) -> list[_Trade]:
        """Snapshot trades above the high-water mark, judged against the marks from before the snapshot
        (a snapshot lists newest first, so raising the marks while filtering would drop older new trades)."""
        marks = self.trade_high_water
        kept = [t for t in trades if not _at_or_below(t.trade_id, marks.get(t.product_id))]
        self.snapshot_trades_dropped += len(trades) - len(kept)
        return kept

    def _raise_high_water(self, product: str, trade_id: str | int) -> None:
        if isinstance(trade_id, str):
            numeric = _numeric_id(trade_id)
            trade_id = numeric if numeric is not None else trade_id
        current = self.trade_high_water.get(product)
        if current is None or not _at_or_below(trade_id, current):
            self.trade_high_water[product] = trade_id

    def trade_columns(self, fields: list[pa.Array]) -> TradeColumns:
        natives, trade_ids, prices, quantities, maker_sides, times, parsed_times = fields
        return TradeColumns(natives, trade_ids, prices, quantities, taker_sides(pc.equal(maker_sides, _TAKER_SOLD)),
                            rfc3339_timestamps(times, parsed_times), times)

    def on_trade_rows(self, table: pa.Table, followed: bool) -> None:
        if followed:
            # The continuity check kept each symbol's highest id: a dict per symbol, not a pass over the rows.
            for symbol, last in self.trade_gaps.last_id.items():
                product = self._symbol_to_native.get(symbol)
                if product is not None:
                    self._raise_high_water(product, last)
        else:
            self._raise_high_water_vectorized(table)

    def _raise_high_water_vectorized(self, table: pa.Table) -> None:
        """Ids the continuity check does not follow (not numeric, or out of its range): the highest per product."""
        if not table.num_rows:
            return
        products, trade_ids = table.column("native_symbol"), table.column("trade_id")
        try:
            ids = pc.cast(trade_ids, pa.int64())
        except pa.ArrowInvalid:  # non-numeric or huge ids: compare one by one
            for product, trade_id in zip(products.to_pylist(), trade_ids.to_pylist(), strict=True):
                self._raise_high_water(product, trade_id)
            return
        for product, trade_id in highest_per_key(products, ids.to_numpy()).items():
            self._raise_high_water(product, trade_id)

    # --- books -----------------------------------------------------------------------------------------------
    def _l2_event(self, event: _L2Event, message: _L2Envelope, received: int, frame: bytes,
                  out: DecodeOutput) -> None:
        symbol = self.native_to_symbol.get(event.product_id)
        if symbol is None:
            self.reject_unknown_symbol(event.product_id, received, frame, out.rejects)
            return
        if event.type == "snapshot":
            # Snapshot levels may carry the epoch as event_time: the envelope time is the book's time.
            bids, asks = _book_levels(event.updates)
            self.apply_book_snapshot(symbol, bids, asks, datetime_us(message.timestamp), received,
                                     message.sequence_num, out)
        elif self.synced[symbol]:  # else ignored until the next snapshot
            # The change's time is its last level's (the envelope's when it has none, or the epoch).
            last = event.updates[-1].event_time if event.updates else None
            event_us = datetime_us(last) if last is not None else 0
            self.apply_book_changes(symbol, event.updates, event_us if event_us > 0 else datetime_us(message.timestamp),
                                    received, message.sequence_num, out)

    def apply_book_snapshot(self, symbol: str, bids: list[PriceLevel], asks: list[PriceLevel], event_us: int | None,
                            received_us: int, sequence: int, out: DecodeOutput) -> None:
        """Replace the book with a full snapshot; it is in sync from here. ``event_us`` None: the snapshot
        carries no exchange time, so emission waits for the next timed change."""
        book = self.books[symbol]
        book.clear()
        book.apply(bids, asks)
        book.sequence = max(sequence, 0)
        self.synced[symbol] = True
        if symbol in self._gap_open:
            self._gap_open.discard(symbol)
            out.events.add(symbol, received_us, "resync", "book rebuilt from a fresh snapshot")
        if event_us is not None:
            self.emit_if_due(symbol, event_us, received_us, out.snapshots)

    def apply_book_changes(self, symbol: str, changes: Sequence[SidedLevel], event_us: int, received_us: int,
                           sequence: int, out: DecodeOutput) -> None:
        """Absolute quantities per level ("0" removes), each naming its side ("bid" or "offer"); ignored while the
        book awaits a snapshot."""
        if not self.synced[symbol]:
            return
        book = self.books[symbol]
        book.apply_changes(changes, "bid")
        book.sequence = max(sequence, 0)
        self.emit_if_due(symbol, event_us, received_us, out.snapshots)


def _book_levels(updates: list[_Level]) -> tuple[list[PriceLevel], list[PriceLevel]]:
    """A snapshot's bids and asks as the book's (price, quantity) tuples, in one pass over both sides (the decode
    has already refused any level that is no finite number)."""
    bids: list[PriceLevel] = []
    asks: list[PriceLevel] = []
    for update in updates:
        (bids if update.side == "bid" else asks).append((update.price, update.quantity))
    return bids, asks


def _at_or_below(trade_id: str | int, mark: int | str | None) -> bool:
    if mark is None:
        return False
    candidate: int | str | None = _numeric_id(trade_id) if isinstance(trade_id, str) else trade_id
    if candidate is None:
        candidate = trade_id
    if isinstance(candidate, int) and isinstance(mark, int):
        return candidate <= mark
    return str(candidate) <= str(mark)


def _counter(value: int | str) -> int | None:
    if isinstance(value, int):
        return value if value >= 0 else None
    return _numeric_id(value)
