"""One L2 order book, and the columnar collectors exchange modules fill while decoding.

A level is its price and quantity as floats, as the decoders read them off the wire; a book whose checksum is
computed over the exchange's text (Kraken) keeps each level's checksum text beside them, made once when the level is
set rather than re-formatted for every verification.

Layout: per side a plain list of its prices kept sorted with ``bisect`` (a C-level search and one memmove per
price that appears or vanishes) and, aligned with it, the list of its levels. A change finds its price by
bisection (float comparisons, no hashing), and the top N is a slice of each list: emission (top 20 at a cadence)
and the Kraken checksum (top 10, every update) read their quantities and checksum texts straight from the level
slice. (Measured on a 100-level book against a dict per side beside the sorted prices, which hashed every price of
the top on each read: a top-20 snapshot row 2.5 -> 1.6 us and a Kraken checksum 1.65 -> 1.15 us, while a level change
costs ~250 ns instead of ~210 ns, a bisection where a replace hashed twice; on the bench frames the Binance and Kraken
books come out ahead, Coinbase about even.)
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import Literal, NamedTuple, Protocol

import numpy as np
import pyarrow as pa

from trading_platform.schema import BOOK_EVENTS, BOOK_LEVELS, ORDERBOOK_SNAPSHOTS

Side = Literal["bid", "ask"]
# (price, quantity[, checksum text]): one tuple per level, stored as the decoder made it. The Binance and Coinbase
# decoders read the levels' number texts as floats in their own pass (lax msgspec decoders): a Binance level is the
# very (float, float) tuple msgspec built, a Coinbase one is made from its level object's two floats; no str per
# number, no float() per text. (Measured on the Binance bench frames: this sorted price list applies and reads the
# top ~5x faster than sortedcontainers.SortedDict; on a 120-level side with 3-level updates and a top-20 read every
# 10th, 1.06 us per update against 1.81 us for cryptofeed's C order_book.SortedDict.)
PriceLevel = tuple[float, float]
ChecksumLevel = tuple[float, float, str]
Level = PriceLevel | ChecksumLevel
_UTC_US = pa.timestamp("us", tz="UTC")


class SidedLevel(Protocol):
    """One level change that names its side, as a decoder reads it (Coinbase's level2 level object)."""

    @property
    def side(self) -> str: ...
    @property
    def price(self) -> float: ...
    @property
    def quantity(self) -> float: ...


class BookChange(NamedTuple):
    """A ``SidedLevel`` made from a wire format that spells levels otherwise."""

    side: str
    price: float
    quantity: float


def parse_levels(pairs: Iterable[tuple[str | float, str | float]]) -> list[PriceLevel]:
    """Levels from the exchange's (price, quantity) pairs, texts or numbers, in order.

    Raises ValueError for a value that is not a finite number: NaN or infinity would break the sorted price
    order (and mean nothing on a book).
    """
    # One pass, each number checked as it is made. The first non-finite level is reported only after every text
    # converted, so a text that is no number at all still wins, as it always has.
    levels: list[PriceLevel] = []
    append = levels.append
    non_finite: tuple[str | float, str | float] | None = None
    for price_text, quantity_text in pairs:
        price, quantity = float(price_text), float(quantity_text)
        if (price - price or quantity - quantity) and non_finite is None:  # 0.0 for a finite number, else NaN
            non_finite = price_text, quantity_text
        append((price, quantity))
    if non_finite is not None:
        raise not_finite(*non_finite)
    return levels


def check_finite(levels: Iterable[PriceLevel]) -> None:
    """Raise ValueError if a level's price or quantity is NaN or infinite (a lax decoder reads "nan" and "inf")."""
    for price, quantity in levels:
        if price - price or quantity - quantity:  # 0.0 for every finite number, NaN otherwise
            raise not_finite(price, quantity)


def not_finite(price: str | float, quantity: str | float) -> ValueError:
    """The error of a level that is no finite number, worded alike wherever a book refuses one."""
    return ValueError(f"level {price!r} {quantity!r} is not a finite number")


class OrderBook:
    """``bids`` / ``asks``: the prices held per side, ascending (the best bid is last, the best ask first); each
    side's levels are kept in a list aligned with its prices."""

    def __init__(self) -> None:
        self.bids: list[float] = []
        self.asks: list[float] = []
        self._bid_levels: list[Level] = []
        self._ask_levels: list[Level] = []
        self.sequence = 0  # the exchange's id of the last applied update, where it has one

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self._bid_levels.clear()
        self._ask_levels.clear()
        self.sequence = 0

    def apply(self, bids: Sequence[Level], asks: Sequence[Level]) -> None:
        """One message's levels: absolute quantities, in order (a later level at the same price wins); zero
        removes the level."""
        if bids:  # a message often changes one side only
            _apply_side(self.bids, self._bid_levels, bids)
        if asks:
            _apply_side(self.asks, self._ask_levels, asks)

    def apply_changes(self, changes: Iterable[SidedLevel], bid: str) -> None:
        """One message's levels of both sides in one list, each naming its side (``bid``: the bid side's name, any
        other is the ask side): absolute quantities, in order; zero removes the level. Applied straight from the
        decoder's objects: first splitting them into a tuple list per side (``apply``) cost ~10% of a Coinbase book
        update."""
        for change in changes:
            if change.side == bid:
                prices, held = self.bids, self._bid_levels
            else:
                prices, held = self.asks, self._ask_levels
            price, quantity = change.price, change.quantity
            index = bisect_left(prices, price)
            if index < len(prices) and prices[index] == price:
                if quantity:
                    held[index] = (price, quantity)
                else:
                    del prices[index]
                    del held[index]
            elif quantity:
                prices.insert(index, price)
                held.insert(index, (price, quantity))

    def set_level(self, side: Side, price_text: str, quantity_text: str) -> None:
        """One absolute quantity at a price; zero removes the level."""
        levels = parse_levels(((price_text, quantity_text),))
        if side == "bid":
            self.apply(levels, [])
        else:
            self.apply([], levels)

    def best_levels(self, side: Side, n: int) -> list[Level]:
        """The best ``n`` levels, best first."""
        if side == "bid":
            return self._bid_levels[:-n - 1:-1] if n > 0 else []
        return self._ask_levels[:n]

    def best_prices(self, side: Side, n: int) -> list[float]:
        if side == "bid":
            return self.bids[:-n - 1:-1] if n > 0 else []
        return self.asks[:n]

    def top(self, side: Side, n: int) -> list[PriceLevel]:
        """The best ``n`` (price, quantity), best first."""
        return [(level[0], level[1]) for level in self.best_levels(side, n)]

    def checksum_text(self, n: int) -> str:
        """The checksum texts of the best ``n`` asks then the best ``n`` bids, best first, joined (Kraken's order)."""
        return "".join(map(_CHECKSUM_TEXT, chain(self._ask_levels[:n], self._bid_levels[:-n - 1:-1])))

    def truncate(self, depth: int) -> None:
        """Keep the best ``depth`` levels per side (exchanges that send no deletes beyond depth)."""
        excess = len(self.bids) - depth
        if excess > 0:
            del self.bids[:excess]
            del self._bid_levels[:excess]
        if len(self.asks) > depth:
            del self.asks[depth:]
            del self._ask_levels[depth:]

    def crossed(self) -> bool:
        return bool(self.bids and self.asks and self.bids[-1] >= self.asks[0])


_QUANTITY = itemgetter(1)
_CHECKSUM_TEXT = itemgetter(2)


def _apply_side(prices: list[float], held: list[Level], levels: Sequence[Level]) -> None:
    if not prices:
        # A snapshot (or a side emptied by removals): keep the last level per price, then sort once.
        by_price: dict[float, Level] = {}
        for level in levels:
            if level[1]:
                by_price[level[0]] = level
            else:
                by_price.pop(level[0], None)
        prices[:] = sorted(by_price)
        held[:] = [by_price[price] for price in prices]
        return
    for level in levels:
        price = level[0]
        index = bisect_left(prices, price)
        if index < len(prices) and prices[index] == price:
            if level[1]:
                held[index] = level
            else:
                del prices[index]
                del held[index]
        elif level[1]:
            prices.insert(index, price)
            held.insert(index, level)


@dataclass
class BookSnapshots:
    """Rows for ``schema.ORDERBOOK_SNAPSHOTS`` (without batch_id).

    Levels are kept as flat columns per side (every row's prices one after another, its quantities alike, and
    each row's level count): a list of floats is one object for the cyclic GC, where a list of (price,
    quantity) tuples per row made ~40 tracked objects per snapshot, alive until the batch ends, enough to
    trigger full collections of the whole heap in a busy tick. ``bids`` / ``asks`` read them back as rows.
    """

    exchange: str
    symbols: list[str] = field(default_factory=list)
    natives: list[str] = field(default_factory=list)
    timestamps_us: list[int] = field(default_factory=list)
    received_us: list[int] = field(default_factory=list)
    sequences: list[int] = field(default_factory=list)
    bid_prices: list[float] = field(default_factory=list)
    bid_quantities: list[float] = field(default_factory=list)
    bid_counts: list[int] = field(default_factory=list)  # levels per row
    ask_prices: list[float] = field(default_factory=list)
    ask_quantities: list[float] = field(default_factory=list)
    ask_counts: list[int] = field(default_factory=list)

    def add(self, symbol: str, native: str, book: OrderBook, depth: int, timestamp_us: int, received_us: int) -> None:
        self.symbols.append(symbol)
        self.natives.append(native)
        self.timestamps_us.append(timestamp_us)
        self.received_us.append(received_us)
        self.sequences.append(book.sequence)
        prices = book.best_prices("bid", depth)
        self.bid_prices += prices
        self.bid_quantities += map(_QUANTITY, book.best_levels("bid", depth))
        self.bid_counts.append(len(prices))
        prices = book.best_prices("ask", depth)
        self.ask_prices += prices
        self.ask_quantities += map(_QUANTITY, book.best_levels("ask", depth))
        self.ask_counts.append(len(prices))

    @property
    def bids(self) -> list[list[tuple[float, float]]]:
        """Each row's bids, best first, as (price, quantity)."""
        return _rows(self.bid_prices, self.bid_quantities, self.bid_counts)

    @property
    def asks(self) -> list[list[tuple[float, float]]]:
        """Each row's asks, best first, as (price, quantity)."""
        return _rows(self.ask_prices, self.ask_quantities, self.ask_counts)

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
            "bids": _levels_array(self.bid_prices, self.bid_quantities, self.bid_counts),
            "asks": _levels_array(self.ask_prices, self.ask_quantities, self.ask_counts),
        }, schema=pa.schema([f for f in ORDERBOOK_SNAPSHOTS.arrow_schema if f.name != "batch_id"]))


def _rows(prices: list[float], quantities: list[float], counts: list[int]) -> list[list[tuple[float, float]]]:
    rows, start = [], 0
    for count in counts:
        rows.append(list(zip(prices[start:start + count], quantities[start:start + count], strict=True)))
        start += count
    return rows


def _levels_array(prices: list[float], quantities: list[float], counts: list[int]) -> pa.Array:
    """Flat level columns and the level count of each row -> one ``BOOK_LEVELS`` array (list<struct>)."""
    offsets = np.zeros(len(counts) + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    values = pa.StructArray.from_arrays([pa.array(prices, pa.float64()), pa.array(quantities, pa.float64())],
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
