"""Kraken Spot WebSocket v2: ``trade`` and ``book`` channels (see exchange-protocols.md, section 3).

Trades take the vectorized path (one typed msgspec decode of the whole batch, columns built in Arrow).
Books are applied message by message and verified with Kraken's CRC32 checksum over the top 10 levels;
the checksum is computed over the exchange's own number text, so book prices and quantities are decoded
as raw JSON text (``msgspec.Raw``), never through ``float`` (``0.10000000`` must stay ``10000000``).

The book code path (``Kraken.apply_book``) is shared with the v1 archive decoder in ``kraken_legacy``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Literal
from urllib.parse import quote

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trading_platform.config import Endpoints, ExchangeConfig
from trading_platform.exchanges.base import (
    DECODED_TRADE_SCHEMA,
    Action,
    DecodedFrames,
    Exchange,
    Int64,
    RecordKind,
    Rejects,
    SendFrames,
    UInt32,
)
from trading_platform.exchanges.book import BookEvents, BookSnapshots
from trading_platform.exchanges.trade_gaps import BackfillRequest, TradePage

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

_UTC_US = pa.timestamp("us", tz="UTC")
_UTC_NS = pa.timestamp("ns", tz="UTC")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


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
    type: Literal["snapshot", "update"]
    data: list[_Book]


class _Heartbeat(msgspec.Struct, tag_field="channel", tag="heartbeat"):
    pass


class _Status(msgspec.Struct, tag_field="channel", tag="status"):
    pass


_Message = _TradeMessage | _BookMessage | _Heartbeat | _Status
_batch_decoder = msgspec.json.Decoder(list[_Message])
_frame_decoder = msgspec.json.Decoder(_Message)
_untyped_decoder = msgspec.json.Decoder()
_datetime_decoder = msgspec.json.Decoder(datetime)
_CHANNELS = ("trade", "book", "heartbeat", "status")


class _NotANumber(ValueError):
    pass


# --- the checksum ----------------------------------------------------------------------------
def _checksum_text(number: str) -> str:
    return number.replace(".", "").lstrip("0")


def kraken_checksum(asks_text: Sequence[tuple[str, str]], bids_text: Sequence[tuple[str, str]]) -> int:
    """Kraken's book checksum (v1 and v2): CRC32 over the top 10 asks then the top 10 bids.

    Both sides are (price text, quantity text) best first (asks ascending, bids descending), in the
    exact text the exchange sent; only the first 10 of each count.
    """
    parts = [_checksum_text(price) + _checksum_text(qty)
             for price, qty in (*asks_text[:CHECKSUM_LEVELS], *bids_text[:CHECKSUM_LEVELS])]
    return zlib.crc32("".join(parts).encode("ascii")) & 0xFFFF_FFFF


def subscription_depth(book_depth: int) -> int:
    """The smallest depth Kraken accepts that covers the levels we emit."""
    return next(depth for depth in BOOK_DEPTHS if depth >= book_depth)


@dataclass
class BookOutput:
    """Where ``Kraken.apply_book`` records its results."""

    snapshots: BookSnapshots
    events: BookEvents


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


def _datetime_us(value: datetime) -> int:
    if value.tzinfo is None:  # RFC3339 requires an offset; treat a missing one as UTC
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _ONE_US


class Kraken(Exchange):
    name = "kraken"

    def __init__(self, config: ExchangeConfig) -> None:
        super().__init__(config)
        self.depth = subscription_depth(config.book_depth)
        self._natives = list(self.native_to_symbol)
        self._native_symbols = pa.array(self._natives, pa.string())
        self._normalized_symbols = pa.array(list(self.native_to_symbol.values()), pa.string())
        self._index = {symbol: i for i, symbol in enumerate(self.symbols)}
        # A mismatch asked for a fresh snapshot; its arrival is recorded as a resync. Not per connection:
        # a reconnect while waiting still ends in the snapshot that repairs the book.
        self._resync_pending: dict[str, bool] = dict.fromkeys(self.symbols, False)
        self._resubscribes: dict[str, int] = dict.fromkeys(self.symbols, 0)  # per connection
        self._pending_unsubscribe_acks = self._expected_unsubscribe_acks()

    # --- connection ------------------------------------------------------------------------
    @staticmethod
    def native_symbol(symbol: str) -> str:
        return symbol.replace("-", "/")

    def connect_url(self, endpoints: Endpoints) -> str:
        if endpoints.rest_url:
            self.rest_url = endpoints.rest_url.rstrip("/")
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

    # --- decoding --------------------------------------------------------------------------
    def new_book_output(self) -> BookOutput:
        return BookOutput(BookSnapshots(self.name), BookEvents(self.name))

    def on_connected(self) -> None:
        """A new connection: books restart from their snapshots, the resubscribe budget refills."""
        self.reset_books()
        self._resubscribes = dict.fromkeys(self.symbols, 0)

    def decode(self, frames: list[bytes], received_us: list[int],
               kinds: list[RecordKind] | None = None) -> DecodedFrames:
        rejects = Rejects()
        out = self.new_book_output()
        actions: list[Action] = []
        control = ignored = 0
        connected: list[int] = []
        rest: list[int] = []  # trade-history answers (Kraken books need no REST)
        if kinds is None or not any(kinds):
            positions: Sequence[int] = range(len(frames))
        else:
            positions = [i for i, kind in enumerate(kinds) if kind == RecordKind.FRAME]
            connected = [i for i, kind in enumerate(kinds) if kind == RecordKind.CONNECTED]
            rest = [i for i, kind in enumerate(kinds) if kind in (RecordKind.REST, RecordKind.REST_FAILED)]
        messages = self._decode_messages(frames, received_us, positions, rejects)
        trades: list[_Trade] = []
        trade_index: list[int] = []
        # Records are walked in order: a CONNECTED record resets the books between two book frames.
        resets = iter(connected)
        next_reset = next(resets, None)
        backfills: list[pa.Table] = []
        for i in rest:
            assert kinds is not None
            header, _, body = frames[i].partition(b"\n")
            backfills.append(self.on_trade_history(header.decode(), body, kinds[i], i, received_us[i], out.events,
                                                   actions, rejects))
        for i, message in zip(positions, messages, strict=True):
            while next_reset is not None and next_reset < i:
                self.on_connected()
                # Resubscribes asked on the old connection are moot: the new one subscribes every
                # book with a fresh snapshot anyway (and the runner sends on the current connection).
                actions[:] = [a for a in actions if not isinstance(a, SendFrames)]
                next_reset = next(resets, None)
            if isinstance(message, _TradeMessage):
                trades += message.data
                trade_index += [i] * len(message.data)
            elif isinstance(message, _BookMessage):
                self._book_message(message, frames[i], received_us[i], out, actions, rejects)
            elif message is _IGNORED:
                ignored += 1
            elif message is not None:  # heartbeat, status, or a request's reply (ack, pong)
                control += 1
        while next_reset is not None:
            self.on_connected()
            actions[:] = [a for a in actions if not isinstance(a, SendFrames)]
            next_reset = next(resets, None)
        table = self._trade_columns(trades, trade_index, received_us, frames, rejects)
        if table.num_rows:
            ids = pc.cast(table.column("trade_id"), pa.int64()).to_numpy()
            table = self.check_trades(table, ids, received_us[trade_index[-1]], out.events, actions)
        if backfills:
            table = pa.concat_tables([table, *backfills])
        return DecodedFrames(table, rejects, control, out.snapshots, out.events, actions, ignored)

    def _decode_messages(self, frames: list[bytes], received_us: list[int], positions: Sequence[int],
                         rejects: Rejects) -> Sequence[_Message | bool | object | None]:
        """One typed message per FRAME record; True for a request's reply, ``_IGNORED`` for a channel we do
        not use, None for a reject."""
        batch = frames if len(positions) == len(frames) else [frames[i] for i in positions]
        try:
            decoded: list[_Message] = _batch_decoder.decode(b"[" + b",".join(batch) + b"]")
            if len(decoded) == len(batch):  # else an empty frame, or one holding "a,b": frame by frame
                return decoded
        except msgspec.DecodeError:
            pass
        result: list[_Message | bool | object | None] = []
        for i in positions:
            try:
                result.append(_frame_decoder.decode(frames[i]))
            except msgspec.DecodeError as error:
                reason, detail = _classify(frames[i])
                if reason == "control":
                    result.append(True)
                elif reason == "ignored":
                    result.append(_IGNORED)
                else:
                    rejects.add(received_us[i], reason, detail or str(error), frames[i])
                    result.append(None)
        return result

    def _book_message(self, message: _BookMessage, frame: bytes, received_us: int,
                      out: BookOutput, actions: list[Action], rejects: Rejects) -> None:
        is_snapshot = message.type == "snapshot"
        for entry in message.data:
            symbol = self.native_to_symbol.get(entry.symbol)
            if symbol is None:
                rejects.add(received_us, "unknown_symbol",
                            f"symbol {entry.symbol!r} is not configured for {self.name}", frame)
                continue
            try:
                asks = [(_number_text(level.price), _number_text(level.qty)) for level in entry.asks]
                bids = [(_number_text(level.price), _number_text(level.qty)) for level in entry.bids]
            except _NotANumber as error:
                detail = f"book level of {entry.symbol}: {error}"
                rejects.add(received_us, "wrong_type", detail, frame)
                # A lost update could hide below the checksummed top 10, and a lost snapshot would leave
                # the book waiting forever: resync rather than guess.
                if self.synced[symbol] or is_snapshot:
                    self.lose_sync(symbol, received_us, f"{message.type}_rejected", detail, out)
                    self._request_resync(symbol, received_us, out, actions)
                continue
            event_us = received_us if entry.timestamp is None else _datetime_us(entry.timestamp)
            if not self.apply_book(symbol, asks, bids, entry.checksum, is_snapshot, self.depth,
                                   event_us, received_us, out):
                self._request_resync(symbol, received_us, out, actions)

    def _request_resync(self, symbol: str, received_us: int, out: BookOutput, actions: list[Action]) -> None:
        self._resubscribes[symbol] += 1
        if self._resubscribes[symbol] <= MAX_RESUBSCRIBES:
            actions.append(SendFrames(self.resubscribe_book_frames(symbol)))
        elif self._resubscribes[symbol] == MAX_RESUBSCRIBES + 1:
            out.events.add(symbol, received_us, "resync_abandoned",
                           f"{MAX_RESUBSCRIBES} resubscribes without a verified snapshot; "
                           "the book stays unsynced until the next connection")

    # --- the one book code path (v2 here, v1 archives in kraken_legacy) ---------------------
    def apply_book(self, symbol: str, asks: Sequence[tuple[str, str]], bids: Sequence[tuple[str, str]],
                   checksum: int | None, is_snapshot: bool, depth: int, event_us: int, received_us: int,
                   out: BookOutput) -> bool:
        """Apply one book message (levels as exchange text) and verify it; False on a checksum mismatch.

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
        for price, qty in asks:
            book.set_level("ask", price, qty)
        for price, qty in bids:
            book.set_level("bid", price, qty)
        book.truncate(depth)
        if checksum is not None:
            computed = kraken_checksum(book.top_text("ask", CHECKSUM_LEVELS), book.top_text("bid", CHECKSUM_LEVELS))
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

    def lose_sync(self, symbol: str, received_us: int, kind: str, detail: str, out: BookOutput) -> None:
        """Record a failure of ``symbol``'s book (a ``kind`` event row) and stop trusting it.

        The book is not emitted again until a verified snapshot arrives, which is recorded as a ``resync``.
        """
        self.synced[symbol] = False
        self._resync_pending[symbol] = True
        out.events.add(symbol, received_us, kind, detail)

    # --- trade columns ---------------------------------------------------------------------
    def _trade_columns(self, trades: list[_Trade], indices: list[int], received_us: list[int],
                       frames: list[bytes], rejects: Rejects) -> pa.Table:
        native = pa.array([t.symbol for t in trades], pa.string())
        position = pc.index_in(native, value_set=self._native_symbols)
        timestamps = _timestamp_column([t.timestamp for t in trades])
        table = pa.table(
            {
                "exchange": pa.array([self.name] * len(trades), pa.string()),
                "symbol": self._normalized_symbols.take(position),
                "native_symbol": native,
                "trade_id": pc.cast(pa.array([t.trade_id for t in trades], pa.int64()), pa.string()),
                "price": pa.array([t.price for t in trades], pa.float64()),
                "quantity": pa.array([t.qty for t in trades], pa.float64()),
                "side": pa.array([t.side for t in trades], pa.string()),
                "timestamp": timestamps.fill_null(0) if timestamps.null_count else timestamps,
                "received_at": pa.array([received_us[i] for i in indices], pa.int64()).cast(_UTC_US),
                "frame_index": pa.array(indices, pa.int64()),
            },
            schema=DECODED_TRADE_SCHEMA,
        )
        if position.null_count or timestamps.null_count:
            known, timed = pc.is_valid(position), pc.is_valid(timestamps)
            for row in pc.indices_nonzero(pc.invert(pc.and_(known, timed))).to_pylist():
                index = indices[row]
                if not known[row].as_py():
                    rejects.add(received_us[index], "unknown_symbol",
                                f"symbol {trades[row].symbol!r} is not configured for {self.name}", frames[index])
                else:
                    rejects.add(received_us[index], "wrong_type",
                                f"trade timestamp {trades[row].timestamp!r} is not RFC3339", frames[index])
            table = table.filter(pc.and_(known, timed))
        return table


def _timestamp_column(texts: list[str]) -> pa.Array:
    """RFC3339 text -> µs UTC; null where a value is not a timestamp (its row is quarantined)."""
    try:
        # Through ns so 9-digit fractions parse too; truncating to µs is the intent (safe=False).
        return pa.array(texts, pa.string()).cast(_UTC_NS).cast(_UTC_US, safe=False)
    except pa.ArrowInvalid:
        return pa.array([_rfc3339_us(text) for text in texts], pa.int64()).cast(_UTC_US)


def _rfc3339_us(text: str) -> int | None:
    try:
        return _datetime_us(_datetime_decoder.decode(msgspec.json.encode(text)))
    except (msgspec.DecodeError, OverflowError):
        return None


FrameKind = Literal["control", "ignored", "exchange_error", "malformed_json", "wrong_type"]
_IGNORED = object()  # a decoded-message placeholder: a well-formed frame of a channel we do not use


def _classify(frame: bytes) -> tuple[FrameKind, str | None]:
    """Why a frame failed the typed decode: a request's reply (ack, pong), an error reply, a channel we do
    not use (Kraken adds channels; a client skips them), or bad data."""
    try:
        message = _untyped_decoder.decode(frame)
    except msgspec.DecodeError as error:
        return "malformed_json", f"not valid JSON: {error}"
    if isinstance(message, dict) and "method" in message and "channel" not in message:
        if message.get("success") is False or "error" in message:
            return "exchange_error", f"{message.get('method')} failed: {message.get('error')}"
        return "control", None
    if isinstance(message, dict) and isinstance(message.get("channel"), str) and message["channel"] not in _CHANNELS:
        return "ignored", f"channel {message.get('channel')!r}"
    return "wrong_type", None
