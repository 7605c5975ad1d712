"""What the replay server actually sent: the ground truth a test compares the platform's tables with.

A trade is recorded once a connection's ``send`` accepted its frame (frames still queued when a
connection dies, or whose send raised ``ConnectionClosed``, are not). The same trade delivered to two
connections is one trade (``count``) but two deliveries (``frames``; a Coinbase or Kraken frame that
carries several trades counts one per trade). Ids are kept as merged ranges, so a long run stays small
in memory and ``ranges`` shows gaps at a glance.

Every exchange is recorded the same way: (exchange, native symbol — ``BTCUSDT``, ``BTC-USD``,
``BTC/USD`` — trade id). Coinbase's ``market_trades`` and Kraken's ``trade`` snapshots re-send the
last 50 trades on every subscribe: they are recorded too (the client did receive them, and some were
never sent live), and since ids are a set they collapse with the live deliveries of the same trades:
``trades(exchange)`` and ``count`` stay distinct trades, only ``frames`` grows.

Thread-safe: the server mutates it on its event-loop thread while a synchronous test reads it.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _IdRanges:
    """Disjoint, sorted, inclusive id ranges; appending at the end (the usual case) is O(1)."""

    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    count: int = 0

    def add(self, first: int, last: int) -> int:
        """Add [first, last]; returns how many ids were new."""
        starts, ends = self.starts, self.ends
        if not starts or first > ends[-1] + 1:
            starts.append(first)
            ends.append(last)
            self.count += last - first + 1
            return last - first + 1
        if first == ends[-1] + 1:  # the next ids of a live feed: extend the last range
            ends[-1] = last
            self.count += last - first + 1
            return last - first + 1
        # General case: merge with every range that overlaps or touches [first, last].
        lo = bisect.bisect_left(ends, first - 1)
        hi = bisect.bisect_right(starts, last + 1)
        if lo >= hi:  # falls strictly between two ranges
            starts.insert(lo, first)
            ends.insert(lo, last)
            self.count += last - first + 1
            return last - first + 1
        covered = sum(
            min(ends[i], last) - max(starts[i], first) + 1
            for i in range(lo, hi)
            if starts[i] <= last and ends[i] >= first
        )
        new_start, new_end = min(first, starts[lo]), max(last, ends[hi - 1])
        old_total = sum(ends[i] - starts[i] + 1 for i in range(lo, hi))
        starts[lo:hi] = [new_start]
        ends[lo:hi] = [new_end]
        self.count += (new_end - new_start + 1) - old_total
        return (last - first + 1) - covered

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self.starts, self.ends, strict=True))

    def ids(self) -> list[int]:
        return [i for start, end in zip(self.starts, self.ends, strict=True) for i in range(start, end + 1)]


@dataclass
class _SymbolEntry:
    ids: _IdRanges = field(default_factory=_IdRanges)
    frames: int = 0


class TradeLedger:
    """Trades sent, per exchange and native symbol, plus frames sent per connection."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, _SymbolEntry]] = {}
        self._per_connection: dict[int, dict[str, dict[str, int]]] = {}

    def record(self, exchange: str, symbol: str, first_id: int, count: int, connection_id: int) -> None:
        """``count`` frames with consecutive trade ids from ``first_id`` were handed to a send."""
        if count <= 0:
            return
        with self._lock:
            entry = self._entries.setdefault(exchange, {}).get(symbol)
            if entry is None:
                entry = self._entries[exchange][symbol] = _SymbolEntry()
            entry.ids.add(first_id, first_id + count - 1)
            entry.frames += count
            per_symbol = self._per_connection.setdefault(connection_id, {}).setdefault(exchange, {})
            per_symbol[symbol] = per_symbol.get(symbol, 0) + count

    def trades(self, exchange: str) -> set[tuple[str, str]]:
        """Every (native symbol, trade id as string) sent on ``exchange``, like the platform stores them."""
        with self._lock:
            return {
                (symbol, str(trade_id))
                for symbol, entry in self._entries.get(exchange, {}).items()
                for trade_id in entry.ids.ids()
            }

    def count(self, exchange: str, symbol: str | None = None) -> int:
        """Distinct trades sent (a trade fanned out to two connections counts once)."""
        with self._lock:
            entries = self._entries.get(exchange, {})
            if symbol is not None:
                entry = entries.get(symbol)
                return entry.ids.count if entry else 0
            return sum(entry.ids.count for entry in entries.values())

    def counts(self, exchange: str) -> dict[str, int]:
        with self._lock:
            return {symbol: entry.ids.count for symbol, entry in self._entries.get(exchange, {}).items()}

    def frames(self, exchange: str, symbol: str | None = None) -> int:
        """Trade frames sent over all connections (a trade fanned out to two connections counts twice)."""
        with self._lock:
            entries = self._entries.get(exchange, {})
            if symbol is not None:
                entry = entries.get(symbol)
                return entry.frames if entry else 0
            return sum(entry.frames for entry in entries.values())

    def ranges(self, exchange: str, symbol: str) -> list[tuple[int, int]]:
        with self._lock:
            entry = self._entries.get(exchange, {}).get(symbol)
            return entry.ids.ranges() if entry else []

    def connection_counts(self, connection_id: int) -> dict[str, dict[str, int]]:
        """Trade frames sent on one connection: {exchange: {native symbol: frames}}."""
        with self._lock:
            return {ex: dict(symbols) for ex, symbols in self._per_connection.get(connection_id, {}).items()}

    def exchanges(self) -> list[str]:
        with self._lock:
            return sorted(self._entries)

    def snapshot(self, exchange: str | None = None, include_ids: bool = True) -> dict[str, Any]:
        """The JSON document served at ``GET /_replay/ledger``."""
        with self._lock:
            names = [exchange] if exchange is not None else sorted(self._entries)
            result: dict[str, Any] = {}
            for name in names:
                symbols: dict[str, Any] = {}
                for symbol, entry in sorted(self._entries.get(name, {}).items()):
                    doc: dict[str, Any] = {
                        "count": entry.ids.count,
                        "frames": entry.frames,
                        "first_id": entry.ids.starts[0],
                        "last_id": entry.ids.ends[-1],
                        "ranges": [list(r) for r in entry.ids.ranges()],
                    }
                    if include_ids:
                        doc["ids"] = entry.ids.ids()
                    symbols[symbol] = doc
                result[name] = symbols
            return result

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()
            self._per_connection.clear()
