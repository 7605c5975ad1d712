"""The synthetic book on its own: trades at the touch, never crossed, deep, deterministic; checksums."""

from __future__ import annotations

import json
import random
from decimal import Decimal

from trading_platform.replay.book import SyntheticBook, kraken_checksum
from trading_platform.replay.market import MIN_LEVELS, SymbolMarket, SymbolSpec, Trade

START_MS = 1_700_000_000_000

# The Kraken v2 book snapshot of the protocols doc (section 3), verbatim.
KRAKEN_DOC_SNAPSHOT = (
    '{"channel":"book","type":"snapshot","data":[{"symbol":"BTC/USD",'
    '"bids":[{"price":45283.5,"qty":0.10000000},{"price":45283.4,"qty":1.54582015},'
    '{"price":45282.1,"qty":0.10000000},{"price":45281.0,"qty":0.10000000},'
    '{"price":45280.3,"qty":1.54592586},{"price":45279.0,"qty":0.07990000},'
    '{"price":45277.6,"qty":0.03310103},{"price":45277.5,"qty":0.30000000},'
    '{"price":45277.3,"qty":1.54602737},{"price":45276.6,"qty":0.15445238}],'
    '"asks":[{"price":45285.2,"qty":0.00100000},{"price":45286.4,"qty":1.54571953},'
    '{"price":45286.6,"qty":1.54571109},{"price":45289.6,"qty":1.54560911},'
    '{"price":45290.2,"qty":0.15890660},{"price":45291.8,"qty":1.54553491},'
    '{"price":45294.7,"qty":0.04454749},{"price":45296.1,"qty":0.35380000},'
    '{"price":45297.5,"qty":0.09945542},{"price":45299.5,"qty":0.18772827}],'
    '"checksum":3310070434,"timestamp":"2023-10-06T17:35:55.440295Z"}]}'
)


def market(symbol: str = "BTC-USDT", rate: float = 500.0, seed: int = 3) -> SymbolMarket:
    return SymbolMarket(SymbolSpec.for_symbol(symbol), rate, seed, "binance", START_MS, book_rate_per_s=100.0)


def test_every_fill_prints_at_the_touch() -> None:
    for symbol in ("BTC-USDT", "DOGE-USDT", "SHIB-USDT"):
        m = market(symbol)
        fills: list[tuple[Trade, int, int]] = []
        m.fill_observer = lambda trade, bid, ask, fills=fills: fills.append((trade, bid, ask))  # type: ignore[misc]
        for i in range(1, 2001):
            m.advance(START_MS + i * 10)
        assert len(fills) > 5_000
        for trade, best_bid, best_ask in fills:
            assert best_bid < best_ask
            assert trade.price_ticks == (best_bid if trade.buyer_maker else best_ask)
            assert trade.qty_lots >= 1


def test_book_is_never_crossed_and_keeps_fifty_levels_per_side() -> None:
    m = market("ETH-BTC")
    book = m.book
    for i in range(1, 3001):
        m.advance(START_MS + i * 10)
        assert not book.crossed()
        assert len(book.bids) >= MIN_LEVELS and len(book.asks) >= MIN_LEVELS
        assert book.bid_prices == sorted(book.bids) and book.ask_prices == sorted(book.asks)
        assert book.bid_prices[0] > 0


def test_trades_consume_the_levels_they_hit() -> None:
    m = market()
    book = m.book
    tracker = book.tracker()
    for i in range(1, 500):
        before_bids, before_asks = dict(book.bids), dict(book.asks)
        trades = m.advance(START_MS + i * 10)
        for trade in trades:
            changed = tracker.bids if trade.buyer_maker else tracker.asks
            assert trade.price_ticks in changed  # every fill changed its level
        if len(trades) == 1 and book.update_id == tracker.first_id:  # one event: one fill, nothing else
            before = before_bids if trades[0].buyer_maker else before_asks
            after = book.bids if trades[0].buyer_maker else book.asks
            if trades[0].price_ticks in before:
                assert before[trades[0].price_ticks] - after.get(trades[0].price_ticks, 0) == trades[0].qty_lots
        tracker.clear()


def test_same_seed_gives_the_same_book_whatever_the_tick_pattern() -> None:
    fine, coarse = market(seed=9), market(seed=9)
    for i in range(1, 2001):
        fine.advance(START_MS + i * 5)
    for i in range(1, 101):
        coarse.advance(START_MS + i * 100)
    assert fine.book.update_id == coarse.book.update_id
    assert fine.book.bids == coarse.book.bids and fine.book.asks == coarse.book.asks
    assert fine.next_trade_id == coarse.next_trade_id


def test_texts_keep_trailing_zeros() -> None:
    spec = SymbolSpec.for_symbol("BTC-USD")
    assert (spec.price_decimals, spec.qty_decimals) == (2, 7)
    assert spec.price_text(9_000_000_000) == "90000000.00"
    assert spec.qty_text(1_000_000) == "0.1000000"
    assert spec.qty_text(1) == "0.0000001"
    assert spec.qty_text(0) == "0.0000000"


def test_kraken_checksum_of_the_documented_snapshot() -> None:
    data = json.loads(KRAKEN_DOC_SNAPSHOT, parse_float=Decimal)["data"][0]
    asks = [(str(level["price"]), str(level["qty"])) for level in data["asks"]]
    bids = [(str(level["price"]), str(level["qty"])) for level in data["bids"]]
    assert kraken_checksum(asks, bids) == data["checksum"] == 3310070434


def test_integer_checksum_equals_the_text_checksum() -> None:
    spec = SymbolSpec.for_symbol("ETH-USD")
    rng = random.Random(1)
    book = SyntheticBook()
    for _ in range(200):
        price = rng.randrange(290_000, 310_000)
        book.set_level(price < 300_000, price, rng.choice([0, 1, 10, 1234, 10**7, rng.randrange(1, 10**9)]))
    asks = [(spec.price_text(p), spec.qty_text(book.asks[p])) for p in book.top_asks(10)]
    bids = [(spec.price_text(p), spec.qty_text(book.bids[p])) for p in book.top_bids(10)]
    assert book.checksum() == kraken_checksum(asks, bids)
