"""The exchange template: what every live exchange shares, and the hooks each protocol fills in.

``Exchange`` is a ``RecordDecoder`` (``record_decoder.py``: the batch decode, its per-frame fallback and reject
classification) that routes every record to its dataset (a new connection resets the books, REST answers
fill trade gaps or books), builds trade rows in ``DECODED_TRADE_SCHEMA`` (symbol mapping, time conversion,
unknown symbols set aside), keeps trade-id continuity with REST backfills, and does the book bookkeeping.

An exchange module keeps only its protocol: subscribe messages, wire structs and their field mapping (the
fields the compiled ``wire_columns`` reads into Arrow, ``trade_fields``, and the columns made of them,
``trade_columns``), the shape of its common trade frame that the compiled scan reads with no wire struct at all
(``trade_frame``), what its messages do (``on_messages``), and its sequencing / checksum rules. The result
types live in ``decoded.py``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections import Counter
from typing import Any, ClassVar, NamedTuple, TypeVar

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trading_platform.config import Endpoints, ExchangeConfig
from trading_platform.exchanges.book import BookEvents, BookSnapshots, OrderBook
from trading_platform.exchanges.conversions import micros_timestamps, strings_to_float
from trading_platform.exchanges.decoded import (
    DECODED_TRADE_SCHEMA,
    Action,
    DecodeOutput,
    FetchSnapshot,
    RecordKind,
    Rejects,
    SendFrames,
)
from trading_platform.exchanges.record_decoder import RecordDecoder
from trading_platform.exchanges.trade_gaps import (
    TRADE_GAP_FILLED,
    BackfillRequest,
    TradeGap,
    TradeGaps,
    TradePage,
    is_backfill,
)
from trading_platform.exchanges.wire_columns import FrameShape, WireColumns

BAD_HISTORY_ANSWERS = 3  # answers to one backfill that are no trade-history page before its range is given up

T = TypeVar("T")
_untyped_decoder = msgspec.json.Decoder()


class TradeColumns(NamedTuple):
    """One column per trade field, built from a batch of wire trades by the protocol's field mapping."""

    natives: pa.Array  # the exchange's symbol spelling
    trade_ids: pa.Array  # string
    prices: pa.Array  # float64
    quantities: pa.Array  # float64
    sides: pa.Array  # the taker's side, "buy" / "sell"
    timestamps: pa.Array  # UTC µs; null where the exchange's time was not a time
    time_texts: pa.StringArray | None = None  # the exchange's own time text, quoted when a time is rejected


class Exchange(RecordDecoder):
    """One exchange's protocol. Subclasses live one per module in ``trading_platform.exchanges`` and are
    listed in ``registry.EXCHANGES``.

    An instance is stateful: it owns the order books of its symbols and the trade-id continuity of each.
    """

    # Larger frames are quarantined, not decoded. Coinbase's full level2 snapshot of a busy book can be
    # several MiB, so modules raise this where their protocol needs it.
    max_frame_bytes: int = 1 << 20
    symbol_noun = "symbol"  # what the exchange calls a market, in reject details
    trade_time_format = "a time"  # how trade times are spelled, in reject details
    # The wire trade's fields the columns are read from, each with its Arrow type (``wire_columns``): every
    # struct ``on_messages`` puts in ``out.trades`` has them. ``trade_columns`` receives them in this order.
    trade_fields: ClassVar[tuple[tuple[str, pa.DataType], ...]]
    # The hot path's frame (``wire_columns.FrameShape`` over ``trade_fields``): frames of this shape are read
    # straight into the trade columns by the compiled scan, with no typed decode and no wire object; any other
    # frame, or one off the shape in any detail, takes the decode. None: every frame is decoded.
    trade_frame: ClassVar[FrameShape | None] = None

    def __init__(self, config: ExchangeConfig) -> None:
        self.config = config
        self.symbols = list(config.symbols)
        self.native_to_symbol = {self.native_symbol(s): s for s in self.symbols}
        # Symbol mapping in Arrow: one hash lookup per row in C, not a Python dict lookup.
        self._native_symbols = pa.array(list(self.native_to_symbol), pa.string())
        self._normalized_symbols = pa.array(list(self.native_to_symbol.values()), pa.string())
        self._name_scalar = pa.scalar(self.name, pa.string())
        # Running totals the importer prints and the run logs: book_updates_applied, checksums_passed,
        # checksums_failed, sequence_gaps, snapshots_applied (modules add their own keys freely).
        self.counters: Counter[str] = Counter()
        self.trade_gaps = TradeGaps(self.symbols, self.counters)
        # REST base URL for history backfills; use_endpoints() replaces it with the configured endpoint.
        self.rest_url = (config.live.rest_url or "").rstrip("/")
        self.books: dict[str, OrderBook] = {s: OrderBook() for s in self.symbols}
        self.synced: dict[str, bool] = dict.fromkeys(self.symbols, False)
        self._emitted_bucket: dict[str, int] = dict.fromkeys(self.symbols, -1)
        self._book_interval_us = config.book_interval_ms * 1000  # read for every book update
        self.wants_books = "book" in config.channels  # read for every book message: not a list search each time

    # --- the protocol: what each module provides ------------------------------------------------
    @staticmethod
    @abstractmethod
    def native_symbol(symbol: str) -> str:
        """The exchange's spelling of a normalized BASE-QUOTE symbol."""

    def use_endpoints(self, endpoints: Endpoints) -> str:
        """Point this exchange at ``endpoints``: its REST calls (book snapshots, trade backfills) go to their REST
        base from now on. Returns the WebSocket URL to open. Call it on the very instance the run decodes with
        (a second instance would leave the run's REST calls on the default endpoint)."""
        if endpoints.rest_url:
            self.rest_url = endpoints.rest_url.rstrip("/")
        return self.connect_url(endpoints)

    @abstractmethod
    def connect_url(self, endpoints: Endpoints) -> str:
        """The WebSocket URL to open (may already carry the subscriptions); the protocol's part of
        ``use_endpoints``."""

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
    def trade_columns(self, fields: list[pa.Array]) -> TradeColumns:
        """The field mapping: the wire trades' ``trade_fields`` as columns, in that order -> the trade columns."""

    def new_connection(self) -> None:
        """A new connection opened: every book is untrusted until it resyncs from a fresh snapshot. Modules
        with more per-connection state (sequences, pending requests) extend it."""
        for symbol in self.symbols:
            self.books[symbol].clear()
            self.synced[symbol] = False

    def on_rest_answer(self, payload: bytes, received_us: int, out: DecodeOutput) -> None:
        """A REST record that answers no trade backfill (e.g. Binance's depth snapshot). Modules that ask
        for none: an answer nobody is waiting for, counted as control."""
        out.control += 1

    def on_screened(self, payload: bytes, received_us: int, out: DecodeOutput) -> None:
        """A frame the normalizer quarantined before decoding (its per-connection sequence may count it)."""

    # --- routing records ---------------------------------------------------------------------------
    def on_record(self, kind: RecordKind, payload: bytes, index: int, received_us: int,
                  out: DecodeOutput) -> None:
        if kind == RecordKind.CONNECTED:
            self.new_connection()
            # Frames asked for the old connection are moot: the new one subscribes everything afresh
            # (and the runner sends on the current connection).
            out.actions[:] = [a for a in out.actions if not isinstance(a, SendFrames)]
        elif kind == RecordKind.SCREENED:
            self.on_screened(payload, received_us, out)
        elif kind in (RecordKind.REST, RecordKind.REST_FAILED):
            header, _, body = payload.partition(b"\n")
            text = header.decode("utf-8", "replace")
            if kind == RecordKind.REST_FAILED or is_backfill(text.partition(" ")[2]):
                out.settled.append(self.on_trade_history(text, body, kind, index, received_us, out.events,
                                                            out.actions, out.rejects))
            else:
                self.on_rest_answer(payload, received_us, out)
        else:
            out.control += 1

    def reject_unknown_symbol(self, native: str, received_us: int, frame: bytes, rejects: Rejects) -> None:
        rejects.add(received_us, "unknown_symbol",
                    f"{self.symbol_noun} {native!r} is not configured for {self.name}", frame)

    def entries_naming(self, raw: bytes, key: str) -> list[tuple[str, dict[str, Any]]]:
        """(symbol, entry) for each entry of a refused JSON array (``decode_field`` said None) that names a
        configured symbol under ``key``: the books whose changes were lost with it. Empty when it names none or is
        no array of objects."""
        try:
            entries = _untyped_decoder.decode(raw)
        except msgspec.DecodeError:
            return []
        named = []
        for entry in entries if isinstance(entries, list) else ():
            native = entry.get(key) if isinstance(entry, dict) else None
            symbol = self.native_to_symbol.get(native) if isinstance(native, str) else None
            if symbol is not None:
                named.append((symbol, entry))
        return named

    def decode_field(self, decoder: msgspec.json.Decoder[T], raw: bytes, field: str, received_us: int, frame: bytes,
                     rejects: Rejects) -> T | None:
        """A message field the batch kept as raw JSON (so its objects die with the message), decoded now. None
        when refused: quarantined as ``wrong_type`` with the path the batch decode would have named."""
        try:
            return decoder.decode(raw)
        except msgspec.DecodeError as error:
            rejects.add(received_us, "wrong_type", str(error).replace("`$", f"`$.{field}", 1), frame)
            return None

    # --- trade rows --------------------------------------------------------------------------------
    def scan_frames(self, frames: list[bytes], lo: int, hi: int, out: DecodeOutput) -> int:
        return 0 if self.trade_frame is None else self.scan_trade_frames(frames, lo, hi, out)

    def scan_trade_frames(self, frames: list[bytes], lo: int, hi: int, out: DecodeOutput,
                          first_sequence: int = -1) -> int:
        """Frames of ``trade_frame`` from ``lo`` on (a numbered shape: numbered from ``first_sequence``) read into
        the trade columns; how many."""
        assert self.trade_frame is not None
        self.collect(out)  # the columns keep frame order
        return self._columns(out).scan(self.trade_frame, frames, lo, hi, first_sequence)

    def _columns(self, out: DecodeOutput) -> WireColumns:
        if out.columns is None:
            out.columns = WireColumns(self.trade_fields)
        return out.columns

    def collect(self, out: DecodeOutput) -> None:
        """The chunk's wire trades into the call's columns: their ``trade_fields`` read into column buffers, so
        the objects are freed while still in the CPU cache, not at the end of the tick."""
        if not out.trades:
            return
        self._columns(out).extend(out.trades, out.trade_frames)
        out.trades.clear()  # in place: a module may hold these lists while it walks a run of frames
        out.trade_frames.clear()

    def settle(self, frames: list[bytes], received_us: list[int], out: DecodeOutput) -> None:
        """The frames' trades so far as rows, checked for continuity (dropping those already stored, recording
        gaps): final, ahead of what the records after them bring."""
        self.collect(out)
        if out.columns is None or not len(out.columns):
            return
        fields, frame_index = out.columns.take()
        rows = frame_index.to_numpy()
        table = self.trade_table(self.trade_columns(fields), rows, frames, received_us, out.rejects)
        followed = False
        if table.num_rows:
            ids = self.trade_ids(table)
            if ids is not None:
                followed = self.trade_gaps.follows(ids)
                table = self.check_trades(table, ids, received_us[rows[-1]], out.events, out.actions)
        self.on_trade_rows(table, followed)
        out.settled.append(table)

    def finish(self, frames: list[bytes], received_us: list[int], out: DecodeOutput) -> pa.Table:
        """The call's trade rows in record order: live trades (checked for continuity) and, at their places,
        the rows REST backfills brought."""
        self.settle(frames, received_us, out)
        rows = [t for t in out.settled if t.num_rows]
        if not rows:
            return DECODED_TRADE_SCHEMA.empty_table()
        return rows[0] if len(rows) == 1 else pa.concat_tables(rows)

    def trade_table(self, columns: TradeColumns, frame_index: list[int] | np.ndarray, frames: list[bytes],
                    received_us: list[int], rejects: Rejects) -> pa.Table:
        """Trade rows of configured symbols with a valid time; the other rows are rejected with their frame."""
        timestamps = columns.timestamps
        rows = np.asarray(frame_index, np.int64)  # converted once: it indexes the receive times and is a column
        table, known = self.trade_rows(columns, rows, np.asarray(received_us, np.int64)[rows])
        valid = pc.and_(known, pc.is_valid(timestamps)) if timestamps.null_count else known
        if not valid.false_count:  # no nulls in valid: every row kept
            return table
        natives = columns.natives
        for row in pc.indices_nonzero(pc.invert(valid)).to_pylist():
            index = frame_index[row]
            if not known[row].as_py():
                self.reject_unknown_symbol(natives[row].as_py(), received_us[index], frames[index], rejects)
            else:
                text = columns.time_texts[row].as_py() if columns.time_texts is not None else None
                detail = f"trade timestamp {text!r} is not {self.trade_time_format}"
                rejects.add(received_us[index], "wrong_type", detail, frames[index])
        return table.filter(valid)

    def trade_rows(self, columns: TradeColumns, frame_index: list[int] | np.ndarray,
                   received_at_us: list[int] | np.ndarray) -> tuple[pa.Table, pa.Array]:
        """All rows in ``DECODED_TRADE_SCHEMA``, and which of them are of configured symbols."""
        position = pc.index_in(columns.natives, value_set=self._native_symbols)
        timestamps = columns.timestamps
        return pa.table(
            {
                "exchange": pa.repeat(self._name_scalar, len(frame_index)),
                "symbol": self._normalized_symbols.take(position),
                "native_symbol": columns.natives,
                "trade_id": columns.trade_ids,
                "price": columns.prices,
                "quantity": columns.quantities,
                "side": columns.sides,
                "timestamp": timestamps.fill_null(0) if timestamps.null_count else timestamps,
                "received_at": micros_timestamps(received_at_us),
                "frame_index": pa.array(frame_index, pa.int64()),
                "symbol_code": position,  # null for a symbol not configured (such a row is rejected)
            },
            schema=DECODED_TRADE_SCHEMA,
        ), pc.is_valid(position)

    def on_trade_rows(self, table: pa.Table, followed: bool) -> None:
        """The rows a ``settle`` made final (configured symbols, valid times, none already stored). ``followed``:
        the continuity check read their ids, so ``trade_gaps.last_id`` now holds each symbol's highest (Coinbase's
        dedupe marks come from there; other rows it reads itself)."""

    def trade_ids(self, table: pa.Table) -> np.ndarray | None:
        """The integer ids of ``table``'s rows for the continuity check; None: ids that are no sequence."""
        try:
            return np.asarray(pc.cast(table.column("trade_id"), pa.int64()).to_numpy())
        except pa.ArrowInvalid:
            return None

    # --- trade history (REST), for trade-gap backfills: what each module fills in ---------------
    def trade_history_url(self, request: BackfillRequest) -> str | None:
        """The REST URL of one page of ``request.gap`` (None: this exchange serves no trade history)."""
        return None

    def parse_trade_history(self, request: BackfillRequest, body: bytes, frame_index: int,
                            received_us: int) -> TradePage:
        """Trade rows of one REST page (raise ValueError for a body that is not such a page)."""
        raise ValueError(f"{self.name} serves no trade history")

    def snapshot_url(self, symbol: str) -> str | None:
        """The REST URL of ``symbol``'s book snapshot (None: books come whole over the WebSocket)."""
        return None

    def request_url(self, header: str) -> str | None:
        """The URL whose answer a REST record with this header holds (``FetchSnapshot``'s header: the symbol
        for a book snapshot, ``symbol purpose`` for a trade-history page), so a replay of recorded records can
        give a client the recorded answer to the same request."""
        symbol, _, purpose = header.partition(" ")
        if purpose:
            return self.trade_history_url(BackfillRequest.parse(symbol, purpose))
        return self.snapshot_url(symbol)

    def rest_pause_s(self, headers: dict[str, str]) -> float:
        """Seconds to hold further REST calls after a successful answer (an exchange's weight budget)."""
        return 0.0

    def history_rows(self, symbol: str, ids: list[int], prices: list[str], quantities: list[str],
                     taker_sides: list[str], times_us: list[int], received_us: int, frame_index: int) -> pa.Table:
        """Trade rows (``DECODED_TRADE_SCHEMA``) of one REST history page, from the page's own fields."""
        count = len(ids)
        columns = TradeColumns(pa.array([self.native_symbol(symbol)] * count, pa.string()),
                               pa.array([str(i) for i in ids], pa.string()), strings_to_float(prices),
                               strings_to_float(quantities), pa.array(taker_sides, pa.string()),
                               micros_timestamps(times_us))
        return self.trade_rows(columns, [frame_index] * count, [received_us] * count)[0]

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
                self.counters["trade_gaps_filled"] += 1
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

    # --- book bookkeeping -------------------------------------------------------------------------
    def emit_if_due(self, symbol: str, event_us: int, received_us: int, out: BookSnapshots) -> None:
        """Emit a top-N snapshot when the book's exchange time enters a new cadence bucket.

        Driven by exchange time, not wall-clock ticks, so re-decoding the same frames emits the same
        snapshots. A book that is out of sync or crossed is never emitted.
        """
        bucket = event_us // self._book_interval_us
        if bucket <= self._emitted_bucket[symbol] or not self.synced[symbol]:  # most updates: the same bucket
            return
        book = self.books[symbol]
        if book.crossed() or not book.bids or not book.asks:
            return
        self._emitted_bucket[symbol] = bucket
        out.add(symbol, self.native_symbol(symbol), book, self.config.book_depth, event_us, received_us)
