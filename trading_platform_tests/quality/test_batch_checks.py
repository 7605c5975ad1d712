"""The lake's per-batch checks: each rule passes good rows and fails the bad case with what a person needs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from trading_platform.quality.batch_checks import (
    ERROR,
    WARN,
    batch_checks,
    quarantine_share_check,
    row_check,
    schema_check,
)
from trading_platform.schema import BOOK_LEVELS, MARKET_TRADES, ORDERBOOK_SNAPSHOTS, QUARANTINE

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def trades(n: int = 3, **columns: list) -> pa.Table:
    rows = {"exchange": ["binance"] * n, "symbol": ["BTC-USDT"] * n, "native_symbol": ["BTCUSDT"] * n,
            "trade_id": [str(i) for i in range(n)], "price": [100.0 + i for i in range(n)],
            "quantity": [0.5] * n, "side": ["buy", "sell"] * (n // 2) + ["buy"] * (n % 2),
            "timestamp": [NOW] * n, "received_at": [NOW + timedelta(milliseconds=20)] * n}
    rows.update(columns)
    schema = pa.schema([f for f in MARKET_TRADES.arrow_schema if f.name != "batch_id"])
    return pa.Table.from_pydict(rows, schema=schema)


def books(bids: list[list[tuple[float, float]]], asks: list[list[tuple[float, float]]]) -> pa.Table:
    n = len(bids)
    levels = [[{"price": p, "quantity": q} for p, q in side] for side in (bids + asks)]
    schema = pa.schema([f for f in ORDERBOOK_SNAPSHOTS.arrow_schema if f.name != "batch_id"])
    return pa.Table.from_pydict({
        "exchange": ["kraken"] * n, "symbol": [f"S{i}-USD" for i in range(n)], "native_symbol": ["x"] * n,
        "timestamp": [NOW] * n, "received_at": [NOW] * n, "sequence": list(range(n)),
        "bids": pa.array(levels[:n], BOOK_LEVELS), "asks": pa.array(levels[n:], BOOK_LEVELS),
    }, schema=schema)


def test_good_trades_pass_every_rule() -> None:
    outcome = row_check(MARKET_TRADES, trades())
    assert outcome.passed and outcome.severity == ERROR
    assert outcome.metadata["rows_checked"] == 3 and outcome.metadata["failed_by_rule"] == {}


@pytest.mark.parametrize(("columns", "rule"), [
    ({"price": [100.0, -1.0, 102.0]}, "positive_price"),
    ({"price": [100.0, float("nan"), 102.0]}, "positive_price"),
    ({"quantity": [0.5, 0.0, 0.5]}, "positive_quantity"),
    ({"side": ["buy", "UNKNOWN_ORDER_SIDE", "sell"]}, "known_side"),
    ({"trade_id": ["1", "", "3"]}, "identified"),
    ({"timestamp": [NOW, NOW + timedelta(minutes=5), NOW]}, "not_from_the_future"),
])
def test_a_bad_trade_fails_naming_the_rule_the_pair_and_the_row(columns: dict, rule: str) -> None:
    outcome = row_check(MARKET_TRADES, trades(**columns))
    assert not outcome.passed and outcome.severity == ERROR
    assert outcome.metadata["failed_by_rule"] == {rule: 1}
    assert outcome.metadata["by_exchange_symbol"] == {"binance:BTC-USDT": 1}
    (example,) = outcome.metadata["examples"]
    assert example["trade_id"] == trades(**columns).column("trade_id")[1].as_py()
    assert rule in outcome.description


def test_the_same_trade_twice_in_a_batch_is_a_duplicate() -> None:
    outcome = row_check(MARKET_TRADES, trades(trade_id=["7", "7", "8"]))
    assert outcome.metadata["failed_by_rule"] == {"unique_trade_id": 2}


def test_sorted_uncrossed_books_pass() -> None:
    outcome = row_check(ORDERBOOK_SNAPSHOTS, books([[(10.0, 1.0), (9.0, 2.0)]], [[(11.0, 1.0), (12.0, 1.0)]]))
    assert outcome.passed


@pytest.mark.parametrize(("bids", "asks", "rule"), [
    ([(10.0, 1.0)], [(9.5, 1.0)], "uncrossed"),
    ([(9.0, 1.0), (10.0, 1.0)], [(11.0, 1.0)], "bids_descending"),
    ([(10.0, 1.0)], [(12.0, 1.0), (11.0, 1.0)], "asks_ascending"),
    ([(10.0, 0.0)], [(11.0, 1.0)], "bids_descending"),
])
def test_a_broken_book_fails_naming_the_rule(bids: list, asks: list, rule: str) -> None:
    outcome = row_check(ORDERBOOK_SNAPSHOTS, books([[(10.0, 1.0)], bids], [[(11.0, 1.0)], asks]))
    assert not outcome.passed and outcome.metadata["failed_by_rule"] == {rule: 1}
    assert outcome.metadata["by_exchange_symbol"] == {"kraken:S1-USD": 1}


def test_a_file_without_the_table_layout_fails_naming_the_column() -> None:
    good = MARKET_TRADES.arrow_schema
    renamed = pa.schema([f.with_name("qty") if f.name == "quantity" else f for f in good])
    retyped = pa.schema([f.with_type(pa.string()) if f.name == "price" else f for f in good])
    outcome = schema_check(MARKET_TRADES, {"a.parquet": good, "b.parquet": renamed, "c.parquet": retyped})
    assert not outcome.passed and outcome.severity == ERROR
    assert outcome.metadata["bad_files"] == 2 and outcome.metadata["files_checked"] == 3
    assert "missing column quantity" in outcome.metadata["problems"]["b.parquet"]
    assert "price is string, expected double" in outcome.metadata["problems"]["c.parquet"]
    assert schema_check(MARKET_TRADES, {"a.parquet": good}).passed


def test_a_batch_mostly_quarantined_warns_with_the_threshold() -> None:
    assert quarantine_share_check(accepted_rows=99, quarantined_rows=1).passed
    outcome = quarantine_share_check(accepted_rows=10, quarantined_rows=5)
    assert not outcome.passed and outcome.severity == WARN
    assert outcome.metadata == {"quarantined_rows": 5, "accepted_rows": 10, "share": pytest.approx(1 / 3),
                                "threshold": 0.05}


def test_a_batch_reports_checks_for_each_dataset_empty_ones_too() -> None:
    rejects = pa.Table.from_pydict(
        {"exchange": ["binance"], "received_at": [NOW], "reason": ["malformed"], "detail": ["x"], "raw": ["{"]},
        schema=pa.schema([f for f in QUARANTINE.arrow_schema if f.name != "batch_id"]))
    empty_books = pa.schema([f for f in ORDERBOOK_SNAPSHOTS.arrow_schema if f.name != "batch_id"]).empty_table()
    outcomes = batch_checks({MARKET_TRADES: trades(), QUARANTINE: rejects, ORDERBOOK_SNAPSHOTS: empty_books},
                            {MARKET_TRADES: {"t.parquet": MARKET_TRADES.arrow_schema},
                             QUARANTINE: {"q.parquet": QUARANTINE.arrow_schema}})
    assert {d: [o.check for o in c] for d, c in outcomes.items()} == {
        "trades": ["lake_schema", "valid_rows", "quarantine_share"], "quarantine": ["lake_schema", "valid_rows"],
        "orderbook": ["lake_schema", "valid_rows"]}
    assert outcomes["orderbook"][1].passed and outcomes["orderbook"][1].metadata["rows_checked"] == 0
    share = outcomes["trades"][2]
    assert not share.passed and share.metadata["quarantined_rows"] == 1  # 1 of 4 rows: above 5%
