"""Every trade a symbol's market executed, whether or not any client was connected: the exchange's memory.

It is what the exchanges' REST trade-history endpoints serve (Binance ``historicalTrades``, Kraken
``Trades``, Coinbase ``ticker``) and the ground truth a test compares the platform's tables with: a client
that missed trades while disconnected must fail that comparison, which a ledger of what was *delivered*
cannot show.

Columnar and compact (four machine integers per trade, no object per trade), because a replay server runs
for hours under ``make run``: at most ``limit`` trades per symbol are kept, the oldest dropped first.
Trade ids are consecutive per symbol, so the row of an id is ``id - first_id``; times never decrease, so a
time range is a binary search.
"""

from __future__ import annotations

import bisect
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # market.py owns a TradeHistory per symbol
    from trading_platform.replay.market import SymbolSpec, Trade

DEFAULT_HISTORY_TRADES = 100_000  # per symbol: hours at the default rates, ~3 MB


@dataclass(frozen=True)
class HistoryRow:
    trade_id: int
    price_ticks: int
    qty_lots: int
    time_ms: int
    buyer_maker: bool


class TradeHistory:
    """One symbol's executed trades, oldest first, at most ``limit`` of them."""

    def __init__(self, spec: SymbolSpec, limit: int = DEFAULT_HISTORY_TRADES) -> None:
        if limit < 1:
            raise ValueError(f"history limit must be >= 1, got {limit}")
        self.spec = spec
        self.limit = limit
        self._first_id = 0  # id of row 0
        self._price = array("q")
        self._qty = array("q")
        self._time = array("q")
        self._buyer_maker = array("b")

    def __len__(self) -> int:
        return len(self._time)

    @property
    def first_id(self) -> int | None:
        return self._first_id if self._time else None

    @property
    def last_id(self) -> int | None:
        return self._first_id + len(self._time) - 1 if self._time else None

    def extend(self, trades: list[Trade]) -> None:
        """Append trades with consecutive ids (one market tick's, oldest first)."""
        if not trades:
            return
        if not self._time:
            self._first_id = trades[0].trade_id
        elif trades[0].trade_id != self._first_id + len(self._time):
            raise ValueError(f"{self.spec.symbol}: trade id {trades[0].trade_id} does not follow {self.last_id}")
        # One transpose per tick, each column appended at once: array.fromlist converts twice as fast as
        # array.extend (item by item through the sequence protocol). Not strict: every Trade has its seven
        # fields, and the check costs as much again as the transpose.
        _, _, _, times, buyer_maker, prices, qtys = zip(*trades, strict=False)
        self._price.fromlist(list(prices))
        self._qty.fromlist(list(qtys))
        self._time.fromlist(list(times))
        self._buyer_maker.fromlist(list(buyer_maker))
        # Whenever the rows reach 2 * limit the oldest are dropped down to limit (amortized O(1) per trade,
        # no shift per append): the rows kept are those of appending one trade at a time.
        kept = len(self._time)
        while kept >= 2 * self.limit:
            kept -= self.limit
        cut = len(self._time) - kept
        if cut:
            for column in (self._price, self._qty, self._time, self._buyer_maker):
                del column[:cut]
            self._first_id += cut

    def row(self, index: int) -> HistoryRow:
        return HistoryRow(self._first_id + index, self._price[index], self._qty[index], self._time[index],
                          bool(self._buyer_maker[index]))

    def rows(self, start: int, stop: int) -> list[HistoryRow]:
        start, stop = max(0, start), min(len(self._time), stop)
        return [self.row(i) for i in range(start, stop)]

    def window_start(self, servable: int | None) -> int:
        """First row a REST endpoint may serve when it keeps only the newest ``servable`` trades."""
        kept = len(self._time)
        return 0 if servable is None else max(0, kept - max(0, servable))

    def index_of_id(self, trade_id: int) -> int:
        """Row of ``trade_id`` (clamped to [0, len])."""
        return min(max(trade_id - self._first_id, 0), len(self._time))

    def index_at_time(self, time_ms: float) -> int:
        """First row whose time is >= ``time_ms``."""
        return bisect.bisect_left(self._time, time_ms)

    def price(self, row: HistoryRow) -> float:
        return float(row.price_ticks / 10**self.spec.price_decimals)

    def qty(self, row: HistoryRow) -> float:
        return float(row.qty_lots / 10**self.spec.qty_decimals)
