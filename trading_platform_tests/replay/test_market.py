"""The synthetic market on its own: plausible prices, strictly increasing ids, reproducible seeds."""

from __future__ import annotations

import itertools
import math

from trading_platform.replay.market import MarketSimulator, SymbolMarket, SymbolSpec, reference_usd

START_MS = 1_700_000_000_000


def run(market: SymbolMarket, ticks: int, step_ms: int = 10) -> list:
    trades = []
    for i in range(1, ticks + 1):
        trades.extend(market.advance(START_MS + i * step_ms))
    return trades


def test_decimals_follow_price_magnitude() -> None:
    assert SymbolSpec.for_symbol("BTC-USDT").price_decimals == 2
    assert SymbolSpec.for_symbol("DOGE-USDT").price_decimals == 6
    for symbol in ("BTC-USDT", "DOGE-USDT", "ETH-BTC"):
        assert 5 <= SymbolSpec.for_symbol(symbol).qty_decimals <= 8


def test_unknown_base_gets_a_deterministic_plausible_price() -> None:
    assert reference_usd("NEWCOIN") == reference_usd("NEWCOIN")
    assert 0.1 <= reference_usd("NEWCOIN") < 100


def test_prices_stay_positive_without_spikes_and_ids_increase_by_one() -> None:
    for symbol in ("BTC-USDT", "DOGE-USDT", "SHIB-USDT", "ETH-BTC"):
        market = SymbolMarket(SymbolSpec.for_symbol(symbol), 2_000.0, seed=3, exchange="binance", start_ms=START_MS)
        trades = run(market, 3_000)
        assert len(trades) > 10_000
        assert all(t.price > 0 and t.qty > 0 for t in trades)
        assert all(b.trade_id == a.trade_id + 1 for a, b in itertools.pairwise(trades))
        assert all(b.time_ms >= a.time_ms for a, b in itertools.pairwise(trades))
        worst = max(abs(math.log(b.price / a.price)) for a, b in itertools.pairwise(trades))
        assert worst < math.log(1.05)


def test_average_rate_matches_configuration() -> None:
    market = SymbolMarket(SymbolSpec.for_symbol("ETH-USDT"), 50.0, seed=11, exchange="binance", start_ms=START_MS)
    trades = run(market, 60_000)  # 600 simulated seconds
    assert 0.8 * 50 * 600 < len(trades) < 1.2 * 50 * 600


def test_same_seed_gives_same_trades_whatever_the_tick_pattern() -> None:
    fine = run(SymbolMarket(SymbolSpec.for_symbol("SOL-USDT"), 100.0, 5, "binance", START_MS), 2_000, 5)
    coarse = run(SymbolMarket(SymbolSpec.for_symbol("SOL-USDT"), 100.0, 5, "binance", START_MS), 200, 50)
    content = min(len(fine), len(coarse))
    assert content > 100
    key = [(t.trade_id, t.price, t.qty, t.buyer_maker) for t in fine[:content]]
    assert key == [(t.trade_id, t.price, t.qty, t.buyer_maker) for t in coarse[:content]]


def test_different_seeds_differ() -> None:
    a = MarketSimulator("binance", ["BTC-USDT"], 5.0, seed=1, start_ms=START_MS)
    b = MarketSimulator("binance", ["BTC-USDT"], 5.0, seed=2, start_ms=START_MS)
    assert a.markets["BTC-USDT"].next_trade_id != b.markets["BTC-USDT"].next_trade_id
