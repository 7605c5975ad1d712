"""Kraken WebSocket v1 frames (legacy ``wss://ws.kraken.com``), as found in users' recorded archives.

For the offline importer only: the live path is v2 (``kraken.py``). ``KrakenV1Decoder`` is deliberately
not an ``Exchange`` subclass, so the registry still finds exactly one Kraken exchange. It wraps a
``Kraken`` instance and feeds its one book code path (``Kraken.apply_book``: the same ``OrderBook``s,
truncation, checksum, events and snapshot cadence), so an imported v1 book and a live v2 book are
maintained and emitted by the same code.

v1 frames (exchange-protocols.md, section 3, "v1 variant"):
- trades ``[channelID, [[price, volume, time, side, orderType, misc], ...], "trade", "XBT/USD"]``;
- book ``[channelID, {"as": [...], "bs": [...]}, "book-10", "XBT/USD"]`` (snapshot), updates with
  ``{"a": [...]}`` and/or ``{"b": [...]}`` (two dicts when both sides change), levels
  ``[price, volume, time]`` plus an optional ``"r"`` (republish), the checksum ``"c"`` (a string) in the
  last dict of updates only;
- events ``{"event": "heartbeat" | "systemStatus" | "subscriptionStatus" | "pong", ...}``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
import pyarrow as pa

from trading_platform.config import ExchangeConfig
from trading_platform.exchanges.base import DECODED_TRADE_SCHEMA, DecodedFrames, RecordKind, Rejects, strings_to_float
from trading_platform.exchanges.kraken import BookOutput, Kraken

# v1 spells some assets the old way; normalized symbols (and the v2 native spelling) use the new one.
V1_ASSETS = {"XBT": "BTC", "XDG": "DOGE"}
_CONTROL_EVENTS = frozenset({"heartbeat", "systemStatus", "pong"})
_SIDES = {"b": "buy", "s": "sell"}  # the taker side
_UTC_US = pa.timestamp("us", tz="UTC")
_decoder = msgspec.json.Decoder()


class _Malformed(ValueError):
    """A v1 frame whose shape or field types are not the documented ones."""


def normalize_pair(pair: str) -> str:
    """``XBT/USD`` -> ``BTC-USD``."""
    base, _, quote = pair.partition("/")
    return f"{V1_ASSETS.get(base, base)}-{V1_ASSETS.get(quote, quote)}"


def epoch_text_us(text: object) -> int:
    """v1 time text (``"1534614057.321597"``, seconds) -> µs, exactly (no float rounding)."""
    if not isinstance(text, str):
        raise _Malformed(f"time must be a string, got {text!r}")
    seconds, _, fraction = text.partition(".")
    if not seconds.isdigit() or (fraction and not fraction.isdigit()):
        raise _Malformed(f"time {text!r} is not epoch seconds")
    return int(seconds) * 1_000_000 + int((fraction + "000000")[:6])


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise _Malformed(f"{what} must be a string, got {value!r}")
    return value


def _levels(raw: object, key: str) -> tuple[list[tuple[str, str]], int]:
    """(price, volume) text pairs of one side, and the latest level time (µs; 0 if none)."""
    if not isinstance(raw, list):
        raise _Malformed(f"{key!r} must be a list of levels")
    levels: list[tuple[str, str]] = []
    latest = 0
    for level in raw:
        if not isinstance(level, list) or len(level) < 3:
            raise _Malformed(f"{key!r} level {level!r} is not [price, volume, time(, 'r')]")
        price, volume = _text(level[0], "price"), _text(level[1], "volume")
        try:
            float(price), float(volume)
        except ValueError:
            raise _Malformed(f"{key!r} level {level!r} has a non-numeric price or volume") from None
        levels.append((price, volume))
        latest = max(latest, epoch_text_us(level[2]))
    return levels, latest


class KrakenV1Decoder:
    """Decode recorded Kraken v1 frames into the same trades/book/event output as ``Kraken.decode``.

    Offline: a checksum mismatch is recorded and the book waits (updates ignored) for the next snapshot
    the archive holds (after a reconnect or resubscribe); no actions are returned.
    """

    name = Kraken.name

    def __init__(self, config: ExchangeConfig, kraken: Kraken | None = None) -> None:
        # The wrapped Kraken owns the books; pass one to share book state with other code.
        self.kraken = kraken if kraken is not None else Kraken(config)

    @property
    def counters(self) -> Counter[str]:
        """The wrapped Kraken's running totals (snapshots, updates, checksums passed/failed)."""
        return self.kraken.counters

    def decode(self, frames: list[bytes], received_us: list[int],
               kinds: list[RecordKind] | None = None) -> DecodedFrames:
        """Records in receive order (``kinds`` None: all FRAME); REST records are ignored.

        ``frame_index`` of a trade row is the index of its record in ``frames``.
        """
        rejects = Rejects()
        out = self.kraken.new_book_output()
        trades = _TradeColumns()
        control = 0
        for index, frame in enumerate(frames):
            kind = RecordKind.FRAME if kinds is None else kinds[index]
            if kind == RecordKind.CONNECTED:
                self.kraken.on_connected()
                continue
            if kind != RecordKind.FRAME:
                continue
            try:
                message = _decoder.decode(frame)
            except msgspec.DecodeError as error:
                rejects.add(received_us[index], "malformed_json", f"not valid JSON: {error}", frame)
                continue
            try:
                if isinstance(message, dict):
                    reason = _event_reason(message)
                    if reason is None:
                        control += 1
                    else:
                        rejects.add(received_us[index], reason[0], reason[1], frame)
                elif isinstance(message, list) and len(message) >= 4:
                    self._channel_frame(message, index, frame, received_us[index], trades, out, rejects)
                else:
                    raise _Malformed("neither an event object nor a [channelID, ..., channel, pair] array")
            except _Malformed as error:
                rejects.add(received_us[index], "wrong_type", str(error), frame)
        return DecodedFrames(trades.to_arrow(self.name, received_us), rejects, control,
                             out.snapshots, out.events, [])

    def _channel_frame(self, message: list[Any], index: int, frame: bytes, received_us: int,
                       trades: _TradeColumns, out: BookOutput, rejects: Rejects) -> None:
        channel, pair = _text(message[-2], "channel name"), _text(message[-1], "pair")
        symbol = normalize_pair(pair)
        if symbol not in self.kraken.books:
            rejects.add(received_us, "unknown_symbol", f"pair {pair!r} is not configured for {self.name}", frame)
            return
        if channel == "trade":
            if len(message) != 4:
                raise _Malformed("a trade frame is [channelID, trades, 'trade', pair]")
            trades.add(symbol, self.kraken.native_symbol(symbol), message[1], index)
        elif channel.startswith("book-") and channel[5:].isdigit():
            try:
                self._book_frame(symbol, int(channel[5:]), message[1:-2], received_us, out)
            except _Malformed as error:
                # A lost update could hide below the checksummed top 10: distrust the book until the
                # archive's next snapshot.
                if self.kraken.synced[symbol]:
                    snapshot = any(isinstance(p, dict) and ("as" in p or "bs" in p) for p in message[1:-2])
                    kind = "snapshot_rejected" if snapshot else "update_rejected"
                    self.kraken.lose_sync(symbol, received_us, kind, str(error), out)
                raise
        else:
            raise _Malformed(f"unexpected channel {channel!r}")

    def _book_frame(self, symbol: str, depth: int, payloads: list[Any], received_us: int, out: BookOutput) -> None:
        if not payloads or not all(isinstance(p, dict) for p in payloads):
            raise _Malformed("book payloads must be objects")
        is_snapshot = any("as" in p or "bs" in p for p in payloads)
        asks: list[tuple[str, str]] = []
        bids: list[tuple[str, str]] = []
        checksum: int | None = None
        latest = 0
        for payload in payloads:
            for key, side in (("as", asks), ("a", asks), ("bs", bids), ("b", bids)):
                if key in payload:
                    levels, time_us = _levels(payload[key], key)
                    side += levels
                    latest = max(latest, time_us)
            if "c" in payload:
                text = _text(payload["c"], "checksum")
                if not text.isdigit():
                    raise _Malformed(f"checksum {text!r} is not an unsigned integer")
                checksum = int(text)
        if is_snapshot and checksum is not None:
            checksum = None  # v1 snapshots carry none; never trust a stray one
        # Exchange time of a v1 book message: its newest level's time (messages carry no other).
        event_us = latest or received_us
        self.kraken.apply_book(symbol, asks, bids, checksum, is_snapshot, depth, event_us, received_us, out)


def _event_reason(message: dict[str, Any]) -> tuple[str, str] | None:
    """None for an expected event (heartbeat, status, subscription ack); else why it is rejected."""
    event = message.get("event")
    if event in _CONTROL_EVENTS:
        return None
    if event == "subscriptionStatus":
        if message.get("status") == "error":
            return "exchange_error", f"subscription failed: {message.get('errorMessage')}"
        return None
    if "errorMessage" in message or message.get("status") == "error":
        return "exchange_error", f"{event} failed: {message.get('errorMessage')}"
    return "wrong_type", f"unexpected event {event!r}"


class _TradeColumns:
    """v1 trade rows as they are read, turned into ``DECODED_TRADE_SCHEMA`` columns at the end."""

    def __init__(self) -> None:
        self.symbols: list[str] = []
        self.natives: list[str] = []
        self.trade_ids: list[str] = []
        self.prices: list[str] = []
        self.quantities: list[str] = []
        self.sides: list[str] = []
        self.timestamps: list[int] = []
        self.indices: list[int] = []

    def add(self, symbol: str, native: str, rows: object, index: int) -> None:
        """All trades of one frame, or none of them (a malformed row rejects the frame)."""
        if not isinstance(rows, list):
            raise _Malformed("trades must be a list")
        parsed = []
        for position, row in enumerate(rows):
            if not isinstance(row, list) or len(row) < 4:
                raise _Malformed(f"trade {row!r} is not [price, volume, time, side, orderType, misc]")
            price, volume, time = _text(row[0], "price"), _text(row[1], "volume"), _text(row[2], "time")
            side = _SIDES.get(_text(row[3], "side"))
            if side is None:
                raise _Malformed(f"trade side {row[3]!r} is not 'b' or 's'")
            # v1 trades have no id: time (µs text) + position in the frame is unique and reproducible.
            parsed.append((f"{time}-{position}", price, volume, side, epoch_text_us(time)))
        for trade_id, price, volume, side, time_us in parsed:
            self.symbols.append(symbol)
            self.natives.append(native)
            self.trade_ids.append(trade_id)
            self.prices.append(price)
            self.quantities.append(volume)
            self.sides.append(side)
            self.timestamps.append(time_us)
            self.indices.append(index)

    def to_arrow(self, exchange: str, received_us: list[int]) -> pa.Table:
        return pa.table(
            {
                "exchange": pa.array([exchange] * len(self.symbols), pa.string()),
                "symbol": pa.array(self.symbols, pa.string()),
                "native_symbol": pa.array(self.natives, pa.string()),
                "trade_id": pa.array(self.trade_ids, pa.string()),
                "price": strings_to_float(self.prices),
                "quantity": strings_to_float(self.quantities),
                "side": pa.array(self.sides, pa.string()),
                "timestamp": pa.array(self.timestamps, pa.int64()).cast(_UTC_US),
                "received_at": pa.array([received_us[i] for i in self.indices], pa.int64()).cast(_UTC_US),
                "frame_index": pa.array(self.indices, pa.int64()),
            },
            schema=DECODED_TRADE_SCHEMA,
        )

