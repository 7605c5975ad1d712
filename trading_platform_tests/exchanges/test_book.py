"""The order book on its own: the sorted top it keeps against a plain dict sorted on every read, and the
snapshot rows it emits."""

from __future__ import annotations

import random

import pytest

from trading_platform.exchanges.book import BookChange, BookSnapshots, OrderBook, parse_levels
from trading_platform.ingestion.normalize import _merge


def oracle_top(levels: dict[float, float], best_first_descending: bool, n: int) -> list[tuple[float, float]]:
    return [(price, levels[price]) for price in sorted(levels, reverse=best_first_descending)[:n]]


def test_random_changes_keep_the_top_of_each_side_in_price_order() -> None:
    rng = random.Random(7)
    book = OrderBook()
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    for step in range(3_000):
        side, levels = ("bid", bids) if rng.random() < 0.5 else ("ask", asks)
        changes = []
        for _ in range(rng.randint(1, 6)):
            price = f"{rng.randint(1, 60) / 4:.2f}" if side == "bid" else f"{15 + rng.randint(1, 60) / 4:.2f}"
            quantity = "0" if rng.random() < 0.4 else f"{rng.randint(1, 999)}.5"
            changes.append((price, quantity))
            if float(quantity):
                levels[float(price)] = float(quantity)
            else:
                levels.pop(float(price), None)
        levels = parse_levels(changes)
        book.apply(levels if side == "bid" else [], levels if side == "ask" else [])
        if step % 500 == 0:
            book.truncate(12)
            for kept, descending in ((bids, True), (asks, False)):
                for price in sorted(kept, reverse=descending)[12:]:
                    del kept[price]
        assert book.top("bid", 10) == oracle_top(bids, True, 10)
        assert book.top("ask", 10) == oracle_top(asks, False, 10)
    assert len(book.bids) == len(bids) and len(book.asks) == len(asks)


def test_changes_of_both_sides_in_one_list_apply_in_order_to_the_side_each_names() -> None:
    rng = random.Random(11)
    book = OrderBook()
    held: dict[str, dict[float, float]] = {"bid": {}, "offer": {}}
    for _ in range(3_000):
        changes = []
        for _ in range(rng.randint(1, 6)):
            side = rng.choice(["bid", "offer"])
            # Few prices, so a list often changes one price twice: the later change wins.
            price = rng.randint(1, 30) / 4 + (0 if side == "bid" else 10)
            quantity = 0.0 if rng.random() < 0.4 else rng.randint(1, 999) + 0.5
            changes.append(BookChange(side, price, quantity))
            if quantity:
                held[side][price] = quantity
            else:
                held[side].pop(price, None)
        book.apply_changes(changes, "bid")
        assert book.top("bid", 10) == oracle_top(held["bid"], True, 10)
        assert book.top("ask", 10) == oracle_top(held["offer"], False, 10)
    assert len(book.bids) == len(held["bid"]) and len(book.asks) == len(held["offer"])


def test_crossed_compares_the_best_bid_with_the_best_ask() -> None:
    book = OrderBook()
    book.apply(parse_levels([("99", "1"), ("100", "1")]), [])
    book.apply([], parse_levels([("101", "1"), ("100.5", "1")]))
    assert not book.crossed()
    book.apply(parse_levels([("100.5", "2")]), [])
    assert book.crossed()


def test_cleared_book_takes_a_snapshot_in_any_order() -> None:
    book = OrderBook()
    book.apply([], parse_levels([("3", "1"), ("1", "1")]))
    book.clear()
    book.apply([], parse_levels([("5", "1"), ("2", "1"), ("4", "0"), ("9", "1")]))
    assert book.best_prices("ask", 5) == [2.0, 5.0, 9.0] and book.sequence == 0


@pytest.mark.parametrize("pair", [("nan", "1"), ("1", "inf"), ("-inf", "1"), ("1", "NaN")])
def test_a_level_that_is_not_a_finite_number_is_refused(pair: tuple[str, str]) -> None:
    with pytest.raises(ValueError, match="finite"):
        parse_levels([("1", "2"), pair])


def test_a_text_that_is_no_number_is_reported_before_an_earlier_non_finite_level() -> None:
    with pytest.raises(ValueError, match="could not convert string to float: 'abc'"):
        parse_levels([("nan", "1"), ("1", "2"), ("abc", "1")])


def test_the_first_non_finite_level_is_the_one_reported() -> None:
    with pytest.raises(ValueError, match=r"level '1' 'inf' is not a finite number"):
        parse_levels([("2", "1"), ("1", "inf"), ("nan", "1")])


def test_snapshot_rows_become_price_level_lists_best_first() -> None:
    book = OrderBook()
    book.apply(parse_levels([("99", "2"), ("100", "1"), ("98", "3")]), [])
    book.apply([], parse_levels([("101", "4")]))
    snapshots = BookSnapshots("test")
    snapshots.add("A-B", "AB", book, 2, 1, 2)
    book.apply([], parse_levels([("101", "0")]))
    snapshots.add("A-B", "AB", book, 2, 3, 4)
    table = snapshots.to_arrow()
    best_two = [{"price": 100.0, "quantity": 1.0}, {"price": 99.0, "quantity": 2.0}]
    assert table.column("bids").to_pylist() == [best_two, best_two]
    assert table.column("asks").to_pylist() == [[{"price": 101.0, "quantity": 4.0}], []]
    assert snapshots.bids == [[(100.0, 1.0), (99.0, 2.0)]] * 2 and snapshots.asks == [[(101.0, 4.0)], []]


def test_snapshot_rows_merged_field_by_field_keep_each_rows_levels() -> None:
    # The normalizer's frame-by-frame fallback joins the collectors of single frames by extending every list.
    book = OrderBook()
    book.apply(parse_levels([("2", "1"), ("1", "1")]), parse_levels([("3", "5")]))
    first, second = BookSnapshots("test"), BookSnapshots("test")
    first.add("A-B", "AB", book, 20, 1, 1)
    book.apply(parse_levels([("2", "0")]), [])
    second.add("A-B", "AB", book, 20, 2, 2)
    merged = _merge(first, second)
    assert merged is not None
    assert merged.bids == [[(2.0, 1.0), (1.0, 1.0)], [(1.0, 1.0)]] and merged.asks == [[(3.0, 5.0)], [(3.0, 5.0)]]
