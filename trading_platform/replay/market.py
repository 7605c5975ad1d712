"""Synthetic market: per-symbol price walk, bursty trade arrivals and plausible trade sizes.

Exchange-agnostic: it produces numeric trades for normalized symbols (``BTC-USDT``); each exchange
module turns them into its own wire format. One :class:`MarketSimulator` per exchange, advanced by the
server's tick loop, so the work per tick is a handful of random draws per symbol, not a task per trade.

Determinism: with a seed, each symbol's sequence of trade ids, prices, sizes and sides is reproducible
(content draws use their own RNG per symbol); how many trades fall in each tick follows the wall clock.
"""

from __future__ import annotations

import math
import random
import secrets
import zlib
from dataclasses import dataclass
from typing import NamedTuple

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
# like a real order walking several book levels (Binance prints each fill as its own trade).
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

# Price: log-mid follows a slowly mean-reverting walk per order (≈1 %/h at the default rate); the cap
# keeps any one step far below the 5 % per-trade jump the quality checks treat as a spike.
SIGMA_PER_ORDER = 1e-4
REVERSION_PER_ORDER = 2e-6
MAX_LOG_STEP = 0.005
HALF_SPREAD_REL = 5e-5
MAX_SWEEP_REL = 0.004

# Trade size: notional in USD is log-normal (median ~$120, heavy right tail), capped.
NOTIONAL_MEDIAN_USD = 120.0
NOTIONAL_SIGMA = 1.7
NOTIONAL_CAP_USD = 2_000_000.0


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
    """One synthetic trade. ``buyer_maker`` True means the aggressor sold (Binance ``m``)."""

    trade_id: int
    price: float
    qty: float
    time_ms: int
    buyer_maker: bool


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0.0:
        return 0
    if lam < 30.0:
        # Knuth: exact and cheap for the small per-tick means of normal operation.
        limit = math.exp(-lam)
        count, product = 0, rng.random()
        while product > limit:
            count += 1
            product *= rng.random()
        return count
    # Benchmark rates: the normal approximation is indistinguishable here and O(1).
    return max(0, round(rng.gauss(lam, math.sqrt(lam))))


class SymbolMarket:
    """Price walk, arrival process and trade-id counter of one symbol."""

    def __init__(self, spec: SymbolSpec, rate_per_s: float, seed: int, exchange: str, start_ms: int) -> None:
        self.spec = spec
        # Separate RNGs: arrival timing depends on the wall clock, trade content must not.
        self._content = random.Random(f"{seed}/{exchange}/{spec.symbol}/content")
        self._arrivals = random.Random(f"{seed}/{exchange}/{spec.symbol}/arrivals")
        self.next_trade_id = self._content.randrange(100_000_000, 4_000_000_000)
        self._log_anchor = math.log(spec.start_price)
        self._log_mid = self._log_anchor
        self._calm_order_rate = rate_per_s / MEAN_FILLS / _MEAN_MULTIPLIER
        # Start in the stationary regime distribution, so the first seconds are not biased to calm.
        self._bursting = self._arrivals.random() < _BURST_SHARE
        self._last_ms = start_ms
        self.last_price = spec.start_price

    @property
    def mid(self) -> float:
        return math.exp(self._log_mid)

    def _order_count(self, dt_s: float) -> int:
        rng = self._arrivals
        mean_stay = BURST_MEAN_S if self._bursting else CALM_MEAN_S
        if rng.random() < -math.expm1(-dt_s / mean_stay):
            self._bursting = not self._bursting
        rate = self._calm_order_rate * (BURST_MULTIPLIER if self._bursting else 1.0)
        return _poisson(rng, rate * dt_s)

    def advance(self, now_ms: int) -> list[Trade]:
        """Trades that happened in (last call, now_ms], oldest first, with consecutive ids."""
        dt_ms = now_ms - self._last_ms
        if dt_ms <= 0:
            return []
        start_ms = self._last_ms
        self._last_ms = now_ms
        orders = self._order_count(dt_ms / 1000.0)
        if not orders:
            return []
        times = sorted(start_ms + 1 + int(self._arrivals.random() * dt_ms) for _ in range(orders))
        trades: list[Trade] = []
        for time_ms in times:
            self._fill_order(time_ms, trades)
        return trades

    def _fill_order(self, time_ms: int, out: list[Trade]) -> None:
        spec, rng = self.spec, self._content
        step = SIGMA_PER_ORDER * rng.gauss(0.0, 1.0) - REVERSION_PER_ORDER * (self._log_mid - self._log_anchor)
        self._log_mid += max(-MAX_LOG_STEP, min(MAX_LOG_STEP, step))
        mid = math.exp(self._log_mid)
        aggressor_buys = rng.random() < 0.5
        fills = 1
        while fills < MAX_FILLS and rng.random() < SWEEP_CONTINUE:
            fills += 1
        tick = spec.tick
        half_spread = max(tick, mid * HALF_SPREAD_REL)
        direction = 1.0 if aggressor_buys else -1.0
        max_offset = max(half_spread, mid * MAX_SWEEP_REL)
        for level in range(fills):
            # A buy lifts asks above mid, a sell hits bids below; deeper fills walk further out, but
            # never so far that consecutive prints of a coarse-tick pair look like a spike.
            price = max(tick, mid + direction * min(half_spread + level * tick, max_offset))
            notional_usd = min(NOTIONAL_CAP_USD, NOTIONAL_MEDIAN_USD * math.exp(NOTIONAL_SIGMA * rng.gauss(0, 1)))
            qty = max(spec.lot, round(notional_usd / spec.quote_usd / price, spec.qty_decimals))
            out.append(Trade(self.next_trade_id, price, qty, time_ms, not aggressor_buys))
            self.next_trade_id += 1
            self.last_price = price


class MarketSimulator:
    """All symbols of one exchange; :meth:`advance` is called once per server tick."""

    def __init__(self, exchange: str, symbols: list[str], rate_per_symbol: float, seed: int, start_ms: int) -> None:
        if rate_per_symbol < 0:
            raise ValueError(f"rate_per_symbol must be >= 0, got {rate_per_symbol}")
        self.exchange = exchange
        self.markets: dict[str, SymbolMarket] = {
            symbol: SymbolMarket(SymbolSpec.for_symbol(symbol), rate_per_symbol, seed, exchange, start_ms)
            for symbol in symbols
        }

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
