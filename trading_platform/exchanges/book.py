"""One L2 order book, and the columnar collectors exchange modules fill while decoding.

Levels keep the exchange's own price/quantity text next to the float, because some checksums (Kraken)
are computed over the text with its full precision.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa

from trading_platform.schema import BOOK_EVENTS, BOOK_LEVELS, ORDERBOOK_SNAPSHOTS

Side = Literal["bid", "ask"]
_UTC_US = pa.timestamp("us", tz="UTC")


class OrderBook:
    def __init__(self) -> None:
        self.bids: dict[float, tuple[str, str]] = {}
        self.asks: dict[float, tuple[str, str]] = {}
        self.sequence = 0  # the exchange's id of the last applied update, where it has one

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self.sequence = 0

    def set_level(self, side: Side, price_text: str, quantity_text: str) -> None:
        """Absolute quantity at a price; zero removes the level."""
        levels = self.bids if side == "bid" else self.asks
        price = float(price_text)
        if float(quantity_text) == 0:
            levels.pop(price, None)
        else:
            levels[price] = (price_text, quantity_text)

    def best_prices(self, side: Side, n: int) -> list[float]:
        levels = self.bids if side == "bid" else self.asks
        return heapq.nlargest(n, levels) if side == "bid" else heapq.nsmallest(n, levels)

    def top(self, side: Side, n: int) -> list[tuple[float, float]]:
        levels = self.bids if side == "bid" else self.asks
        return [(price, float(levels[price][1])) for price in self.best_prices(side, n)]

    def top_text(self, side: Side, n: int) -> list[tuple[str, str]]:
        levels = self.bids if side == "bid" else self.asks
        return [levels[price] for price in self.best_prices(side, n)]

    def truncate(self, depth: int) -> None:
        """Keep the best ``depth`` levels per side (exchanges that send no deletes beyond depth)."""
        for side in ("bid", "ask"):
            levels = self.bids if side == "bid" else self.asks
            if len(levels) > depth:
                keep = set(self.best_prices(side, depth))
                for price in [p for p in levels if p not in keep]:
                    del levels[price]

    def crossed(self) -> bool:
        return bool(self.bids and self.asks and max(self.bids) >= min(self.asks))


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
        def levels(rows: list[list[tuple[float, float]]]) -> pa.Array:
            return pa.array([[{"price": p, "quantity": q} for p, q in row] for row in rows], BOOK_LEVELS)

        return pa.table({
            "exchange": pa.array([self.exchange] * len(self), pa.string()),
            "symbol": pa.array(self.symbols, pa.string()),
            "native_symbol": pa.array(self.natives, pa.string()),
            "timestamp": pa.array(self.timestamps_us, pa.int64()).cast(_UTC_US),
            "received_at": pa.array(self.received_us, pa.int64()).cast(_UTC_US),
            "sequence": pa.array(self.sequences, pa.int64()),
            "bids": levels(self.bids),
            "asks": levels(self.asks),
        }, schema=pa.schema([f for f in ORDERBOOK_SNAPSHOTS.arrow_schema if f.name != "batch_id"]))


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
