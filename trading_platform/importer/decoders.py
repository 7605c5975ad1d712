"""The decoders an import runs: the live exchange modules, or their legacy-format decoders for old archives,
with the book totals the importer prints (the live modules keep only Kraken's)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from trading_platform.config import ExchangeConfig
from trading_platform.exchanges.binance import Binance
from trading_platform.exchanges.book import PriceLevel, SidedLevel
from trading_platform.exchanges.coinbase import Coinbase
from trading_platform.exchanges.decoded import DecodeOutput
from trading_platform.exchanges.legacy.coinbase import CoinbaseExchangeFeedDecoder
from trading_platform.exchanges.legacy.kraken import KrakenV1Decoder
from trading_platform.exchanges.registry import exchange_for
from trading_platform.ingestion.normalize import Decoder


class _CountingBinance(Binance):
    """Binance counting the depth events it applies. The live module keeps no such total (only Kraken's does),
    so it is counted here, at the one method every diff event goes through."""

    def _on_depth(self, symbol: str, time_ms: int, first: int, last: int, bids: list[PriceLevel],
                  asks: list[PriceLevel], received_us: int, out: DecodeOutput) -> None:
        was_synced, sequence = self.synced[symbol], self.books[symbol].sequence
        super()._on_depth(symbol, time_ms, first, last, bids, asks, received_us, out)
        # Applied: the book was in sync, the event was not already contained in it and no gap unsynced it.
        # Buffered events count when the snapshot applies them (they come back through here, synced).
        if was_synced and self.synced[symbol] and last >= sequence:
            self.counters["book_updates_applied"] += 1


class _CountingCoinbase(Coinbase):
    """Coinbase counting the level2 updates it applies (both feeds' books go through this method)."""

    def apply_book_changes(self, symbol: str, changes: Sequence[SidedLevel], event_us: int, received_us: int,
                           sequence: int, out: DecodeOutput) -> None:
        if self.synced[symbol]:  # else ignored until the next snapshot, as the method itself does
            self.counters["book_updates_applied"] += 1
        super().apply_book_changes(symbol, changes, event_us, received_us, sequence, out)


class _CountingCoinbaseFeed(CoinbaseExchangeFeedDecoder):
    def __init__(self, config: ExchangeConfig) -> None:
        super().__init__(config)
        self.exchange = _CountingCoinbase(config)  # the books the legacy decoder applies its frames to

    @property
    def counters(self) -> Counter[str]:
        return self.exchange.counters


_LABELS: dict[type, str] = {_CountingBinance: "Binance", _CountingCoinbase: "Coinbase",
                            _CountingCoinbaseFeed: "CoinbaseExchangeFeedDecoder"}


def choose_decoder(config: ExchangeConfig, first_frame: bytes) -> Decoder:
    """The live exchange module, or its legacy-format decoder for old archives."""
    if config.name == "coinbase":
        legacy = b'"channel"' not in first_frame and b'"type"' in first_frame
        return _CountingCoinbaseFeed(config) if legacy else _CountingCoinbase(config)
    if config.name == "kraken" and (first_frame.lstrip()[:1] == b"[" or b'"event"' in first_frame):
        return KrakenV1Decoder(config)
    if config.name == "binance":
        return _CountingBinance(config)
    return exchange_for(config)


def decoder_label(decoder: Decoder) -> str:
    """The decoder's name in the import report."""
    return _LABELS.get(type(decoder), type(decoder).__name__)
