"""The synthetic L2 book of one symbol, in integers: prices in ticks, quantities in lots.

Integers make every wire format exact: ``ticks`` printed with the symbol's price decimals is the
price text, and ``str(ticks)`` / ``str(lots)`` are exactly Kraken's checksum fragments (the text with
'.' removed and leading zeros stripped). Each side keeps a dict (price → qty) and a sorted price list,
so the touch and the top N are slices; a side holds well under a hundred levels.

Consumers (an exchange's diff stream, a snapshot cadence) register a :class:`ChangeTracker`: every
level change adds its price to every tracker, and every book event (one taker order, one maker
action) takes the next ``update_id``, which a tracker remembers as the first id of its window.
"""

from __future__ import annotations

import bisect
import zlib


class ChangeTracker:
    """Prices changed, per side, since the consumer last cleared it; ``first_id`` 0 means no event."""

    __slots__ = ("asks", "bids", "first_id")

    def __init__(self) -> None:
        self.bids: set[int] = set()
        self.asks: set[int] = set()
        self.first_id = 0

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self.first_id = 0


class SyntheticBook:
    def __init__(self, update_id: int = 0) -> None:
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.bid_prices: list[int] = []  # ascending: the best bid is the last
        self.ask_prices: list[int] = []  # ascending: the best ask is the first
        self.update_id = update_id
        self._trackers: list[ChangeTracker] = []
        # Every tracker's set of changed prices, per side: what a level change adds its price to.
        self.changed_bids: list[set[int]] = []
        self.changed_asks: list[set[int]] = []

    # -- consumers -----------------------------------------------------------------------------------

    def tracker(self) -> ChangeTracker:
        tracker = ChangeTracker()
        self._trackers.append(tracker)
        self.changed_bids.append(tracker.bids)
        self.changed_asks.append(tracker.asks)
        return tracker

    def begin_update(self) -> int:
        """Start one book event: it takes the next update id (Binance ``u``)."""
        self.update_id += 1
        for tracker in self._trackers:
            if not tracker.first_id:
                tracker.first_id = self.update_id
        return self.update_id

    # -- levels --------------------------------------------------------------------------------------

    def set_level(self, is_bid: bool, price: int, qty: int) -> None:
        """Absolute quantity at ``price``; 0 removes the level."""
        levels, prices = (self.bids, self.bid_prices) if is_bid else (self.asks, self.ask_prices)
        if qty > 0:
            if price not in levels:
                bisect.insort(prices, price)
            levels[price] = qty
        elif price in levels:
            del levels[price]
            del prices[bisect.bisect_left(prices, price)]
        else:
            return
        for changed in self.changed_bids if is_bid else self.changed_asks:
            changed.add(price)

    def best_bid(self) -> int:
        return self.bid_prices[-1]

    def best_ask(self) -> int:
        return self.ask_prices[0]

    def top_bids(self, n: int) -> list[int]:
        """Best ``n`` bid prices, best (highest) first."""
        return self.bid_prices[: -n - 1 : -1] if n < len(self.bid_prices) else self.bid_prices[::-1]

    def top_asks(self, n: int) -> list[int]:
        """Best ``n`` ask prices, best (lowest) first."""
        return self.ask_prices[:n]

    def crossed(self) -> bool:
        return bool(self.bid_prices and self.ask_prices and self.bid_prices[-1] >= self.ask_prices[0])

    def checksum(self) -> int:
        """Kraken v2 CRC32 over the top 10 asks (ascending) then bids (descending), see :func:`kraken_checksum`."""
        asks, bids = self.asks, self.bids
        text = "".join(f"{p}{asks[p]}" for p in self.ask_prices[:10])
        text += "".join(f"{p}{bids[p]}" for p in self.top_bids(10))
        return zlib.crc32(text.encode())


def checksum_fragment(text: str) -> str:
    """Kraken's checksum form of a price or quantity text: '.' removed, leading zeros stripped."""
    return text.replace(".", "").lstrip("0")


def kraken_checksum(asks: list[tuple[str, str]], bids: list[tuple[str, str]]) -> int:
    """The documented Kraken v2 book checksum from level texts (asks ascending, bids descending).

    Reference implementation over text, for tests and captures; the feed uses
    :meth:`SyntheticBook.checksum`, which is the same number computed from integers.
    """
    parts = [checksum_fragment(price) + checksum_fragment(qty) for price, qty in asks[:10]]
    parts += [checksum_fragment(price) + checksum_fragment(qty) for price, qty in bids[:10]]
    return zlib.crc32("".join(parts).encode())
