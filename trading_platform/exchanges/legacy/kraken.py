"""Kraken WebSocket v1 frames (legacy ``wss://ws.kraken.com``), as found in users' recorded archives.

For the offline importer only: the live path is v2 (``kraken.py``), the only Kraken in the registry.
``KrakenV1Decoder`` follows the decode template (``RecordDecoder``) with untyped JSON (v1 frames are
positional arrays) and wraps a ``Kraken`` instance: it feeds its one book code path (``Kraken.apply_book``:
the same ``OrderBook``s, truncation, checksum, events and snapshot cadence) and its trade rows, so an
imported v1 book and a live v2 book are maintained and emitted by the same code.

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
from collections.abc import Sequence
from typing import Any

import msgspec
import pyarrow as pa

from trading_platform.config import ExchangeConfig
from trading_platform.exchanges.base import TradeColumns
from trading_platform.exchanges.conversions import micros_timestamps, strings_to_float
from trading_platform.exchanges.decoded import DecodeOutput, RecordKind
from trading_platform.exchanges.kraken import Kraken, checksum_levels
from trading_platform.exchanges.record_decoder import RecordDecoder

# v1 spells some assets the old way; normalized symbols (and the v2 native spelling) use the new one.
V1_ASSETS = {"XBT": "BTC", "XDG": "DOGE"}
_CONTROL_EVENTS = frozenset({"heartbeat", "systemStatus", "pong"})
# Public v1 channels the platform does not use (``ohlc-<interval>``): counted as ignored, never rejected.
_IGNORED_CHANNELS = frozenset({"ticker", "spread", "ohlc"})
_SIDES = {"b": "buy", "s": "sell"}  # the taker side


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


class KrakenV1Decoder(RecordDecoder):
    """Decode recorded Kraken v1 frames into the same trades/book/event output as ``Kraken.decode``.

    Offline: a checksum mismatch is recorded and the book waits (updates ignored) for the next snapshot
    the archive holds (after a reconnect or resubscribe); no actions are returned. REST records are
    ignored. ``frame_index`` of a trade row is the index of its record in ``frames``.
    """

    name = Kraken.name
    batch_decoder = msgspec.json.Decoder(list[Any])
    frame_decoder = msgspec.json.Decoder()

    def __init__(self, config: ExchangeConfig, kraken: Kraken | None = None) -> None:
        # The wrapped Kraken owns the books; pass one to share book state with other code.
        self.kraken = kraken if kraken is not None else Kraken(config)

    @property
    def counters(self) -> Counter[str]:
        """The wrapped Kraken's running totals (snapshots, updates, checksums passed/failed)."""
        return self.kraken.counters

    def on_record(self, kind: RecordKind, payload: bytes, index: int, received_us: int,
                  out: DecodeOutput) -> None:
        if kind == RecordKind.CONNECTED:
            self.kraken.new_connection()

    def on_messages(self, messages: list[Any], indices: Sequence[int], frames: list[bytes],
                    received_us: list[int], out: DecodeOutput) -> None:
        for message, index in zip(messages, indices, strict=True):
            frame = frames[index]
            try:
                if isinstance(message, dict):
                    reason = _event_reason(message)
                    if reason is None:
                        out.control += 1
                    else:
                        out.rejects.add(received_us[index], reason[0], reason[1], frame)
                elif isinstance(message, list) and len(message) >= 4 and _ignored_channel(message[-2]):
                    out.ignored += 1  # checked first: its pair need not be one we import
                elif isinstance(message, list) and len(message) >= 4:
                    self._channel_frame(message, index, frame, received_us[index], out)
                else:
                    raise _Malformed("neither an event object nor a [channelID, ..., channel, pair] array")
            except _Malformed as error:
                out.rejects.add(received_us[index], "wrong_type", str(error), frame)

    def finish(self, frames: list[bytes], received_us: list[int], out: DecodeOutput) -> pa.Table:
        trades: list[_V1Trade] = out.trades
        columns = TradeColumns(
            natives=pa.array([t[0] for t in trades], pa.string()),
            trade_ids=pa.array([t[1] for t in trades], pa.string()),
            prices=strings_to_float([t[2] for t in trades]),
            quantities=strings_to_float([t[3] for t in trades]),
            sides=pa.array([t[4] for t in trades], pa.string()),
            timestamps=micros_timestamps([t[5] for t in trades]),
        )
        return self.kraken.trade_table(columns, out.trade_frames, frames, received_us, out.rejects)

    def _channel_frame(self, message: list[Any], index: int, frame: bytes, received_us: int,
                       out: DecodeOutput) -> None:
        channel, pair = _text(message[-2], "channel name"), _text(message[-1], "pair")
        symbol = normalize_pair(pair)
        if symbol not in self.kraken.books:
            out.rejects.add(received_us, "unknown_symbol", f"pair {pair!r} is not configured for {self.name}", frame)
            return
        if channel == "trade":
            if len(message) != 4:
                raise _Malformed("a trade frame is [channelID, trades, 'trade', pair]")
            _add_trades(self.kraken.native_symbol(symbol), message[1], index, out)
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

    def _book_frame(self, symbol: str, depth: int, payloads: list[Any], received_us: int, out: DecodeOutput) -> None:
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
        try:
            ask_levels, bid_levels = checksum_levels(asks), checksum_levels(bids)
        except ValueError as error:  # numbers, but not finite ones
            raise _Malformed(str(error)) from None
        self.kraken.apply_book(symbol, ask_levels, bid_levels, checksum, is_snapshot, depth, event_us, received_us,
                               out)


def _ignored_channel(name: object) -> bool:
    return isinstance(name, str) and name.partition("-")[0] in _IGNORED_CHANNELS


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


# One v1 trade as read: (native symbol, trade id, price, volume, taker side, time µs).
_V1Trade = tuple[str, str, str, str, str, int]


def _add_trades(native: str, rows: object, index: int, out: DecodeOutput) -> None:
    """All trades of one frame, or none of them (a malformed row rejects the frame)."""
    if not isinstance(rows, list):
        raise _Malformed("trades must be a list")
    parsed: list[_V1Trade] = []
    for position, row in enumerate(rows):
        if not isinstance(row, list) or len(row) < 4:
            raise _Malformed(f"trade {row!r} is not [price, volume, time, side, orderType, misc]")
        price, volume, time = _text(row[0], "price"), _text(row[1], "volume"), _text(row[2], "time")
        side = _SIDES.get(_text(row[3], "side"))
        if side is None:
            raise _Malformed(f"trade side {row[3]!r} is not 'b' or 's'")
        # v1 trades have no id: time (µs text) + position in the frame is unique and reproducible.
        parsed.append((native, f"{time}-{position}", price, volume, side, epoch_text_us(time)))
    out.trades += parsed
    out.trade_frames += [index] * len(parsed)
