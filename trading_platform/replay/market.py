"""Synthetic market: per-symbol L2 order book, bursty taker orders filled at the touch, price walk.

Exchange-agnostic: it produces numeric trades and an integer book (:mod:`replay.book`) for normalized
symbols (``BTC-USDT``); each exchange module turns them into its own wire format. One
:class:`MarketSimulator` per exchange, advanced by the server's tick loop.

The model, per symbol:
- A fair value follows a slowly mean-reverting log random walk (one step per taker order).
- The book has levels on a grid of ``step`` ticks (about 0.005 % of the price), 50 to 80 per side.
  Bids are always strictly below the fair value and asks strictly above it, so the book is never
  crossed. When the fair value moves, makers cancel the levels it passed and quote the nearest grid
  slot if the touch drifted too far away.
- Taker orders arrive as a two-state (calm/burst) Markov-modulated Poisson process. An order fills
  1 + Geometric fills at the touch: a buy takes the best ask, a sell the best bid; each fill prints a
  trade at that level's price for at most the level's quantity and reduces (or removes) the level, so
  a sweep walks the book.
- Maker events (``book_rate_per_s``, Poisson) add, resize or cancel a level, mostly near the touch.
Each taker order and each maker event is one book update (one Binance update id).

Determinism: the whole process is event-driven in continuous time, with its own RNGs per symbol
(timing and content), so with a seed the sequence of trades, book updates and update ids is the same
whatever the tick pattern; only how many of them fall in each tick follows the wall clock.
"""

from __future__ import annotations

import math
import random
import secrets
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from math import cos as _cos
from math import exp as _exp
from math import log as _log
from math import sin as _sin
from math import sqrt as _sqrt
from typing import NamedTuple

from trading_platform.replay.book import SyntheticBook
from trading_platform.replay.history import DEFAULT_HISTORY_TRADES, TradeHistory

# Rough USD prices per base asset (late 2025) so the synthetic tape looks like the real one.
REFERENCE_USD: dict[str, float] = {
    "BTC": 90_000.0,
    "ETH": 3_000.0,
    "BNB": 600.0,
    "SOL": 150.0,
    "XRP": 2.2,
    "ADA": 0.7,
    "DOGE": 0.2,
    "AVAX": 35.0,
    "DOT": 7.0,
    "LINK": 20.0,
    "LTC": 100.0,
    "TRX": 0.25,
    "BCH": 450.0,
    "ATOM": 7.0,
    "NEAR": 5.0,
    "UNI": 10.0,
    "ETC": 25.0,
    "FIL": 5.0,
    "APT": 9.0,
    "ARB": 0.8,
    "XLM": 0.3,
    "AAVE": 250.0,
    "POL": 0.5,
    "MATIC": 0.5,
    "TON": 5.0,
    "SHIB": 0.00002,
    "PEPE": 0.00001,
    "OP": 1.8,
    "SUI": 3.5,
    "XBT": 90_000.0,
    # Quote currencies: stablecoins and fiat near their usual value.
    "USDT": 1.0,
    "USD": 1.0,
    "USDC": 1.0,
    "FDUSD": 1.0,
    "BUSD": 1.0,
    "DAI": 1.0,
    "TUSD": 1.0,
    "EUR": 1.08,
    "GBP": 1.27,
}

# Order flow: a taker order fills 1 + Geometric(SWEEP_CONTINUE) trades at the same time and side,
# like a real order meeting several resting orders (Binance prints each fill as its own trade).
SWEEP_CONTINUE = 0.3
MAX_FILLS = 10
MEAN_FILLS = 1.0 / (1.0 - SWEEP_CONTINUE)  # ignoring the MAX_FILLS cap, which changes it by < 1e-5

# Bursts: a two-state Markov-modulated Poisson process (calm / burst). The calm rate is scaled so the
# long-run average equals the configured rate exactly; short regimes make a ~10 s window (a benchmark)
# already see close to that average.
CALM_MEAN_S = 5.0
BURST_MEAN_S = 0.5
BURST_MULTIPLIER = 6.0
_BURST_SHARE = BURST_MEAN_S / (BURST_MEAN_S + CALM_MEAN_S)
_MEAN_MULTIPLIER = (1.0 - _BURST_SHARE) + _BURST_SHARE * BURST_MULTIPLIER

# Price: log fair value follows a slowly mean-reverting walk per order (≈1 %/h at the default rate);
# the cap keeps any one step far below the 5 % per-trade jump the quality checks treat as a spike.
SIGMA_PER_ORDER = 1e-4
REVERSION_PER_ORDER = 2e-6
MAX_LOG_STEP = 0.005

# Trade size: notional in USD is log-normal (median ~$120, heavy right tail), capped; a fill takes at
# most what the touch level holds.
NOTIONAL_MEDIAN_USD = 120.0
NOTIONAL_SIGMA = 1.7
NOTIONAL_CAP_USD = 2_000_000.0

# Book: grid spacing relative to the price (the walk moves about two slots per order), levels per side,
# resting size per level, and the maker process (events/s, distance from the fair value in slots).
LEVEL_STEP_REL = 5e-5
MIN_LEVELS = 50
MAX_LEVELS = 80
INITIAL_LEVELS = 64
LEVEL_MEDIAN_USD = 1_500.0
LEVEL_SIGMA = 1.0
MAX_TOUCH_GAP_SLOTS = 2  # a touch further than this from the fair value gets a new quote at the nearest slot
DEFAULT_BOOK_RATE = 20.0
MAKER_MEAN_DISTANCE = 6.0
MAKER_CANCEL_SHARE = 0.3
# Newest trades per symbol a stopped market hands to its restart: its REST history keeps serving them.
RESUME_TRADES = 1_000
RECENT_TRADES = 50  # kept per symbol for the trade snapshots Coinbase and Kraken send on subscribe
_TWO_PI = math.tau  # random.TWOPI
_new_trade = tuple.__new__


def reference_usd(asset: str) -> float:
    """A plausible USD price; unknown assets get a deterministic value in [0.1, 100) from their name."""
    known = REFERENCE_USD.get(asset)
    if known is not None:
        return known
    fraction = (zlib.crc32(asset.encode()) % 10_000) / 10_000
    return 10 ** (-1.0 + 3.0 * fraction)


@dataclass(frozen=True)
class SymbolSpec:
    """Static facts about one normalized symbol: start price and the fixed decimals of its strings."""

    symbol: str
    base: str
    quote: str
    start_price: float
    price_decimals: int
    qty_decimals: int
    quote_usd: float

    @property
    def tick(self) -> float:
        return 10.0**-self.price_decimals

    @property
    def lot(self) -> float:
        return 10.0**-self.qty_decimals

    def price_text(self, ticks: int) -> str:
        """Exact decimal text of a price in ticks, with all ``price_decimals`` (trailing zeros kept)."""
        return _decimal_text(ticks, self.price_decimals)

    def qty_text(self, lots: int) -> str:
        return _decimal_text(lots, self.qty_decimals)

    @classmethod
    def for_symbol(cls, symbol: str) -> SymbolSpec:
        base, quote = symbol.split("-", 1)
        quote_usd = reference_usd(quote)
        price = reference_usd(base) / quote_usd
        magnitude = math.floor(math.log10(price))
        # About six significant digits, at least two decimals (BTC 2, ETH 2, SOL 3, DOGE 6).
        price_decimals = min(8, max(2, 5 - magnitude))
        # Expensive coins trade in smaller lots; 5..8 decimals.
        qty_decimals = min(8, max(5, 9 - price_decimals))
        return cls(symbol, base, quote, price, price_decimals, qty_decimals, quote_usd)


class Trade(NamedTuple):
    """One synthetic trade. ``buyer_maker`` True means the aggressor sold (Binance ``m``).

    ``price_ticks`` / ``qty_lots`` are the exact integer values; ``price`` / ``qty`` the nearest floats.
    """

    trade_id: int
    price: float
    qty: float
    time_ms: int
    buyer_maker: bool
    price_ticks: int = 0
    qty_lots: int = 0


def _decimal_text(units: int, decimals: int) -> str:
    if decimals == 0:
        return str(units)
    digits = str(units).rjust(decimals + 1, "0")
    return f"{digits[:-decimals]}.{digits[-decimals:]}"


class SymbolMarket:
    """Fair-value walk, book, taker and maker processes and the trade-id counter of one symbol."""

    def __init__(
        self,
        spec: SymbolSpec,
        rate_per_s: float,
        seed: int,
        exchange: str,
        start_ms: int,
        book_rate_per_s: float = DEFAULT_BOOK_RATE,
        history_trades: int = DEFAULT_HISTORY_TRADES,
        resume: list[list[int]] | None = None,
    ) -> None:
        """``resume``: the newest trades of a stopped market (see :meth:`tail`) to continue from."""
        if rate_per_s < 0 or book_rate_per_s < 0:
            raise ValueError(f"rates must be >= 0, got {rate_per_s} and {book_rate_per_s}")
        self.spec = spec
        # Separate RNGs: timing and content; both consumed in event order only, never per tick.
        content = random.Random(f"{seed}/{exchange}/{spec.symbol}/content")
        self._uniform = content.random
        self._gauss_next: float | None = None  # the second normal of the last Box-Muller pair (_gauss)
        self._arrival_uniform = random.Random(f"{seed}/{exchange}/{spec.symbol}/arrivals").random
        self.next_trade_id = content.randrange(100_000_000, 4_000_000_000)
        self._price_scale = int(10**spec.price_decimals)
        self._qty_scale = int(10**spec.qty_decimals)
        self._log_anchor = math.log(spec.start_price)
        self._log_mid = self._log_anchor
        self.step = max(1, round(spec.start_price * LEVEL_STEP_REL * self._price_scale))  # grid, in ticks
        # lots = notional_usd * _lots_per_usd / price_ticks
        self._lots_per_usd = self._price_scale * self._qty_scale / spec.quote_usd
        self.book = SyntheticBook(content.randrange(1_000_000_000, 9_000_000_000))
        self.recent: deque[Trade] = deque(maxlen=RECENT_TRADES)
        # Every trade executed, watched or not: the REST history and the tests' ground truth.
        self.history = TradeHistory(spec, history_trades)
        # Called with (trade, best bid, best ask) as each fill happens, before it changes the book:
        # lets tests check that trades print at the touch. None in normal operation.
        self.fill_observer: Callable[[Trade, int, int], None] | None = None
        self._seed_book()
        self.last_price = self.book.best_ask() / self._price_scale
        if resume:
            self._restore(resume)
        elif rate_per_s > 0:
            self._seed_history(start_ms, 1000.0 / rate_per_s)

        self._calm_order_rate = rate_per_s / MEAN_FILLS / _MEAN_MULTIPLIER / 1000.0  # per ms
        self._maker_rate = book_rate_per_s / 1000.0
        # Start in the stationary regime distribution, so the first seconds are not biased to calm.
        self._bursting = self._arrival_uniform() < _BURST_SHARE
        self._last_ms = start_ms
        self._next_switch = start_ms + self._expo(1.0 / ((BURST_MEAN_S if self._bursting else CALM_MEAN_S) * 1000))
        self._next_order = start_ms + self._expo(self._order_rate())
        self._next_maker = start_ms + self._expo(self._maker_rate)

    @property
    def mid(self) -> float:
        return math.exp(self._log_mid)

    # -- randomness ----------------------------------------------------------------------------------
    # ``random.Random.gauss`` and ``expovariate`` are Python-level functions; the hot path uses these
    # inlined forms instead, which draw the same uniforms in the same order and return the same floats
    # (gauss: Box-Muller, the second value of each pair kept for the next call), so a seed's trades and
    # books are those of the library calls.

    def _gauss(self) -> float:
        z = self._gauss_next
        if z is not None:
            self._gauss_next = None
            return z
        uniform = self._uniform
        x2pi = uniform() * _TWO_PI
        g2rad = _sqrt(-2.0 * _log(1.0 - uniform()))
        self._gauss_next = _sin(x2pi) * g2rad
        return _cos(x2pi) * g2rad

    def _expo(self, rate_per_ms: float) -> float:
        return -_log(1.0 - self._arrival_uniform()) / rate_per_ms if rate_per_ms > 0 else math.inf

    # -- time ----------------------------------------------------------------------------------------

    def _order_rate(self) -> float:
        return self._calm_order_rate * (BURST_MULTIPLIER if self._bursting else 1.0)

    def advance(self, now_ms: int) -> list[Trade]:
        """Process every event in (last call, now_ms]; returns the trades, oldest first, consecutive ids."""
        if now_ms <= self._last_ms:
            return []
        self._last_ms = now_ms
        trades: list[Trade] = []
        taker_order = self._taker_order
        order_at, maker_at, switch_at = self._next_order, self._next_maker, self._next_switch
        order_rate = self._order_rate()
        while True:
            if switch_at <= order_at and switch_at <= maker_at:
                if switch_at > now_ms:
                    break
                # Memoryless: after a regime switch the next order is redrawn at the new rate.
                self._bursting = not self._bursting
                stay_ms = (BURST_MEAN_S if self._bursting else CALM_MEAN_S) * 1000
                switched_at = switch_at
                switch_at = switched_at + self._expo(1.0 / stay_ms)
                order_rate = self._order_rate()
                order_at = switched_at + self._expo(order_rate)
            elif order_at <= maker_at:
                if order_at > now_ms:
                    break
                taker_order(int(order_at), trades)
                order_at += self._expo(order_rate)
            else:
                if maker_at > now_ms:
                    break
                self._maker_event()
                maker_at += self._expo(self._maker_rate)
        self._next_order, self._next_maker, self._next_switch = order_at, maker_at, switch_at
        self._record(trades)
        return trades

    def _record(self, trades: list[Trade]) -> None:
        """Keep executed trades (history, snapshots, the last price) once per tick rather than per fill."""
        if trades:
            self.recent.extend(trades)
            self.history.extend(trades)
            self.last_price = trades[-1].price

    def shift(self, ms: int) -> None:
        """Move the clock ``ms`` later without events (the market was paused that long)."""
        self._last_ms += ms
        self._next_switch += ms
        self._next_order += ms
        self._next_maker += ms

    # -- book ----------------------------------------------------------------------------------------

    def _fair_ticks(self) -> float:
        return math.exp(self._log_mid) * self._price_scale

    def _first_slots(self, fair: float) -> tuple[int, int]:
        """Grid prices of the best possible bid (< fair) and ask (> fair)."""
        step = self.step
        ask = (math.floor(fair / step) + 1) * step
        bid = ask - step if ask - step < fair else ask - 2 * step
        return bid, ask

    def _level_lots(self, price: int) -> int:
        notional = LEVEL_MEDIAN_USD * math.exp(LEVEL_SIGMA * self._gauss())
        return max(1, round(notional * self._lots_per_usd / price))

    def _seed_book(self) -> None:
        book = self.book
        first_bid, first_ask = self._first_slots(self._fair_ticks())
        for is_bid, first in ((True, first_bid), (False, first_ask)):
            direction = -1 if is_bid else 1
            slot = 0
            while len(book.bids if is_bid else book.asks) < INITIAL_LEVELS:
                price = first + direction * slot * self.step
                if price <= 0:
                    break
                if slot == 0 or self._uniform() < 0.85:
                    book.set_level(is_bid, price, self._level_lots(price))
                slot += 1

    def tail(self, count: int) -> list[list[int]]:
        """The newest ``count`` executed trades as [id, price ticks, qty lots, time ms, buyer maker]."""
        last = len(self.history)
        return [[r.trade_id, r.price_ticks, r.qty_lots, r.time_ms, int(r.buyer_maker)]
                for r in self.history.rows(max(0, last - count), last)]

    def _restore(self, rows: list[list[int]]) -> None:
        """Continue a stopped market: its newest trades are history again (a platform that stopped before
        the market did backfills them from REST, as from an exchange) and the ids go on after them."""
        trades = [Trade(trade_id, price_ticks / self._price_scale, qty_lots / self._qty_scale, time_ms,
                        bool(buyer_maker), price_ticks, qty_lots)
                  for trade_id, price_ticks, qty_lots, time_ms, buyer_maker in rows]
        self.history.extend(trades)
        self.recent.extend(trades)
        self.next_trade_id = rows[-1][0] + 1

    def _seed_history(self, start_ms: int, interval_ms: float) -> None:
        """Trade before ``start_ms`` until the last RECENT_TRADES exist, so snapshots are never empty."""
        at = start_ms - (RECENT_TRADES + 1) * interval_ms
        trades: list[Trade] = []
        while len(trades) < RECENT_TRADES:
            self._taker_order(int(at), trades)
            at += interval_ms * MEAN_FILLS
        self._record(trades)

    def _keep_depth(self) -> None:
        """50..80 levels per side: refill the vacant slot nearest the fair value, trim the far end.

        Refilling near the touch (not behind the worst level) keeps the ladder dense where takers
        trade, so a sweep never jumps across a void to far-away levels.
        """
        book, step = self.book, self.step
        bids, asks = book.bids, book.asks
        if len(bids) < MIN_LEVELS or len(asks) < MIN_LEVELS:
            first_bid, first_ask = self._first_slots(self._fair_ticks())
            price = first_bid
            while len(bids) < MIN_LEVELS and price > 0:
                if price not in bids:
                    book.set_level(True, price, self._level_lots(price))
                price -= step
            price = first_ask
            while len(asks) < MIN_LEVELS:
                if price not in asks:
                    book.set_level(False, price, self._level_lots(price))
                price += step
        bid_prices, ask_prices = book.bid_prices, book.ask_prices
        while len(bid_prices) > MAX_LEVELS:
            book.set_level(True, bid_prices[0], 0)
        while len(ask_prices) > MAX_LEVELS:
            book.set_level(False, ask_prices[-1], 0)

    def _maker_event(self) -> None:
        book = self.book
        book.begin_update()
        is_bid = self._uniform() < 0.5
        # expovariate(1 / MAKER_MEAN_DISTANCE) of the content RNG, inlined like _gauss.
        distance = min(MAX_LEVELS, int(-_log(1.0 - self._uniform()) / (1.0 / MAKER_MEAN_DISTANCE)))
        first_bid, first_ask = self._first_slots(self._fair_ticks())
        price = first_bid - distance * self.step if is_bid else first_ask + distance * self.step
        levels = book.bids if is_bid else book.asks
        current = levels.get(price)
        if price <= 0:
            return
        if current is None:
            book.set_level(is_bid, price, self._level_lots(price))
        elif self._uniform() < MAKER_CANCEL_SHARE and len(levels) > 1:
            book.set_level(is_bid, price, 0)
        else:
            book.set_level(is_bid, price, max(1, round(current * math.exp(0.6 * self._gauss()))))
        self._keep_depth()

    # -- trades --------------------------------------------------------------------------------------

    def _taker_order(self, time_ms: int, out: list[Trade]) -> None:
        """One taker order: the walk steps, makers requote, then 1 + Geometric fills at the touch.

        The hot loop of the server, once per order of every symbol: the requote, the normals of the
        fills and a fill's bookkeeping at the touch (the end of the sorted price list) are inlined.
        """
        book, uniform, step = self.book, self._uniform, self.step
        book.begin_update()
        walk = SIGMA_PER_ORDER * self._gauss() - REVERSION_PER_ORDER * (self._log_mid - self._log_anchor)
        # max(-cap, min(cap, walk)) as comparisons
        self._log_mid += MAX_LOG_STEP if walk > MAX_LOG_STEP else -MAX_LOG_STEP if walk < -MAX_LOG_STEP else walk
        # Requote: makers cancel what the fair value passed, quote near it if the touch is far.
        fair = _exp(self._log_mid) * self._price_scale
        # Both change the touch only, at the end of the sorted price lists: book.set_level's work, done here.
        bids, asks, bid_prices, ask_prices = book.bids, book.asks, book.bid_prices, book.ask_prices
        changed_bids, changed_asks = book.changed_bids, book.changed_asks
        while bid_prices and bid_prices[-1] >= fair:
            price = bid_prices.pop()
            del bids[price]
            for tracked in changed_bids:
                tracked.add(price)
        while ask_prices and ask_prices[0] <= fair:
            price = ask_prices.pop(0)
            del asks[price]
            for tracked in changed_asks:
                tracked.add(price)
        first_ask = (math.floor(fair / step) + 1) * step  # _first_slots
        first_bid = first_ask - step if first_ask - step < fair else first_ask - 2 * step
        if first_bid > 0 and (not bid_prices or first_bid - bid_prices[-1] > MAX_TOUCH_GAP_SLOTS * step):
            bids[first_bid] = self._level_lots(first_bid)  # above every bid: the new best
            bid_prices.append(first_bid)
            for tracked in changed_bids:
                tracked.add(first_bid)
        if not ask_prices or ask_prices[0] - first_ask > MAX_TOUCH_GAP_SLOTS * step:
            asks[first_ask] = self._level_lots(first_ask)  # below every ask: the new best
            ask_prices.insert(0, first_ask)
            for tracked in changed_asks:
                tracked.add(first_ask)
        if not MIN_LEVELS <= len(bid_prices) <= MAX_LEVELS or not MIN_LEVELS <= len(ask_prices) <= MAX_LEVELS:
            self._keep_depth()
        # The order: side, then 1 + Geometric fills.
        aggressor_buys = uniform() < 0.5
        fills = 1
        while fills < MAX_FILLS and uniform() < SWEEP_CONTINUE:
            fills += 1
        if aggressor_buys:
            levels, prices, touch, changed = asks, ask_prices, 0, changed_asks
        else:
            levels, prices, touch, changed = bids, bid_prices, -1, changed_bids
        price_scale, qty_scale, lots_per_usd = self._price_scale, self._qty_scale, self._lots_per_usd
        observer, trade_id, buyer_maker = self.fill_observer, self.next_trade_id, not aggressor_buys
        for _ in range(fills):
            # At the touch: a buy lifts the best ask, a sell hits the best bid.
            price = prices[touch]
            resting = levels[price]
            z = self._gauss()
            # min(cap, notional) and min(resting, max(1, lots)) as comparisons: builtin calls cost more here.
            notional = NOTIONAL_MEDIAN_USD * _exp(NOTIONAL_SIGMA * z)
            if notional > NOTIONAL_CAP_USD:
                notional = NOTIONAL_CAP_USD
            lots = round(notional * lots_per_usd / price)
            if lots < 1:
                lots = 1
            if lots > resting:
                lots = resting
            # tuple.__new__ directly: a NamedTuple's own __new__ is a Python-level function.
            trade = _new_trade(Trade, (trade_id, price / price_scale, lots / qty_scale, time_ms, buyer_maker, price,
                                       lots))
            if observer is not None:
                observer(trade, bid_prices[-1], ask_prices[0])
            if lots < resting:
                levels[price] = resting - lots
            else:
                del levels[price]
                del prices[touch]
            for tracked in changed:
                tracked.add(price)
            out.append(trade)
            trade_id += 1
            if len(levels) <= 1:
                break  # never empty a side (unreachable with 50+ levels and at most 10 fills)
        self.next_trade_id = trade_id
        if not MIN_LEVELS <= len(bids) <= MAX_LEVELS or not MIN_LEVELS <= len(asks) <= MAX_LEVELS:
            self._keep_depth()


class MarketSimulator:
    """All symbols of one exchange; :meth:`advance` is called once per server tick."""

    def __init__(
        self,
        exchange: str,
        symbols: list[str],
        rate_per_symbol: float,
        seed: int,
        start_ms: int,
        book_rate_per_symbol: float = DEFAULT_BOOK_RATE,
        history_trades: int = DEFAULT_HISTORY_TRADES,
        resume: dict[str, list[list[int]]] | None = None,
    ) -> None:
        if rate_per_symbol < 0:
            raise ValueError(f"rate_per_symbol must be >= 0, got {rate_per_symbol}")
        self.exchange = exchange
        resumed = resume or {}
        self.markets: dict[str, SymbolMarket] = {
            symbol: SymbolMarket(
                SymbolSpec.for_symbol(symbol), rate_per_symbol, seed, exchange, start_ms, book_rate_per_symbol,
                history_trades, resumed.get(symbol),
            )
            for symbol in symbols
        }

    def resume_point(self, trades: int = RESUME_TRADES) -> dict[str, list[list[int]]]:
        """Each symbol's newest trades: what a restarted simulator continues from (``resume``)."""
        return {symbol: market.tail(trades) for symbol, market in self.markets.items()}

    def shift(self, ms: int) -> None:
        for market in self.markets.values():
            market.shift(ms)

    def advance(self, now_ms: int) -> list[tuple[SymbolSpec, list[Trade]]]:
        batches: list[tuple[SymbolSpec, list[Trade]]] = []
        for market in self.markets.values():
            trades = market.advance(now_ms)
            if trades:
                batches.append((market.spec, trades))
        return batches


def new_seed() -> int:
    """A fresh random seed, reported by the server so an unseeded run can be reproduced."""
    return secrets.randbits(63)
