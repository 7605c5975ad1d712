"""One L2 order book, and the columnar collectors exchange modules fill while decoding.

Levels keep the exchange's own price/quantity text next to the floats, because some checksums (Kraken)
are computed over the text with its full precision; such a book also keeps each level's checksum text, made
once when the level is set rather than re-formatted for every verification.

Layout: per side a dict (price -> level) finds a price in O(1), and a plain list of its prices kept sorted with
``bisect`` (a C-level search and one memmove per price that appears or vanishes) yields the top N by slicing.
Emission (top 20 at a cadence) and the Kraken checksum (top 10, every update) read only the top, while most
changes replace a quantity at a price already held: cheaper than re-selecting the top with a heap per read.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import Literal

import numpy as np
import pyarrow as pa

from trading_platform.schema import BOOK_EVENTS, BOOK_LEVELS, ORDERBOOK_SNAPSHOTS

Side = Literal["bid", "ask"]
# (price, quantity, price text, quantity text, checksum text): one tuple per level, built once when the exchange
# sends it and stored as is. The checksum text is "" for books that verify none (and for removals).
Level = tuple[float, float, str, str, str]
_UTC_US = pa.timestamp("us", tz="UTC")
_prices = itemgetter(0)
_quantities = itemgetter(1)


def parse_levels(pairs: Iterable[tuple[str, str]]) -> list[Level]:
    """Levels from the exchange's (price text, quantity text) pairs, in order.

    Raises ValueError for a value that is not a finite number: NaN or infinity would break the sorted price
    order (and mean nothing on a book).
    """
    levels = [(float(price), float(quantity), price, quantity, "") for price, quantity in pairs]
    check_finite(levels)
    return levels


def check_finite(levels: Sequence[Level]) -> None:
    """Raise ValueError if a level's price or quantity is NaN or infinite."""
    # Two C-level sums stay finite unless some value is not (or the values are absurdly large): only then
    # look level by level, so absurd but finite values still pass.
    if math.isfinite(sum(map(_prices, levels)) + sum(map(_quantities, levels))):
        return
    for price, quantity, price_text, quantity_text, _ in levels:
        if not (math.isfinite(price) and math.isfinite(quantity)):
            raise ValueError(f"level {price_text!r} {quantity_text!r} is not a finite number")


class OrderBook:
    def __init__(self) -> None:
        self.bids: dict[float, Level] = {}
        self.asks: dict[float, Level] = {}
        self._bid_prices: list[float] = []  # ascending: the best bid is last
        self._ask_prices: list[float] = []  # ascending: the best ask is first
        self.sequence = 0  # the exchange's id of the last applied update, where it has one

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self._bid_prices.clear()
        self._ask_prices.clear()
        self.sequence = 0

    def apply(self, side: Side, levels: Iterable[Level]) -> None:
        """Absolute quantities, in order (a later level at the same price wins); zero removes the level."""
        book, prices = (self.bids, self._bid_prices) if side == "bid" else (self.asks, self._ask_prices)
        if not book:
            # A snapshot (or a side emptied by removals): fill the dict, then sort its prices once.
            for level in levels:
                if level[1]:
                    book[level[0]] = level
                else:
                    book.pop(level[0], None)
            prices[:] = sorted(book)
            return
        for level in levels:
            price = level[0]
            if level[1]:
                if price not in book:
                    insort(prices, price)
                book[price] = level
            elif book.pop(price, None) is not None:
                del prices[bisect_left(prices, price)]

    def set_level(self, side: Side, price_text: str, quantity_text: str) -> None:
        """One absolute quantity at a price; zero removes the level."""
        self.apply(side, parse_levels(((price_text, quantity_text),)))

    def best_prices(self, side: Side, n: int) -> list[float]:
        if side == "bid":
            return self._bid_prices[:-n - 1:-1] if n > 0 else []
        return self._ask_prices[:n]

    def top(self, side: Side, n: int) -> list[tuple[float, float]]:
        levels = self.bids if side == "bid" else self.asks
        return [(price, levels[price][1]) for price in self.best_prices(side, n)]

    def top_text(self, side: Side, n: int) -> list[tuple[str, str]]:
        levels = self.bids if side == "bid" else self.asks
        return [levels[price][2:4] for price in self.best_prices(side, n)]

    def checksum_text(self, side: Side, n: int) -> str:
        """The best ``n`` levels' checksum texts, best first, joined."""
        levels = self.bids if side == "bid" else self.asks
        return "".join([levels[price][4] for price in self.best_prices(side, n)])

    def truncate(self, depth: int) -> None:
        """Keep the best ``depth`` levels per side (exchanges that send no deletes beyond depth)."""
        excess = len(self._bid_prices) - depth
        if excess > 0:
            for price in self._bid_prices[:excess]:
                del self.bids[price]
            del self._bid_prices[:excess]
        if len(self._ask_prices) > depth:
            for price in self._ask_prices[depth:]:
                del self.asks[price]
            del self._ask_prices[depth:]

    def crossed(self) -> bool:
        return bool(self._bid_prices and self._ask_prices and self._bid_prices[-1] >= self._ask_prices[0])


@dataclass
class BookSnapshots:
    """Rows for ``schema.ORDERBOOK_SNAPSHOTS`` (without batch_id)."""

    exchange: str
    symbols: list[str] = field(default_factory=list)
    natives: list[str] = field(default_factory=list)
    timestamps_us: list[int] = field(default_factory=list)
    received_us: list[int] = field(default_factory=list)
    sequences: list[int] = field(default_factory=list)
    bids: list[list[tuple[float, float]]] = field(default_factory=list)
    asks: list[list[tuple[float, float]]] = field(default_factory=list)

    def add(self, symbol: str, native: str, book: OrderBook, depth: int, timestamp_us: int, received_us: int) -> None:
        self.symbols.append(symbol)
        self.natives.append(native)
        self.timestamps_us.append(timestamp_us)
        self.received_us.append(received_us)
        self.sequences.append(book.sequence)
        self.bids.append(book.top("bid", depth))
        self.asks.append(book.top("ask", depth))

    def __len__(self) -> int:
        return len(self.symbols)

    def to_arrow(self) -> pa.Table:
        return pa.table({
            "exchange": pa.array([self.exchange] * len(self), pa.string()),
            "symbol": pa.array(self.symbols, pa.string()),
            "native_symbol": pa.array(self.natives, pa.string()),
            "timestamp": pa.array(self.timestamps_us, pa.int64()).cast(_UTC_US),
            "received_at": pa.array(self.received_us, pa.int64()).cast(_UTC_US),
            "sequence": pa.array(self.sequences, pa.int64()),
            "bids": _levels_array(self.bids),
            "asks": _levels_array(self.asks),
        }, schema=pa.schema([f for f in ORDERBOOK_SNAPSHOTS.arrow_schema if f.name != "batch_id"]))


def _levels_array(rows: list[list[tuple[float, float]]]) -> pa.Array:
    """Rows of (price, quantity) as one ``BOOK_LEVELS`` array, built from flat columns (not a dict per level)."""
    flat = np.array(list(chain.from_iterable(rows)), np.float64).reshape(-1, 2)
    offsets = np.zeros(len(rows) + 1, np.int32)
    np.cumsum([len(row) for row in rows], out=offsets[1:])
    values = pa.StructArray.from_arrays([pa.array(flat[:, 0]), pa.array(flat[:, 1])],
                                        fields=list(BOOK_LEVELS.value_type))
    return pa.ListArray.from_arrays(pa.array(offsets), values, type=BOOK_LEVELS)


@dataclass
class BookEvents:
    """Rows for ``schema.BOOK_EVENTS`` (without batch_id): gaps, checksum mismatches, resyncs."""

    exchange: str
    symbols: list[str] = field(default_factory=list)
    timestamps_us: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    def add(self, symbol: str, timestamp_us: int, kind: str, detail: str) -> None:
        self.symbols.append(symbol)
        self.timestamps_us.append(timestamp_us)
        self.kinds.append(kind)
        self.details.append(detail)

    def __len__(self) -> int:
        return len(self.symbols)

    def to_arrow(self) -> pa.Table:
        return pa.table({
            "exchange": pa.array([self.exchange] * len(self), pa.string()),
            "symbol": pa.array(self.symbols, pa.string()),
            "timestamp": pa.array(self.timestamps_us, pa.int64()).cast(_UTC_US),
            "kind": pa.array(self.kinds, pa.string()),
            "detail": pa.array(self.details, pa.string()),
        }, schema=pa.schema([f for f in BOOK_EVENTS.arrow_schema if f.name != "batch_id"]))
