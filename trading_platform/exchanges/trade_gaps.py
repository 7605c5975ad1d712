"""Every trade exactly once: trade-id continuity per symbol, the gaps it reveals, and their REST backfill.

Trade ids are consecutive per symbol on Binance (``t``), Kraken v2 (``trade_id``) and Coinbase
(``trade_id``), so whatever made us miss trades (a reconnect, a restart, ``kill -9``, a partition, a lost
frame) shows up as a jump. Each jump is recorded as data (a ``trade_gap`` book event), kept open across runs
(in the WAL checkpoint) and filled from the exchange's REST trade history, page by page. Rows are taken
only for ids still open, so a trade is never stored twice, whether it comes late on the socket, again in a
subscription snapshot or in an overlapping REST page. What the exchange can no longer serve becomes a
``trade_gap_unresolved`` event naming the range: never silent, and an ERROR asset check reads it.

The exchange modules supply only their protocol: the REST URL of one page (:meth:`Exchange.trade_history_url`)
and how to read it (:meth:`Exchange.parse_trade_history`). Everything else lives here, vectorized: a batch
costs one stable sort and a few numpy passes; Python touches only the rare gaps and late arrivals.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trading_platform.exchanges.book import BookEvents

TRADE_GAP = "trade_gap"  # ids missing: recorded when seen, then backfilled
TRADE_GAP_FILLED = "trade_gap_filled"  # a recorded gap is complete again
TRADE_GAP_UNRESOLVED = "trade_gap_unresolved"  # ids the exchange no longer serves: lost, and said so
_KEY_SHIFT = 40  # ids below 2**40 (1.1e12) share an int64 with a symbol code for a grouped running max


@dataclass(frozen=True)
class TradeGap:
    """Missing ids ``first..last`` of one symbol. ``after_us`` / ``before_us``: exchange times of the trades
    either side (0 when unknown), the time window a REST history query needs."""

    symbol: str
    first: int
    last: int
    after_us: int = 0
    before_us: int = 0

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def to_json(self) -> list[int]:
        return [self.first, self.last, self.after_us, self.before_us]

    @classmethod
    def from_json(cls, symbol: str, doc: list[Any]) -> TradeGap:
        first, last, *times = (int(v) for v in doc)  # older checkpoints stored [first, last] only
        return cls(symbol, first, last, *[*times, 0, 0][:2])


@dataclass(frozen=True)
class BackfillRequest:
    """One REST page asked for ``gap``; ``cursor`` is the exchange's paging position ("" for the first)."""

    gap: TradeGap
    cursor: str = ""

    @property
    def purpose(self) -> str:
        """Self-describing, so the answer (a REST record in the WAL) is decoded alike on recovery."""
        g = self.gap
        return f"trades {g.first} {g.last} {g.after_us} {g.before_us} {self.cursor or '-'}"

    @classmethod
    def parse(cls, symbol: str, purpose: str) -> BackfillRequest:
        parts = purpose.split(" ")
        numbers = [int(p) for p in parts[1:5]] + [0, 0]  # older records: "trades FIRST LAST"
        cursor = parts[5] if len(parts) > 5 and parts[5] != "-" else ""
        return cls(TradeGap(symbol, numbers[0], numbers[1], numbers[2] if len(parts) > 3 else 0,
                            numbers[3] if len(parts) > 4 else 0), cursor)


@dataclass
class TradePage:
    """One REST answer: trade rows (``DECODED_TRADE_SCHEMA``), their integer ids, and where the next page
    starts (None: the exchange has nothing more for this gap)."""

    rows: pa.Table
    ids: np.ndarray
    next_cursor: str | None


def is_backfill(purpose: str) -> bool:
    return purpose.startswith("trades ")


class TradeGaps:
    """Continuity state of one exchange's symbols: last id and time seen, and the open gaps."""

    def __init__(self, symbols: list[str], counters: Counter[str]) -> None:
        self.symbols = list(symbols)
        self.last_id: dict[str, int] = {}
        self.last_us: dict[str, int] = {}
        self.open: dict[str, list[TradeGap]] = {}
        self._bad_answers: Counter[tuple[str, int, int]] = Counter()
        # The exchange's counters: trade_gaps, trades_backfilled, duplicate_trades_dropped, late_trades,
        # trade_gaps_unresolved.
        self.counters = counters

    # --- state across runs ---------------------------------------------------------------------------------
    def export_state(self) -> dict[str, Any]:
        return {"last_trade_id": dict(self.last_id), "last_trade_us": dict(self.last_us),
                "open_gaps": {s: [g.to_json() for g in gaps] for s, gaps in self.open.items() if gaps}}

    def import_state(self, state: dict[str, Any]) -> None:
        """Replace (not merge) what this instance knows: marks it decoded past the checkpoint would make
        the re-decoded WAL tail look already stored."""
        self.last_id = {k: int(v) for k, v in state.get("last_trade_id", {}).items()}
        self.last_us = {k: int(v) for k, v in state.get("last_trade_us", {}).items()}
        self.open = {symbol: [TradeGap.from_json(symbol, g) for g in gaps]
                     for symbol, gaps in state.get("open_gaps", {}).items()}
        self._bad_answers.clear()

    def open_gaps(self) -> list[TradeGap]:
        return [gap for gaps in self.open.values() for gap in gaps]

    # --- live trades ---------------------------------------------------------------------------------------
    @staticmethod
    def follows(ids: np.ndarray) -> bool:
        """Whether ``check`` follows these ids: the small non-negative sequential ids it is for (an empty batch
        trivially). It leaves other ids alone, and ``last_id`` does not cover them."""
        return not ids.size or (int(ids.max()) < 1 << _KEY_SHIFT and int(ids.min()) >= 0)

    def check(self, table: pa.Table, ids: np.ndarray, received_us: int,
              events: BookEvents) -> tuple[pa.Table, list[TradeGap]]:
        """Drop trades already stored, keep late ones that fill an open gap, record and return new gaps.

        ``table`` rows (configured symbols only) come in receive order, ``ids`` are their integer trade ids.
        They are judged in id order per symbol, so a batch that lists trades newest first (a subscription
        snapshot) or slightly out of order is no gap; rows keep their receive order in the result.
        """
        if not table.num_rows:
            return table, []
        codes = table.column("symbol_code").to_numpy()  # positions in self.symbols, the exchange's order
        times = pc.cast(table.column("timestamp"), pa.int64()).to_numpy(zero_copy_only=False)
        ids = np.asarray(ids, dtype=np.int64)
        if not self.follows(ids):
            return table, []
        # By symbol, then id. Each symbol's ids nearly always arrive ascending, so a stable radix sort of the
        # symbol codes (8/16-bit) is usually the whole sort; lexsort only when some ids come out of order.
        order = np.argsort(codes.astype(np.min_scalar_type(len(self.symbols))), kind="stable")
        c, i = codes[order], ids[order]
        starts = np.empty(len(c), dtype=bool)
        starts[0] = True
        np.not_equal(c[1:], c[:-1], out=starts[1:])
        if np.any((i[1:] < i[:-1]) & ~starts[1:]):
            order = np.lexsort((ids, codes))
            c, i = codes[order], ids[order]
        t = times[order]
        base = np.array([self.last_id.get(s, -1) for s in self.symbols], dtype=np.int64)[c]
        keys = (c.astype(np.int64) << _KEY_SHIFT) + i
        running = np.maximum.accumulate(keys)
        previous = np.empty_like(running)
        previous[0] = -1
        previous[1:] = running[:-1] - (c[1:].astype(np.int64) << _KEY_SHIFT)
        previous[starts] = -1
        before = np.maximum(previous, base)  # highest id seen before each row
        jump = (before >= 0) & (i > before + 1)
        seen = i <= before
        keep = np.ones(len(i), dtype=bool)
        new_gaps: list[TradeGap] = []
        rare = np.flatnonzero(jump | seen)
        if rare.size:
            previous_time = np.concatenate([np.zeros(1, t.dtype), t[:-1]])
            for k in rare.tolist():
                symbol = self.symbols[c[k]]
                if jump[k]:
                    after = self.last_us.get(symbol, 0) if starts[k] else int(previous_time[k])
                    gap = TradeGap(symbol, int(before[k]) + 1, int(i[k]) - 1, after, int(t[k]))
                    self._record(gap, received_us, events)
                    new_gaps.append(gap)
                elif self._take(symbol, np.array([i[k]], dtype=np.int64)).size:
                    self.counters["late_trades"] += 1
                else:
                    keep[k] = False
                    self.counters["duplicate_trades_dropped"] += 1
        ends = np.append(np.flatnonzero(starts)[1:], len(c)) - 1
        for end in ends.tolist():
            symbol = self.symbols[c[end]]
            highest = int(running[end] - (int(c[end]) << _KEY_SHIFT))
            if highest > self.last_id.get(symbol, -1):
                self.last_id[symbol] = highest
                self.last_us[symbol] = int(t[end])
        if not keep.all():
            mask = np.empty_like(keep)
            mask[order] = keep
            table = table.filter(pa.array(mask))
        return table, new_gaps

    def _record(self, gap: TradeGap, received_us: int, events: BookEvents) -> None:
        events.add(gap.symbol, received_us, TRADE_GAP,
                   f"trade ids {gap.first}..{gap.last} not received ({gap.size}); backfilling from REST")
        self.counters["trade_gaps"] += 1
        self.open.setdefault(gap.symbol, []).append(gap)

    def _take(self, symbol: str, ids: np.ndarray) -> np.ndarray:
        """Remove ``ids`` from the symbol's open gaps; returns those that were open."""
        gaps = self.open.get(symbol)
        if not gaps or not ids.size:
            return ids[:0]
        taken = np.zeros(len(ids), dtype=bool)
        remaining: list[TradeGap] = []
        for gap in gaps:
            inside = (ids >= gap.first) & (ids <= gap.last) & ~taken
            if not inside.any():
                remaining.append(gap)
                continue
            taken |= inside
            present = np.unique(ids[inside])
            # What is left of the gap: the runs between the ids that arrived.
            edges = np.r_[gap.first - 1, present, gap.last + 1]
            for low, high in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
                if high - low > 1:
                    remaining.append(TradeGap(symbol, low + 1, high - 1, gap.after_us, gap.before_us))
        self.open[symbol] = remaining
        return ids[taken]

    # --- REST backfill -------------------------------------------------------------------------------------
    def take_page(self, request: BackfillRequest, page: TradePage) -> pa.Table:
        """The page's rows whose ids were still open (each at most once), removed from the open gaps."""
        if not page.rows.num_rows:
            return page.rows
        ids = np.asarray(page.ids, dtype=np.int64)
        _, first_position = np.unique(ids, return_index=True)
        unique = np.zeros(len(ids), dtype=bool)
        unique[first_position] = True  # an overlapping page may repeat an id
        open_before = self._open_mask(request.gap.symbol, ids) & unique
        self._take(request.gap.symbol, ids[open_before])
        self.counters["trades_backfilled"] += int(open_before.sum())
        return page.rows.filter(pa.array(open_before))

    def _open_mask(self, symbol: str, ids: np.ndarray) -> np.ndarray:
        mask = np.zeros(len(ids), dtype=bool)
        for gap in self.open.get(symbol, []):
            mask |= (ids >= gap.first) & (ids <= gap.last)
        return mask

    def still_open(self, gap: TradeGap) -> list[TradeGap]:
        """The parts of ``gap``'s range that are still missing."""
        return [TradeGap(g.symbol, max(g.first, gap.first), min(g.last, gap.last), g.after_us, g.before_us)
                for g in self.open.get(gap.symbol, []) if g.first <= gap.last and g.last >= gap.first]

    def bad_answer(self, gap: TradeGap) -> int:
        """Count an unreadable answer to a backfill of ``gap``; returns how many it has had."""
        self._bad_answers[(gap.symbol, gap.first, gap.last)] += 1
        return self._bad_answers[(gap.symbol, gap.first, gap.last)]

    def give_up(self, gap: TradeGap, why: str, received_us: int, events: BookEvents) -> None:
        """Record what is left of ``gap`` as lost (``trade_gap_unresolved``) and stop asking for it."""
        for part in self.still_open(gap):
            events.add(part.symbol, received_us, TRADE_GAP_UNRESOLVED,
                       f"trade ids {part.first}..{part.last} ({part.size} trades) lost: {why}")
            self.counters["trade_gaps_unresolved"] += 1
        keep = [g for g in self.open.get(gap.symbol, []) if g.last < gap.first or g.first > gap.last]
        # Parts outside the requested range (split off earlier) stay open.
        for g in self.open.get(gap.symbol, []):
            if g.first < gap.first <= g.last:
                keep.append(TradeGap(g.symbol, g.first, gap.first - 1, g.after_us, g.before_us))
            if g.first <= gap.last < g.last:
                keep.append(TradeGap(g.symbol, gap.last + 1, g.last, g.after_us, g.before_us))
        self.open[gap.symbol] = sorted(keep, key=lambda g: g.first)
