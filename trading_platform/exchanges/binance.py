"""Binance Spot: combined-stream ``@trade`` frames and ``@depth@100ms`` order books (exchange-protocols.md, §1).

Trades are decoded a batch at a time into Arrow columns. Depth updates, REST snapshots, connection
records and ``serverShutdown`` are handled one by one, in receive order, by the documented Spot local
order book procedure (the corrected 2025-11-12 text, not the futures ``pu`` rule).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trading_platform.config import Endpoints, ExchangeConfig
from trading_platform.exchanges.base import Exchange, TradeColumns
from trading_platform.exchanges.book import PriceLevel, check_finite, parse_levels
from trading_platform.exchanges.conversions import millis_timestamps, taker_sides
from trading_platform.exchanges.decoded import CONTROL, IGNORED, DecodeOutput, FetchSnapshot, Int64, Millis, Reconnect
from trading_platform.exchanges.trade_gaps import BackfillRequest, TradePage
from trading_platform.exchanges.wire_columns import TRADE, FrameShape
from trading_platform.settings import ConfigError


# gc=False: a tick decodes thousands of these at once and they hold no reference cycles, so keeping
# them out of the cyclic GC doubles decode speed. Fields not listed (E, M) are skipped by msgspec.
# Prices and quantities are JSON strings; the frame decoders are lax (strict=False) so msgspec reads them as
# floats in the decode's own pass: its reader takes exactly the JSON number grammar (and nan/inf, which the
# quality rules reject), correctly rounded as Arrow's text cast was, and a text that is no number fails the
# frame (quarantined as wrong_type, naming the field). A str per number and an Arrow text column less.
class _Trade(msgspec.Struct, tag_field="e", tag="trade", gc=False):
    s: str
    t: Int64
    p: float
    q: float
    T: Millis
    m: bool


class _AggTrade(msgspec.Struct, tag_field="e", tag="aggTrade", gc=False):
    """Legacy archives recorded ``@aggTrade``. The trade id column carries the aggregate id ``a`` (one row
    per aggregate, whose f..l trade ids are not kept): attribute ``t`` so both kinds share one column path."""

    s: str
    t: Int64 = msgspec.field(name="a")
    p: float
    q: float
    T: Millis
    m: bool


class _DepthEvent(msgspec.Struct, tag_field="e", gc=False):
    """A ``depthUpdate``'s fields but its levels, which the two shapes below read differently."""

    E: Millis
    s: str
    U: Int64
    u: Int64


class _Depth(_DepthEvent, tag="depthUpdate"):
    """What the batch decode of a book subscriber reads: the levels typed in the same pass as the event, their
    number texts read as floats by the lax decoder (as the trades' are), so each level is the book's own
    (price, quantity) tuple as msgspec built it. (Kept as raw JSON and decoded per event, each event paid two more
    decoder calls, ~6.5k instructions: an eighth of a book update; decoded as texts, a float() per text and a
    second tuple per level were a third of a book update. The batch's level lists no longer set off collections of
    the heap: the cyclic GC is held off while a batch is decoded, ``record_decoder.paused_gc``.)"""

    b: list[PriceLevel]
    a: list[PriceLevel]


class _RawDepth(_DepthEvent, tag="depthUpdate"):
    """The same event with its levels left as JSON text, decoded when it is handled (``_levels_decoder``): the
    frame-by-frame fallback reads this one, so an event whose levels are wrong-typed (which failed the typed batch)
    is quarantined as ``depth levels: ...``, and one whose number text is no number as ``depth level is not a
    number``, whatever frames share its batch; a trades-only subscriber never decodes levels."""

    b: msgspec.Raw
    a: msgspec.Raw


class _Diff(NamedTuple):
    """One depth event with its levels parsed (checked numbers), buffered until a snapshot."""

    time_ms: int  # E
    first: int  # U
    last: int  # u
    bids: list[PriceLevel]
    asks: list[PriceLevel]


class _Shutdown(msgspec.Struct, tag_field="e", tag="serverShutdown", gc=False):
    E: Millis = 0


class _RawShutdown(msgspec.Struct):
    """``{"e":"serverShutdown","E":…}`` on a raw (non-combined) stream. A tagged Struct decoded on its own
    treats a missing tag as a match, so the tag is a required field here."""

    e: Literal["serverShutdown"]


class _Combined(msgspec.Struct, gc=False):
    """The typed decode's shape of a run of trades only (most @trade frames never get here: the compiled scan reads
    them, ``Binance.trade_frame``). Any other frame fails it and takes the split path."""

    data: _Trade | _AggTrade


class _AnyCombined(msgspec.Struct, gc=False):
    data: _Trade | _AggTrade | _RawDepth | _Shutdown


class _BookCombined(msgspec.Struct, gc=False):
    """The batch shape of a book subscriber (see ``_Depth``)."""

    data: _Trade | _AggTrade | _Depth | _Shutdown


class _Snapshot(msgspec.Struct):
    lastUpdateId: Int64
    bids: list[PriceLevel]  # read as floats by the lax decoder, as the depth events' levels
    asks: list[PriceLevel]


class _Control(msgspec.Struct):
    id: Int64 | str | None
    result: object = None


_Payload = _Trade | _AggTrade | _Depth | _RawDepth | _Shutdown
_NOT_TRADES = frozenset({_Depth, _RawDepth, _Shutdown})

_batch_decoder = msgspec.json.Decoder(list[_Combined], strict=False)  # lax: number strings read as floats
_book_batch_decoder = msgspec.json.Decoder(list[_BookCombined], strict=False)
_frame_decoder = msgspec.json.Decoder(_AnyCombined, strict=False)
_raw_shutdown_decoder = msgspec.json.Decoder(_RawShutdown)
_snapshot_decoder = msgspec.json.Decoder(_Snapshot, strict=False)
# The fallback's levels: texts (or numbers, as the lax batch decode accepts them), converted by parse_levels, which
# tells a text that is no number from a wrong-typed level.
_levels_decoder = msgspec.json.Decoder(list[tuple[str | float, str | float]])
_control_decoder = msgspec.json.Decoder(_Control)

_UNSUBSCRIBE_ID = 0x7FFF_0001  # reserved request id: its reply ends a drain
_SUBSCRIBE_ID = 1
_MAX_STREAMS = 1024  # per connection
# Snapshot depth. Weight by limit: 1-100 → 5, 101-500 → 25, 501-1000 → 50, 1001-5000 → 250. The IP budget is
# exchangeInfo's REQUEST_WEIGHT (6000/min today, 1200/min historically): 20 symbols resyncing at once cost
# 20 x 50 = 1000 at limit=1000, inside even the old budget with room for retries, whereas limit=5000 would
# cost 5000 and a second round would be refused. 1000 levels per side is far beyond the emitted depth.
SNAPSHOT_LIMIT = 1000
REQUEST_WEIGHT_PER_MINUTE = 6000  # exchangeInfo rateLimits REQUEST_WEIGHT (per IP)
HISTORICAL_LIMIT = 1000  # historicalTrades page size (the maximum)


class _HistoricalTrade(msgspec.Struct, gc=False):
    id: Int64
    price: str
    qty: str
    time: Millis
    isBuyerMaker: bool


_historical_decoder = msgspec.json.Decoder(list[_HistoricalTrade])
# Events kept per symbol while its snapshot is awaited (~100 s at 100 ms). Dropping the oldest is safe: a
# snapshot older than the first kept event fails the staleness check and is fetched again.
_MAX_BUFFERED = 1000
_DEFAULT_REST_URL = "https://api.binance.com"


class Binance(Exchange):
    name = "binance"
    # Both trade shapes' fields (t: @trade's trade id, @aggTrade's aggregate id a).
    trade_fields = (("s", pa.string()), ("t", pa.int64()), ("p", pa.float64()), ("q", pa.float64()),
                    ("m", pa.bool_()), ("T", pa.int64()))
    # A combined-stream @trade frame, nearly every frame of a trade subscription: read by the compiled scan
    # (number texts read as the lax decoders read them; an @aggTrade frame is left to the decode).
    trade_frame = FrameShape({"data": TRADE(e="trade")}, trade_fields, lax=True)
    frame_decoder = _frame_decoder

    def __init__(self, config: ExchangeConfig) -> None:
        super().__init__(config)
        streams = len(self._streams())
        if streams > _MAX_STREAMS:
            raise ConfigError(f"exchanges.binance: {streams} streams exceed Binance's {_MAX_STREAMS} per connection "
                              f"(each symbol needs one per channel); configure fewer symbols")
        # Set by use_endpoints; the offline importer never connects and never performs actions.
        self.rest_url = self.rest_url or _DEFAULT_REST_URL
        self._buffers: dict[str, deque[_Diff]] = {s: deque(maxlen=_MAX_BUFFERED) for s in self.symbols}
        self._pending: dict[str, bool] = dict.fromkeys(self.symbols, False)  # FetchSnapshot asked, not answered
        self._after_gap: dict[str, bool] = dict.fromkeys(self.symbols, False)  # next sync records `resync`
        self._stream_names = frozenset(self._streams())
        # The trades not yet settled include aggTrades, whose ids are not the trade sequence: set as frames are
        # handled, cleared by each settle (on_trade_rows).
        self._aggregated = False
        # With books, nearly every run holds depth frames: decode all kinds at once rather than fail the
        # trades-only shape.
        self.batch_decoder = _book_batch_decoder if self.wants_books else _batch_decoder

    @staticmethod
    def native_symbol(symbol: str) -> str:
        return symbol.replace("-", "")

    def _streams(self) -> list[str]:
        natives = [self.native_symbol(s).lower() for s in self.symbols]
        streams = [f"{n}@trade" for n in natives] if "trades" in self.config.channels or not self.wants_books else []
        if self.wants_books:
            streams += [f"{n}@depth@100ms" for n in natives]
        return streams

    def connect_url(self, endpoints: Endpoints) -> str:
        # Streams ride on the URL: no SUBSCRIBE frames, so the 5 msg/s inbound limit is not touched
        # at connect (at most 1024 streams, checked at construction).
        return f"{endpoints.ws_url}?streams={'/'.join(self._streams())}"

    def subscribe_frames(self) -> list[str]:
        return []

    def unsubscribe_frames(self) -> list[str]:
        request = {"method": "UNSUBSCRIBE", "params": self._streams(), "id": _UNSUBSCRIBE_ID}
        return [msgspec.json.encode(request).decode()]

    def is_unsubscribe_ack(self, frame: bytes) -> bool:
        if b'"id"' not in frame or b'"stream"' in frame:
            return False
        try:
            return _control_decoder.decode(frame).id == _UNSUBSCRIBE_ID
        except msgspec.DecodeError:
            return False

    # --- trade history: GET /api/v3/historicalTrades?symbol=&fromId=&limit= (ascending ids) ---------
    def trade_history_url(self, request: BackfillRequest) -> str:
        first = int(request.cursor) if request.cursor else request.gap.first
        limit = min(HISTORICAL_LIMIT, request.gap.last - first + 1)
        return (f"{self.rest_url}/api/v3/historicalTrades?symbol={self.native_symbol(request.gap.symbol)}"
                f"&fromId={first}&limit={limit}")

    def parse_trade_history(self, request: BackfillRequest, body: bytes, frame_index: int,
                            received_us: int) -> TradePage:
        try:
            history = _historical_decoder.decode(body)
        except msgspec.DecodeError as error:
            raise ValueError(f"not historicalTrades: {error}") from None
        rows = self.history_rows(request.gap.symbol, [t.id for t in history], [t.price for t in history],
                                 [t.qty for t in history], ["sell" if t.isBuyerMaker else "buy" for t in history],
                                 [t.time * 1000 for t in history], received_us, frame_index)
        count = len(history)
        ids = np.array([t.id for t in history], dtype=np.int64)
        first = int(request.cursor) if request.cursor else request.gap.first
        asked = min(HISTORICAL_LIMIT, request.gap.last - first + 1)
        # A full page that stops short of the gap's end: the next page starts after it. Anything else is
        # all the exchange has from that id on.
        more = count >= asked and count > 0 and int(ids.max()) < request.gap.last
        return TradePage(rows, ids, str(int(ids.max()) + 1) if more else None)

    def rest_pause_s(self, headers: dict[str, str]) -> float:
        """Binance counts request weight per IP and minute (X-MBX-USED-WEIGHT-1M) and bans clients that keep
        going past it: with 90 % used, wait for the next minute."""
        used = headers.get("x-mbx-used-weight-1m")
        if used is None or not used.isdigit() or int(used) < REQUEST_WEIGHT_PER_MINUTE * 0.9:
            return 0.0
        return 61.0 - time.time() % 60

    def snapshot_url(self, symbol: str) -> str:
        return f"{self.rest_url}/api/v3/depth?symbol={self.native_symbol(symbol)}&limit={SNAPSHOT_LIMIT}"

    # --- decoding: the protocol's part of the template ---------------------------------------------
    def decode_frame(self, frame: bytes) -> _AnyCombined:
        try:
            return _frame_decoder.decode(frame)
        except msgspec.DecodeError:
            try:
                _raw_shutdown_decoder.decode(frame)
            except msgspec.DecodeError:
                pass
            else:
                return _AnyCombined(_Shutdown())
            raise  # the combined-stream error, which names the field that failed

    def classify_message(self, message: Any) -> tuple[str, str] | None:
        return _classify(message, self._stream_names)

    def on_messages(self, messages: list[Any], indices: Sequence[int], frames: list[bytes],
                    received_us: list[int], out: DecodeOutput) -> None:
        payloads: list[_Payload] = [m.data for m in messages]
        # One C-level pass; book frames are rare next to trades (~10/s per symbol), so most runs are trades only.
        kinds = set(map(type, payloads))
        if _AggTrade in kinds:
            self._aggregated = True
        if not kinds & _NOT_TRADES:
            out.trades += payloads
            out.trade_frames += indices
            return
        for payload, index in zip(payloads, indices, strict=True):
            if isinstance(payload, _DepthEvent):
                self._depth_frame(payload, index, frames, received_us, out)
            elif type(payload) is _Shutdown:
                # The server is going away: reconnect now. Expected control traffic, not bad data.
                out.control += 1
                if Reconnect("serverShutdown") not in out.actions:
                    out.actions.append(Reconnect("serverShutdown"))
            else:
                out.trades.append(payload)
                out.trade_frames.append(index)

    def trade_columns(self, fields: list[pa.Array]) -> TradeColumns:
        natives, trade_ids, prices, quantities, buyer_is_maker, times_ms = fields
        # m: the buyer is the maker, so the aggressor (taker) sold.
        return TradeColumns(natives, pc.cast(trade_ids, pa.string()), prices, quantities, taker_sides(buyer_is_maker),
                            millis_timestamps(times_ms))

    def trade_ids(self, table: pa.Table) -> np.ndarray | None:
        return None if self._aggregated else super().trade_ids(table)  # aggTrade ids are another sequence

    def on_trade_rows(self, table: pa.Table, followed: bool) -> None:
        self._aggregated = False  # the next rows are judged by the frames they come from

    def on_rest_answer(self, payload: bytes, received_us: int, out: DecodeOutput) -> None:
        self._on_snapshot(payload, received_us, out)

    # --- order books: one record at a time, in receive order -----------------------------------
    def _depth_frame(self, payload: _Depth | _RawDepth, index: int, frames: list[bytes], received_us: list[int],
                     out: DecodeOutput) -> None:
        symbol = self.native_to_symbol.get(payload.s)
        if symbol is None:
            self.reject_unknown_symbol(payload.s, received_us[index], frames[index], out.rejects)
        elif not self.wants_books:
            out.control += 1  # a stream we did not ask for (e.g. an archive): not data for us
        else:
            try:
                if isinstance(payload, _Depth):
                    bid_levels, ask_levels = payload.b, payload.a
                    check_finite(bid_levels)
                    check_finite(ask_levels)
                else:
                    try:
                        bids, asks = _levels_decoder.decode(payload.b), _levels_decoder.decode(payload.a)
                    except msgspec.DecodeError as error:
                        # Dropped like a lost frame (as every reject): the next event's U shows the hole and the
                        # book resyncs.
                        out.rejects.add(received_us[index], "wrong_type", f"depth levels: {error}", frames[index])
                        return
                    bid_levels, ask_levels = parse_levels(bids), parse_levels(asks)
            except ValueError:
                out.rejects.add(received_us[index], "wrong_type", "depth level is not a number", frames[index])
                return
            self._on_depth(symbol, payload.E, payload.U, payload.u, bid_levels, ask_levels, received_us[index], out)

    def new_connection(self) -> None:
        """A new connection: books, buffers and outstanding snapshot requests all belong to the old one.
        An unclosed gap stays open, so the next sync still records its `resync`."""
        super().new_connection()
        for symbol in self.symbols:
            self._buffers[symbol].clear()
            self._pending[symbol] = False

    def _on_depth(self, symbol: str, time_ms: int, first: int, last: int, bids: list[PriceLevel],
                  asks: list[PriceLevel], received_us: int, out: DecodeOutput) -> None:
        """Buffer one diff event (E, U, u and its levels) while unsynced (asking for a snapshot once), else
        apply it (step 6). The event's fields come one by one, not as an object: in sync, nothing is kept."""
        if not self.synced[symbol]:
            self._buffers[symbol].append(_Diff(time_ms, first, last, bids, asks))
            if not self._pending[symbol]:
                self._pending[symbol] = True
                out.actions.append(FetchSnapshot(symbol, self.snapshot_url(symbol)))
            return
        book = self.books[symbol]
        if last < book.sequence:
            return  # already contained in the book
        expected = book.sequence + 1
        if first > expected:
            self._gap(symbol, received_us, f"expected U={expected}, got U={first} u={last}", out)
            # Buffered: the first event of the resync.
            self._on_depth(symbol, time_ms, first, last, bids, asks, received_us, out)
            return
        book.apply(bids, asks)
        book.sequence = last
        self.emit_if_due(symbol, time_ms * 1000, received_us, out.snapshots)

    def _gap(self, symbol: str, received_us: int, detail: str, out: DecodeOutput) -> None:
        """Stamped with the time the platform detected the gap (``received_us``: of the frame or REST answer that
        showed it), as every book event is; the exchange's event time would date it before frames still
        received and emitted in sync."""
        out.events.add(symbol, received_us, "sequence_gap", detail)
        self.books[symbol].clear()
        self.synced[symbol] = False
        self._buffers[symbol].clear()
        self._after_gap[symbol] = True

    def _on_snapshot(self, payload: bytes, received_us: int, out: DecodeOutput) -> None:
        """A REST record ``b"<symbol>\\n" + body`` answering a FetchSnapshot (steps 2-6 of the procedure)."""
        symbol_text, _, body = payload.partition(b"\n")
        symbol = symbol_text.decode("utf-8", "replace").strip()
        if symbol not in self.books:
            out.rejects.add(received_us, "unknown_symbol", f"snapshot for {symbol!r}, not configured", payload)
            return
        if not self._pending[symbol]:
            out.control += 1  # answers a request forgotten at a reconnect, or a duplicate
            return
        events = out.events
        try:
            snapshot = _snapshot_decoder.decode(body)
            bids, asks = snapshot.bids, snapshot.asks
            check_finite(bids)
            check_finite(asks)
        except (msgspec.DecodeError, ValueError) as error:
            out.rejects.add(received_us, "bad_snapshot", f"not a depth snapshot: {error}", payload)
            out.actions.append(FetchSnapshot(symbol, self.snapshot_url(symbol)))
            return
        last = snapshot.lastUpdateId
        buffer = self._buffers[symbol]
        if buffer and last < buffer[0].first:
            events.add(symbol, received_us, "stale_snapshot",
                       f"lastUpdateId={last} < U={buffer[0].first} of the first buffered event")
            out.actions.append(FetchSnapshot(symbol, self.snapshot_url(symbol)))
            return
        remaining = [event for event in buffer if event.last > last]
        buffer.clear()
        self._pending[symbol] = False
        if remaining and remaining[0].first > last + 1:
            first = remaining[0]
            self._gap(symbol, received_us, f"snapshot lastUpdateId={last}: expected U<={last + 1}, "
                                           f"got U={first.first} u={first.last}", out)
        else:
            book = self.books[symbol]
            book.clear()
            book.apply(bids, asks)
            book.sequence = last
            self.synced[symbol] = True
        # Buffered events meet the live rules; after a gap they are buffered again for the next snapshot.
        for event in remaining:
            self._on_depth(symbol, *event, received_us, out)
        if self.synced[symbol] and self._after_gap[symbol]:
            self._after_gap[symbol] = False
            events.add(symbol, received_us, "resync",
                       f"synced from snapshot lastUpdateId={last}, book at u={self.books[symbol].sequence}")


_EVENT_TYPES = frozenset({"trade", "aggTrade", "depthUpdate", "serverShutdown"})
# Raw-stream payloads that carry no event type "e", known by their fields: @bookTicker and @depth<N> (partial
# book). Combined streams name them in "stream"; on a raw stream this is all there is to recognize them by.
_UNTYPED_STREAMS = (("bookTicker", frozenset({"u", "s", "b", "B", "a", "A"})),
                    ("depth<levels>", frozenset({"lastUpdateId", "bids", "asks"})))


def _classify(message: Any, streams: frozenset[str]) -> tuple[str, str] | None:
    """A JSON frame the wire structs refused: a reply to a request, an error reply, a stream or event type we
    did not ask for (e.g. ``@bookTicker`` on a shared socket: counted as ignored), or (None) bad data."""
    if not isinstance(message, dict):
        return None
    if "id" in message and "stream" not in message:
        return ("exchange_error", f"error reply: {message.get('error')}") if "error" in message else (CONTROL, "")
    stream = message.get("stream")
    if isinstance(stream, str) and stream not in streams and not stream.startswith("!"):
        return IGNORED, f"stream {stream!r}"
    data = message.get("data", message)
    event = data.get("e") if isinstance(data, dict) else None
    if stream is None and isinstance(event, str) and event not in _EVENT_TYPES:
        return IGNORED, f"event type {event!r}"
    if stream is None and event is None and isinstance(data, dict):
        for name, keys in _UNTYPED_STREAMS:
            if keys <= data.keys():
                return IGNORED, f"{name} stream"
    return None
