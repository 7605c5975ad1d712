"""Coinbase Exchange feed archives (the pre-Advanced-Trade ``ws-feed`` format, exchange-protocols.md 2b).

Used by the offline importer, not by live ingestion (the registry lists only live exchanges). Its rows are
exchange ``coinbase``, like the live feed. It follows the decode template (``RecordDecoder``) with the archive
format's wire structs, and owns a ``Coinbase`` instance whose book application, cadence emission and trade
rows it reuses, so archived and live books go through one code path.

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

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, Union

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from trading_platform.config import ExchangeConfig
from trading_platform.exchanges.base import TradeColumns
from trading_platform.exchanges.book import BookChange, parse_levels
from trading_platform.exchanges.coinbase import Coinbase
from trading_platform.exchanges.conversions import UTC_US, datetime_us, strings_to_float
from trading_platform.exchanges.decoded import DecodeOutput, RecordKind
from trading_platform.exchanges.record_decoder import RecordDecoder

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


class CoinbaseExchangeFeedDecoder(RecordDecoder):
    """Same contract as ``Exchange.decode``; deterministic for the same record sequence."""

    name = "coinbase"
    batch_decoder = _batch_decoder
    frame_decoder = _frame_decoder

    def __init__(self, config: ExchangeConfig) -> None:
        self.exchange = Coinbase(config)
        self.trade_high_water: dict[str, int] = {}  # native product -> highest trade_id seen

    def classify_message(self, message: Any) -> tuple[str, str] | None:
        return self.exchange.classify_message(message)  # the same error replies as the live feed

    def on_record(self, kind: RecordKind, payload: bytes, index: int, received_us: int,
                  out: DecodeOutput) -> None:
        if kind == RecordKind.CONNECTED:
            self.exchange.new_connection()  # the books wait for the next snapshot, at this place
        else:
            out.control += 1  # archives hold no REST the feed's books need

    def on_messages(self, messages: list[Any], indices: Sequence[int], frames: list[bytes],
                    received_us: list[int], out: DecodeOutput) -> None:
        for message, index in zip(messages, indices, strict=True):
            if isinstance(message, _Match):
                self._match(message, index, received_us[index], out)
            elif isinstance(message, _Snapshot | _L2Update):
                self._book(message, received_us[index], frames[index], out)
            else:
                out.control += 1

    def finish(self, frames: list[bytes], received_us: list[int], out: DecodeOutput) -> pa.Table:
        matches: list[_Match] = out.trades
        maker_sides = pa.array([m.side for m in matches], pa.string())
        columns = TradeColumns(
            natives=pa.array([m.product_id for m in matches], pa.string()),
            trade_ids=pa.array([str(m.trade_id) for m in matches], pa.string()),
            prices=strings_to_float([m.price for m in matches]),
            quantities=strings_to_float([m.size for m in matches]),
            # side is the maker's: a resting sell was lifted, so the taker bought.
            sides=pc.if_else(pc.equal(maker_sides, "sell"), "buy", "sell"),
            timestamps=pa.array([m.time for m in matches], UTC_US),
        )
        return self.exchange.trade_table(columns, out.trade_frames, frames, received_us, out.rejects)

    def _match(self, match: _Match, index: int, received: int, out: DecodeOutput) -> None:
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
        out.trades.append(match)
        out.trade_frames.append(index)

    def _book(self, message: _Snapshot | _L2Update, received: int, frame: bytes, out: DecodeOutput) -> None:
        exchange = self.exchange
        if not exchange.wants_books:
            out.control += 1
            return
        symbol = exchange.native_to_symbol.get(message.product_id)
        if symbol is None:
            exchange.reject_unknown_symbol(message.product_id, received, frame, out.rejects)
            return
        if isinstance(message, _L2Update):
            event_us = datetime_us(message.time) if message.time is not None else received
            # The Exchange feed names book sides by the order side: buy orders rest on the bid side.
            levels = parse_levels([(price, size) for _, price, size in message.changes])
            changes = [BookChange("bid" if side == "buy" else "offer", price, quantity)
                       for (side, _, _), (price, quantity) in zip(message.changes, levels, strict=True)]
            exchange.apply_book_changes(symbol, changes, event_us, received, 0, out)
            return
        if any(len(level) < 2 for level in message.bids) or any(len(level) < 2 for level in message.asks):
            out.rejects.add(received, "wrong_type", "snapshot level is not [price, size]", frame)
            return
        exchange.apply_book_snapshot(symbol, parse_levels([(level[0], level[1]) for level in message.bids]),
                                     parse_levels([(level[0], level[1]) for level in message.asks]), None, received, 0,
                                     out)
