"""Which symbols a capture holds, and how a native symbol is spelled BASE-QUOTE.

Natives are spelled the way the exchange module does (configured symbols), then as cryptofeed's recording says
(``rest_recordings.py``), then by the exchange's convention here: Coinbase ids already are BASE-QUOTE,
Kraken ``XBT/USD`` is ``BTC-USD``, Binance ``BTCUSDT`` splits at the longest known quote asset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from trading_platform.config import SYMBOL_PATTERN
from trading_platform.exchanges.legacy.kraken import normalize_pair

# Binance spot quote assets, current and delisted (archives are old), to split a native symbol that
# neither the configuration nor the recording spells: the longest matching suffix wins (BTCTUSD is BTC-TUSD).
BINANCE_QUOTE_ASSETS = (
    "USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USDP", "USDS", "PAX", "DAI", "UST", "VAI", "AEUR", "EURI",
    "BTC", "ETH", "BNB", "XRP", "TRX", "DOGE", "DOT",
    "EUR", "GBP", "AUD", "BRL", "TRY", "RUB", "UAH", "NGN", "ZAR", "IDRT", "BIDR", "BKRW", "BVND", "JPY",
    "ARS", "PLN", "RON", "MXN", "COP", "CZK",
)
_QUOTES_LONGEST_FIRST = sorted(BINANCE_QUOTE_ASSETS, key=len, reverse=True)

# Light shapes decoded a chunk at a time: msgspec skips every field not listed, so a probe costs a fraction of
# the real decode. Each yields (native symbol, is a book frame) for the trade and book frames of a protocol.
Found = tuple[tuple[str, bool], ...]


class _BinanceEvent(msgspec.Struct, gc=False):
    e: str = ""
    s: str = ""


class _BinanceProbe(msgspec.Struct, gc=False):
    data: _BinanceEvent | list[Any] | None = None  # combined streams; all-market streams carry a list
    e: str = ""  # raw streams
    s: str = ""


_BINANCE_TRADE_EVENTS = frozenset({"trade", "aggTrade"})


def _binance_found(message: _BinanceProbe) -> Found:
    event = message.data if isinstance(message.data, _BinanceEvent) else message
    if event.e in _BINANCE_TRADE_EVENTS:
        return ((event.s, False),)
    if event.e == "depthUpdate":
        return ((event.s, True),)
    return ()


class _CoinbaseTrade(msgspec.Struct, gc=False):
    product_id: str = ""


class _CoinbaseEvent(msgspec.Struct, gc=False):
    product_id: str = ""
    trades: list[_CoinbaseTrade] = []


class _CoinbaseProbe(msgspec.Struct, gc=False):
    channel: str = ""  # Advanced Trade
    events: list[_CoinbaseEvent] = []
    type: str = ""  # the Exchange feed of older archives
    product_id: str = ""


_COINBASE_FEED_TRADES = frozenset({"match", "last_match"})
_COINBASE_FEED_BOOKS = frozenset({"snapshot", "l2update"})


def _coinbase_found(message: _CoinbaseProbe) -> Found:
    if message.channel == "market_trades":
        return tuple((t.product_id, False) for event in message.events for t in event.trades)
    if message.channel == "l2_data":
        return tuple((event.product_id, True) for event in message.events)
    if message.type in _COINBASE_FEED_TRADES:
        return ((message.product_id, False),)
    if message.type in _COINBASE_FEED_BOOKS:
        return ((message.product_id, True),)
    return ()


class _KrakenEntry(msgspec.Struct, gc=False):
    symbol: str = ""


class _KrakenProbe(msgspec.Struct, gc=False):
    channel: str = ""
    data: list[_KrakenEntry] | dict[str, Any] | None = None  # `instrument` carries an object


def _kraken_found(message: _KrakenProbe | list[Any]) -> Found:
    if isinstance(message, list):  # v1: [channelID, payload..., channel name, pair]
        if len(message) < 4 or not isinstance(message[-2], str) or not isinstance(message[-1], str):
            return ()
        if message[-2] == "trade":
            return ((message[-1], False),)
        return ((message[-1], True),) if message[-2].startswith("book-") else ()
    if message.channel in ("trade", "book") and isinstance(message.data, list):
        return tuple((entry.symbol, message.channel == "book") for entry in message.data)
    return ()


@dataclass(frozen=True)
class FrameProbe:
    batch: msgspec.json.Decoder[Any]
    single: msgspec.json.Decoder[Any]
    found: Callable[[Any], Found]

    def symbols(self, frames: list[bytes]) -> list[Found]:
        if not frames:
            return []
        try:
            messages = self.batch.decode(b"[" + b",".join(frames) + b"]")
            if len(messages) == len(frames):  # else an empty frame, or one holding "a,b": frame by frame
                return [self.found(m) for m in messages]
        except msgspec.DecodeError:
            pass
        out: list[Found] = []
        for frame in frames:
            try:
                out.append(self.found(self.single.decode(frame)))
            except msgspec.DecodeError:
                out.append(())  # the decoder quarantines it
        return out


PROBES = {
    "binance": FrameProbe(msgspec.json.Decoder(list[_BinanceProbe]), msgspec.json.Decoder(_BinanceProbe),
                      _binance_found),
    "coinbase": FrameProbe(msgspec.json.Decoder(list[_CoinbaseProbe]), msgspec.json.Decoder(_CoinbaseProbe),
                       _coinbase_found),
    "kraken": FrameProbe(msgspec.json.Decoder(list[_KrakenProbe | list[Any]]),
                     msgspec.json.Decoder(_KrakenProbe | list[Any]), _kraken_found),
}


def normalized_symbol(exchange: str, native: str, known: dict[str, str]) -> str | None:
    """BASE-QUOTE for a native symbol, or None when it has no spelling the lake accepts."""
    symbol = known.get(native)
    if symbol is None:
        if exchange == "binance":
            symbol = next((f"{native[:-len(q)]}-{q}" for q in _QUOTES_LONGEST_FIRST
                           if native.endswith(q) and len(native) > len(q)), None)
        elif exchange == "kraken":
            symbol = normalize_pair(native) if "/" in native else None  # v1 spells BTC as XBT
        else:
            symbol = native  # Coinbase product ids are BASE-QUOTE already
    return symbol if symbol is not None and SYMBOL_PATTERN.match(symbol) else None
