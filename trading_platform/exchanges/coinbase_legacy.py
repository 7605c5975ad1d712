"""Coinbase Exchange feed archives (the pre-Advanced-Trade ``ws-feed`` format, exchange-protocols.md 2b).

Used by the offline importer, not by live ingestion: ``CoinbaseExchangeFeedDecoder`` is deliberately not an
``Exchange`` subclass, so the registry never picks it. Its rows are exchange ``coinbase``, like the live feed.
It owns a ``Coinbase`` instance and reuses its book application, cadence emission and trade column building,
so archived and live books go through one code path.

Frames:
- ``match`` / ``last_match``: ``side`` is the MAKER's side (documented), so the taker traded the other way.
  ``last_match`` (the first frame per product on a connection) is the last trade before subscribing.
- ``snapshot`` (``bids``/``asks`` as [price, size]) then ``l2update`` (``changes`` as [side, price, size],
  side buy/sell, absolute size, "0" removes). There is no sequence in l2 frames, so no gap can be seen there;
  a CONNECTED record resets the books until the next snapshot. A snapshot has no time, so it emits nothing
  itself; the next ``l2update`` (exchange time) does.
- ``heartbeat``, ``subscriptions`` and the feed's other message types (``ticker``, ``received``, ``open``,
  ``done``, ``change``, ``activate``, ``status``) are control; ``error`` is an exchange error.

Trade gaps and duplicates. ``sequence`` on a match is the product's sequence over every order event of the
full channel, so it jumps between matches by design (the docs' heartbeat example: sequence 90 with
last_trade_id 20); a jump there is not a loss. ``trade_id`` is consecutive per product, so it is what we
check: a jump records a ``trade_sequence_gap`` book event (trades, not books, were lost; the book_events table
is where gaps are kept), and a match at or below the product's highest trade id (a ``last_match`` after a
reconnect, a replayed frame) is dropped as already seen (control, not a reject).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal, Union

import msgspec
import pyarrow as pa

from trading_platform.config import ExchangeConfig
from trading_platform.exchanges.base import DecodedFrames, RecordKind
from trading_platform.exchanges.book import BookEvents, BookSnapshots, Side
from trading_platform.exchanges.coinbase import BookOutput, Coinbase, TradeRows, classify_rejected, to_us

_BOOK_SIDE: Final[dict[str, Side]] = {"buy": "bid", "sell": "ask"}
_CONTROL_TYPES = ("heartbeat", "subscriptions", "ticker", "received", "open", "done", "change", "activate",
                  "status")


# gc=False: thousands per batch, no reference cycles. Unlisted fields (order ids, ...) are skipped.
class _Match(msgspec.Struct, tag_field="type", tag="match", gc=False):
    trade_id: int
    product_id: str
    price: str
    size: str
    side: Literal["buy", "sell"]  # the maker's side
    time: datetime
    sequence: int = -1


class _LastMatch(_Match, tag="last_match"):
    pass


class _Snapshot(msgspec.Struct, tag_field="type", tag="snapshot", gc=False):
    product_id: str
    bids: list[list[str]]  # [price, size], sometimes with a third element (order count)
    asks: list[list[str]]


class _L2Update(msgspec.Struct, tag_field="type", tag="l2update", gc=False):
    product_id: str
    changes: list[tuple[Literal["buy", "sell"], str, str]]
    time: datetime | None = None


# One empty struct per message type we accept and ignore, so archives of busier channels stay on the fast path.
_CONTROLS = tuple(msgspec.defstruct(f"_Control_{name}", [], tag_field="type", tag=name, gc=False)
                  for name in _CONTROL_TYPES)
_MESSAGE: Any = Union[(_Match, _LastMatch, _Snapshot, _L2Update, *_CONTROLS)]  # built at runtime from the tuple
_batch_decoder: msgspec.json.Decoder[list[Any]] = msgspec.json.Decoder(list[_MESSAGE])
_frame_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(_MESSAGE)


class CoinbaseExchangeFeedDecoder:
    """Same contract as ``Exchange.decode``; deterministic for the same record sequence."""

    name = "coinbase"

    def __init__(self, config: ExchangeConfig) -> None:
        self.exchange = Coinbase(config)
        self.trade_high_water: dict[str, int] = {}  # native product -> highest trade_id seen

    def decode(self, frames: list[bytes], received_us: list[int],
               kinds: list[RecordKind] | None = None) -> DecodedFrames:
        out = BookOutput(BookSnapshots(self.name), BookEvents(self.name))
        rows = TradeRows()
        start = 0
        if kinds is not None:
            # Records apply in receive order: a CONNECTED between frames resets the books at its place.
            for index, kind in enumerate(kinds):
                if kind != RecordKind.FRAME:
                    self._decode_run(frames, received_us, start, index, out, rows)
                    if kind == RecordKind.CONNECTED:
                        self.exchange.new_connection()
                    else:
                        out.control += 1
                    start = index + 1
        self._decode_run(frames, received_us, start, len(frames), out, rows)
        table, known = self.exchange.trade_columns(rows, pa.array(rows.taker_buys, pa.bool_()), received_us)
        table = self.exchange.drop_unknown_symbols(table, known, received_us, frames, out.rejects)
        return DecodedFrames(table, out.rejects, out.control, out.snapshots, out.events, out.actions)

    def _decode_run(self, frames: list[bytes], received_us: list[int], lo: int, hi: int, out: BookOutput,
                    rows: TradeRows) -> None:
        if lo >= hi:
            return
        indices: range | list[int] = range(lo, hi)
        try:
            messages: list[Any] = _batch_decoder.decode(b"[" + b",".join(frames[lo:hi]) + b"]")
        except msgspec.DecodeError:
            messages, indices = [], []
            for index in range(lo, hi):
                try:
                    messages.append(_frame_decoder.decode(frames[index]))
                    indices.append(index)
                except msgspec.DecodeError as error:
                    reason, detail = classify_rejected(frames[index], error)
                    out.rejects.add(received_us[index], reason, detail, frames[index])
        for message, index in zip(messages, indices, strict=True):
            if isinstance(message, _Match):
                self._match(message, index, received_us[index], out, rows)
            elif isinstance(message, _Snapshot | _L2Update):
                self._book(message, received_us[index], frames[index], out)
            else:
                out.control += 1

    def _match(self, match: _Match, index: int, received: int, out: BookOutput, rows: TradeRows) -> None:
        symbol = self.exchange.native_to_symbol.get(match.product_id)
        if symbol is not None:  # unknown products are rejected with the trade columns
            last = self.trade_high_water.get(match.product_id)
            if last is not None and match.trade_id <= last:
                out.control += 1  # already seen: a last_match after a reconnect, or a replayed frame
                return
            if last is not None and match.trade_id > last + 1:
                out.events.add(symbol, received, "trade_sequence_gap",
                               f"trade_id expected {last + 1} got {match.trade_id} "
                               f"({match.trade_id - last - 1} trades missing; sequence {match.sequence})")
            self.trade_high_water[match.product_id] = match.trade_id
        rows.natives.append(match.product_id)
        rows.trade_ids.append(str(match.trade_id))
        rows.prices.append(match.price)
        rows.sizes.append(match.size)
        rows.taker_buys.append(match.side == "sell")  # a resting sell was lifted: the taker bought
        rows.times.append(match.time)
        rows.frame_index.append(index)

    def _book(self, message: _Snapshot | _L2Update, received: int, frame: bytes, out: BookOutput) -> None:
        exchange = self.exchange
        if not exchange.wants_books:
            out.control += 1
            return
        symbol = exchange.native_to_symbol.get(message.product_id)
        if symbol is None:
            out.rejects.add(received, "unknown_symbol",
                            f"product {message.product_id!r} is not configured for {self.name}", frame)
            return
        if isinstance(message, _L2Update):
            event_us = to_us(message.time) if message.time is not None else received
            exchange.apply_book_changes(symbol, ((_BOOK_SIDE[side], price, size) for side, price, size
                                                 in message.changes), event_us, received, 0, out)
            return
        if any(len(level) < 2 for level in message.bids) or any(len(level) < 2 for level in message.asks):
            out.rejects.add(received, "wrong_type", "snapshot level is not [price, size]", frame)
            return
        levels: list[tuple[Side, str, str]] = [("bid", level[0], level[1]) for level in message.bids]
        levels += [("ask", level[0], level[1]) for level in message.asks]
        exchange.apply_book_snapshot(symbol, levels, None, received, 0, out)
