"""Kraken Spot WebSocket v2: ``trade`` and ``book`` channels (see exchange-protocols.md, section 3).

Trades take the vectorized path (one typed msgspec decode of the whole batch, columns built in Arrow).
Books are applied message by message and verified with Kraken's CRC32 checksum over the top 10 levels;
the checksum is computed over the exchange's own number text, so book prices and quantities are decoded
as raw JSON text (``msgspec.Raw``), never through ``float`` (``0.10000000`` must stay ``10000000``).

The book code path (``Kraken.apply_book``) is shared with the v1 archive decoder in ``legacy/kraken.py``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from itertools import chain
from typing import Any, Literal
from urllib.parse import quote

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trading_platform.config import Endpoints, ExchangeConfig
from trading_platform.exchanges.base import Exchange, TradeColumns
from trading_platform.exchanges.book import ChecksumLevel, OrderBook, not_finite
from trading_platform.exchanges.conversions import UTC_US, datetime_us, rfc3339_timestamps
from trading_platform.exchanges.decoded import CONTROL, IGNORED, DecodeOutput, Int64, SendFrames, UInt32
from trading_platform.exchanges.trade_gaps import BackfillRequest, TradePage
from trading_platform.exchanges.wire_columns import TRADES, FrameShape

BOOK_DEPTHS = (10, 25, 100, 500, 1000)  # the depths Kraken accepts for a book subscription
CHECKSUM_LEVELS = 10  # the checksum always covers the top 10 levels per side, whatever the depth
# Resubscribes of one book per connection without a verified snapshot in between. Beyond this, fresh
# snapshots keep failing their own checksum: our text handling cannot reproduce Kraken's for that pair
# (not a lost message), so stop asking rather than hammer the API; the book stays unsynced (not emitted).
MAX_RESUBSCRIBES = 3

_SUBSCRIBE_TRADE_ID = 1
_SUBSCRIBE_BOOK_ID = 2
_UNSUBSCRIBE_TRADE_ID = 3
_UNSUBSCRIBE_BOOK_ID = 4
_RESYNC_ID_BASE = 1000  # + 2 * symbol index (unsubscribe), + 1 (subscribe): never a drain id
_DEFAULT_REST_URL = "https://api.kraken.com"
TRADES_PAGE = 1000  # Trades `count` (the maximum)


# --- wire types ------------------------------------------------------------------------------
# gc=False: a tick decodes thousands of these and they hold no reference cycles.
class _Trade(msgspec.Struct, gc=False):
    symbol: str
    side: Literal["buy", "sell"]  # the taker side
    price: float
    qty: float
    trade_id: Int64
    timestamp: str  # RFC3339; parsed for the whole batch at once in Arrow


class _TradeMessage(msgspec.Struct, tag_field="channel", tag="trade", gc=False):
    type: Literal["snapshot", "update"]
    data: list[_Trade]


class _Level(msgspec.Struct, gc=False):
    # Raw: the number's exact JSON text, which the checksum needs (trailing zeros included).
    price: msgspec.Raw
    qty: msgspec.Raw


class _Book(msgspec.Struct, gc=False):
    symbol: str
    checksum: UInt32
    bids: list[_Level] = []
    asks: list[_Level] = []
    timestamp: datetime | None = None


class _BookMessage(msgspec.Struct, tag_field="channel", tag="book", gc=False):
    """What the batch decode of a book subscriber reads: the entries typed in the same pass as the message. (Kept
    as raw JSON and decoded per message, each message paid a skip of its data and a second decoder call: ~10k
    instructions, a tenth of a book update. The batch's entry and level lists no longer set off collections of the
    heap: the cyclic GC is held off while a batch is decoded, ``record_decoder.paused_gc``.)"""

    type: Literal["snapshot", "update"]
    data: list[_Book]


class _RawBookMessage(msgspec.Struct, tag_field="channel", tag="book", gc=False):
    """The same message with its data left as raw JSON, decoded per message (``_book_data_decoder``): the
    frame-by-frame fallback reads this one, so a message whose data is wrong-typed (which failed the typed batch)
    is quarantined by ``decode_field`` naming the field's full path, exactly as a batch with no such frame treats
    it."""

    type: Literal["snapshot", "update"]
    data: msgspec.Raw


class _Heartbeat(msgspec.Struct, tag_field="channel", tag="heartbeat"):
    pass


class _Status(msgspec.Struct, tag_field="channel", tag="status"):
    pass


_Message = _TradeMessage | _RawBookMessage | _Heartbeat | _Status
_batch_decoder = msgspec.json.Decoder(list[_Message])
_book_batch_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(
    list[_TradeMessage | _BookMessage | _Heartbeat | _Status])
_frame_decoder = msgspec.json.Decoder(_Message)
_book_data_decoder = msgspec.json.Decoder(list[_Book])
_untyped_decoder = msgspec.json.Decoder()
_CHANNELS = ("trade", "book", "heartbeat", "status")
# What is left of numbers' texts without these is empty for plain numbers (no exponent). A translate table, not
# str.strip(chars), which tests every character against every one of the chars.
_DROP_PLAIN_NUMBER_CHARS = str.maketrans("", "", "-0123456789.")


class _NotANumber(ValueError):
    pass


# --- the checksum ----------------------------------------------------------------------------
def kraken_checksum(asks_text: Sequence[tuple[str, str]], bids_text: Sequence[tuple[str, str]]) -> int:
    """Kraken's book checksum (v1 and v2): CRC32 over the top 10 asks then the top 10 bids.

    Both sides are (price text, quantity text) best first (asks ascending, bids descending), in the
    exact text the exchange sent; only the first 10 of each count.
    """
    levels = checksum_levels([*asks_text[:CHECKSUM_LEVELS], *bids_text[:CHECKSUM_LEVELS]])
    return zlib.crc32("".join([level[2] for level in levels]).encode("ascii")) & 0xFFFF_FFFF


def checksum_levels(pairs: Sequence[tuple[str, str]]) -> list[ChecksumLevel]:
    """Book levels from (price text, quantity text) pairs, each with its checksum text made once, here: the
    price's then the quantity's digits, decimal point removed, leading zeros stripped.

    Raises ValueError for a value that is not a finite number."""
    # Spelled out inline, not a helper per number: this runs for every level of every update.
    levels = [(float(price), float(qty), price.replace(".", "").lstrip("0") + qty.replace(".", "").lstrip("0"))
              for price, qty in pairs]
    for price, qty, _ in levels:
        if price - price or qty - qty:  # 0.0 for a finite number, else NaN
            raise not_finite(price, qty)
    return levels


def book_checksum(book: OrderBook) -> int:
    """``kraken_checksum`` of a book, from the checksum texts its levels keep."""
    return zlib.crc32(book.checksum_text(CHECKSUM_LEVELS).encode("ascii")) & 0xFFFF_FFFF


def subscription_depth(book_depth: int) -> int:
    """The smallest depth Kraken accepts that covers the levels we emit."""
    return next(depth for depth in BOOK_DEPTHS if depth >= book_depth)


def _number_text(raw: msgspec.Raw | bytes) -> str:
    """The JSON number's own text; exponent notation is expanded so the checksum sees plain digits."""
    text = bytes(raw).decode()
    if not text or text[0] not in "-0123456789":
        raise _NotANumber(f"expected a number, got {text[:40]}")
    if "e" in text or "E" in text:
        try:
            text = format(Decimal(text), "f")
        except InvalidOperation as error:  # pragma: no cover - msgspec already validated the JSON
            raise _NotANumber(str(error)) from None
    return text


def _wire_sides(asks: list[_Level], bids: list[_Level]) -> tuple[list[ChecksumLevel], list[ChecksumLevel]]:
    """``checksum_levels`` of a book entry's asks and of its bids, with each number's own text."""
    pairs = [(str(level.price, "utf-8"), str(level.qty, "utf-8")) for level in asks + bids]
    # One check for them all instead of one call per number: JSON text made of digits, "." and "-" only is a plain
    # number (msgspec validated the JSON), already its own text, and both sides are read in one pass.
    if not "".join(chain.from_iterable(pairs)).translate(_DROP_PLAIN_NUMBER_CHARS):
        levels = checksum_levels(pairs)
        return levels[:len(asks)], levels[len(asks):]
    # Anything else (a string, null, an exponent): each number through _number_text, which refuses it or expands it,
    # a side at a time (asks first), so an entry with several faults is reported by the same one as ever.
    return (checksum_levels([(_number_text(level.price), _number_text(level.qty)) for level in asks]),
            checksum_levels([(_number_text(level.price), _number_text(level.qty)) for level in bids]))


class Kraken(Exchange):
    name = "kraken"
    trade_time_format = "RFC3339"
    # side: the taker's already.
    trade_fields = (("symbol", pa.string()), ("trade_id", pa.int64()), ("price", pa.float64()), ("qty", pa.float64()),
                    ("side", pa.string()), ("timestamp", pa.string()), ("timestamp", UTC_US))
    # An update of trades, nearly every frame of a trade subscription: read by the compiled scan (numbers as JSON
    # numbers only, as the strict decoders read them).
    trade_frame = FrameShape({"channel": "trade", "type": "update", "data": TRADES}, trade_fields,
                             {"side": ("buy", "sell")})
    batch_decoder = _batch_decoder
    frame_decoder = _frame_decoder

    def __init__(self, config: ExchangeConfig) -> None:
        super().__init__(config)
        self.depth = subscription_depth(config.book_depth)
        self._natives = list(self.native_to_symbol)
        self._index = {symbol: i for i, symbol in enumerate(self.symbols)}
        # A mismatch asked for a fresh snapshot; its arrival is recorded as a resync. Not per connection:
        # a reconnect while waiting still ends in the snapshot that repairs the book.
        self._resync_pending: dict[str, bool] = dict.fromkeys(self.symbols, False)
        self._resubscribes: dict[str, int] = dict.fromkeys(self.symbols, 0)  # per connection
        self._pending_unsubscribe_acks = self._expected_unsubscribe_acks()
        if self.wants_books:
            self.batch_decoder = _book_batch_decoder

    # --- connection ------------------------------------------------------------------------
    @staticmethod
    def native_symbol(symbol: str) -> str:
        return symbol.replace("-", "/")

    def connect_url(self, endpoints: Endpoints) -> str:
        return endpoints.ws_url

    def _wants_trades(self) -> bool:
        return "trades" in self.config.channels

    def _book_request(self, method: str, natives: list[str], req_id: int) -> str:
        params: dict[str, object] = {"channel": "book", "symbol": natives, "depth": self.depth}
        if method == "subscribe":
            params["snapshot"] = True
        return msgspec.json.encode({"method": method, "params": params, "req_id": req_id}).decode()

    def subscribe_frames(self) -> list[str]:
        frames = []
        if self._wants_trades():
            frames.append(msgspec.json.encode({
                "method": "subscribe",
                "params": {"channel": "trade", "symbol": self._natives, "snapshot": False},
                "req_id": _SUBSCRIBE_TRADE_ID,
            }).decode())
        if self.wants_books:
            frames.append(self._book_request("subscribe", self._natives, _SUBSCRIBE_BOOK_ID))
        return frames

    def unsubscribe_frames(self) -> list[str]:
        self._pending_unsubscribe_acks = self._expected_unsubscribe_acks()
        frames = []
        if self._wants_trades():
            frames.append(msgspec.json.encode({
                "method": "unsubscribe",
                "params": {"channel": "trade", "symbol": self._natives},
                "req_id": _UNSUBSCRIBE_TRADE_ID,
            }).decode())
        if self.wants_books:
            frames.append(self._book_request("unsubscribe", self._natives, _UNSUBSCRIBE_BOOK_ID))
        return frames

    def _expected_unsubscribe_acks(self) -> set[tuple[int, str]]:
        # Kraken acknowledges each symbol of a request separately, so the drain ends with the last of
        # these (request, symbol) acks, in whatever order they come.
        ids = ([_UNSUBSCRIBE_TRADE_ID] if self._wants_trades() else []) + (
            [_UNSUBSCRIBE_BOOK_ID] if self.wants_books else [])
        return {(req_id, native) for req_id in ids for native in self._natives}

    def is_unsubscribe_ack(self, frame: bytes) -> bool:
        if b'"unsubscribe"' not in frame:
            return False
        try:
            message = _untyped_decoder.decode(frame)
        except msgspec.DecodeError:
            return False
        if not isinstance(message, dict) or message.get("method") != "unsubscribe":
            return False
        req_id = message.get("req_id")
        if req_id not in (_UNSUBSCRIBE_TRADE_ID, _UNSUBSCRIBE_BOOK_ID):
            return False
        # A failed unsubscribe (e.g. not subscribed) also means no more data for that symbol.
        result = message.get("result")
        native = result.get("symbol") if isinstance(result, dict) else message.get("symbol")
        if isinstance(native, str):
            self._pending_unsubscribe_acks.discard((req_id, native))
        else:
            self._pending_unsubscribe_acks -= {ack for ack in self._pending_unsubscribe_acks if ack[0] == req_id}
        return not self._pending_unsubscribe_acks

    def resubscribe_book_frames(self, symbol: str) -> tuple[str, ...]:
        """Unsubscribe then resubscribe one book with a fresh snapshot (the documented resync)."""
        req_id = _RESYNC_ID_BASE + 2 * self._index[symbol]
        native = [self.native_symbol(symbol)]
        return (self._book_request("unsubscribe", native, req_id), self._book_request("subscribe", native, req_id + 1))

    # --- trade history: GET /0/public/Trades?pair=&since=&count= (oldest first, `last` cursor) ------
    def trade_history_url(self, request: BackfillRequest) -> str:
        gap = request.gap
        # `since` is exclusive and in ns; start just before the last trade we had before the gap (or, with
        # no time known, a minute before the trade after it).
        since = request.cursor or str((gap.after_us or max(gap.before_us - 60_000_000, 0)) * 1000 - 1)
        pair = quote(self.native_symbol(gap.symbol), safe="")
        return f"{self.rest_url or _DEFAULT_REST_URL}/0/public/Trades?pair={pair}&since={since}&count={TRADES_PAGE}"

    def parse_trade_history(self, request: BackfillRequest, body: bytes, frame_index: int,
                            received_us: int) -> TradePage:
        try:
            answer = _untyped_decoder.decode(body)
        except msgspec.DecodeError as error:
            raise ValueError(f"not JSON: {error}") from None
        if not isinstance(answer, dict) or answer.get("error") or not isinstance(answer.get("result"), dict):
            raise ValueError(f"error answer: {answer.get('error') if isinstance(answer, dict) else answer!r}")
        result = answer["result"]
        # The result is keyed by Kraken's own pair name (e.g. XXBTZUSD), whatever we asked with.
        rows = next((v for k, v in result.items() if k != "last" and isinstance(v, list)), [])
        try:
            prices = [str(r[0]) for r in rows]
            quantities = [str(r[1]) for r in rows]
            times_us = [round(float(r[2]) * 1_000_000) for r in rows]
            sides = ["buy" if r[3] == "b" else "sell" for r in rows]
            ids = np.array([int(r[6]) for r in rows], dtype=np.int64)
        except (IndexError, TypeError, ValueError) as error:
            raise ValueError(f"unexpected trade row: {error}") from None
        table = self.history_rows(request.gap.symbol, ids.tolist(), prices, quantities, sides, times_us,
                                  received_us, frame_index)
        count = len(rows)
        last = str(result.get("last", ""))
        # A full page that does not reach the gap's end continues from `last` (the page's last trade time, in
        # ns) less 1 ns: the fills of one order share a time, and `since` is exclusive, so a page that ends
        # inside such a sweep would skip the rest of it. The overlap is deduplicated by id. A short page is all
        # there is.
        more = count >= TRADES_PAGE and int(ids.max()) < request.gap.last and last.isdigit()
        return TradePage(table, ids, str(int(last) - 1) if more else None)

    # --- decoding: the protocol's part of the template --------------------------------------
    def new_connection(self) -> None:
        """A new connection: books restart from their snapshots, the resubscribe budget refills."""
        super().new_connection()
        self._resubscribes = dict.fromkeys(self.symbols, 0)

    def classify_message(self, message: Any) -> tuple[str, str] | None:
        """A request's reply (ack, pong), an error reply, a channel we do not use (Kraken adds channels; a
        client skips them), or (None) bad data."""
        if not isinstance(message, dict):
            return None
        if "method" in message and "channel" not in message:
            if message.get("success") is False or "error" in message:
                return "exchange_error", f"{message.get('method')} failed: {message.get('error')}"
            return CONTROL, ""
        channel = message.get("channel")
        if isinstance(channel, str) and channel not in _CHANNELS:
            return IGNORED, f"channel {channel!r}"
        return None

    def on_messages(self, messages: list[Any], indices: Sequence[int], frames: list[bytes],
                    received_us: list[int], out: DecodeOutput) -> None:
        trades, trade_frames = out.trades, out.trade_frames
        for message, i in zip(messages, indices, strict=True):
            if type(message) is _TradeMessage:
                data = message.data
                if len(data) == 1:  # most frames: one trade
                    trades.append(data[0])
                    trade_frames.append(i)
                else:
                    trades += data
                    trade_frames += [i] * len(data)
            elif type(message) is _BookMessage or type(message) is _RawBookMessage:
                self._book_message(message, frames[i], received_us[i], out)
            else:  # heartbeat, status
                out.control += 1

    def trade_columns(self, fields: list[pa.Array]) -> TradeColumns:
        natives, trade_ids, prices, quantities, sides, times, parsed_times = fields
        return TradeColumns(natives, pc.cast(trade_ids, pa.string()), prices, quantities, sides,
                            rfc3339_timestamps(times, parsed_times), times)

    def _book_message(self, message: _BookMessage | _RawBookMessage, frame: bytes, received_us: int,
                      out: DecodeOutput) -> None:
        is_snapshot = message.type == "snapshot"
        if isinstance(message, _BookMessage):
            entries: list[_Book] = message.data
        else:
            decoded = self.decode_field(_book_data_decoder, message.data, "data", received_us, frame, out.rejects)
            if decoded is None:
                # Its changes are lost: the books it names resync, as for a refused level below.
                for lost in dict.fromkeys(named for named, _ in self.entries_naming(message.data, "symbol")):
                    self._book_refused(lost, message.type, out.rejects.details[-1], received_us, out)
                return
            entries = decoded
        for entry in entries:
            symbol = self.native_to_symbol.get(entry.symbol)
            if symbol is None:
                self.reject_unknown_symbol(entry.symbol, received_us, frame, out.rejects)
                continue
            try:
                asks, bids = _wire_sides(entry.asks, entry.bids)
            except ValueError as error:  # not a number, or not a finite one
                detail = f"book level of {entry.symbol}: {error}"
                out.rejects.add(received_us, "wrong_type", detail, frame)
                self._book_refused(symbol, message.type, detail, received_us, out)
                continue
            event_us = received_us if entry.timestamp is None else datetime_us(entry.timestamp)
            if not self.apply_book(symbol, asks, bids, entry.checksum, is_snapshot, self.depth,
                                   event_us, received_us, out):
                self._request_resync(symbol, received_us, out)

    def _book_refused(self, symbol: str, kind: str, detail: str, received_us: int, out: DecodeOutput) -> None:
        """A ``kind`` ("snapshot" or "update") book message of ``symbol`` was refused. A lost update could hide below
        the checksummed top 10, and a lost snapshot would leave the book waiting forever: resync rather than
        guess."""
        if self.synced[symbol] or kind == "snapshot":
            self.lose_sync(symbol, received_us, f"{kind}_rejected", detail, out)
            self._request_resync(symbol, received_us, out)

    def _request_resync(self, symbol: str, received_us: int, out: DecodeOutput) -> None:
        self._resubscribes[symbol] += 1
        if self._resubscribes[symbol] <= MAX_RESUBSCRIBES:
            out.actions.append(SendFrames(self.resubscribe_book_frames(symbol)))
        elif self._resubscribes[symbol] == MAX_RESUBSCRIBES + 1:
            out.events.add(symbol, received_us, "resync_abandoned",
                           f"{MAX_RESUBSCRIBES} resubscribes without a verified snapshot; "
                           "the book stays unsynced until the next connection")

    # --- the one book code path (v2 here, v1 archives in legacy/kraken.py) ---------------------
    def apply_book(self, symbol: str, asks: list[ChecksumLevel], bids: list[ChecksumLevel], checksum: int | None,
                   is_snapshot: bool, depth: int, event_us: int, received_us: int, out: DecodeOutput) -> bool:
        """Apply one book message (levels from ``checksum_levels``) and verify it; False on a checksum mismatch.

        Snapshot: replace the book. Update: ignored while the book awaits a snapshot (after a connect or
        a mismatch). Then truncate to ``depth`` (Kraken sends no deletes for levels pushed out of
        range) and verify ``checksum`` (None: the message carries none, as v1 snapshots). A mismatch is
        recorded and leaves the book unsynced; the caller decides how to get a fresh snapshot. A
        verified book is emitted at the configured cadence in exchange time.
        """
        book = self.books[symbol]
        if is_snapshot:
            book.clear()
            self.counters["snapshots_applied"] += 1
        elif not self.synced[symbol]:
            self.counters["book_updates_ignored"] += 1  # awaiting a snapshot
            return True
        else:
            self.counters["book_updates_applied"] += 1
        book.apply(bids, asks)
        book.truncate(depth)
        if checksum is not None:
            computed = book_checksum(book)
            if computed != checksum:
                self.counters["checksums_failed"] += 1
                self.lose_sync(symbol, received_us, "checksum_mismatch",
                               f"{'snapshot' if is_snapshot else 'update'} checksum expected {checksum}, "
                               f"computed {computed}", out)
                return False
            self.counters["checksums_passed"] += 1
        if is_snapshot:
            self.synced[symbol] = True
            self._resubscribes[symbol] = 0
            if self._resync_pending[symbol]:
                self._resync_pending[symbol] = False
                out.events.add(symbol, received_us, "resync", "book replaced by a verified snapshot")
        self.emit_if_due(symbol, event_us, received_us, out.snapshots)
        return True

    def lose_sync(self, symbol: str, received_us: int, kind: str, detail: str, out: DecodeOutput) -> None:
        """Record a failure of ``symbol``'s book (a ``kind`` event row) and stop trusting it.

        The book is not emitted again until a verified snapshot arrives, which is recorded as a ``resync``.
        """
        self.synced[symbol] = False
        self._resync_pending[symbol] = True
        out.events.add(symbol, received_us, kind, detail)
