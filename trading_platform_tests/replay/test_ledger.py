"""The trade ledger's bookkeeping: distinct trades, frames, ranges, per-connection counts."""

from __future__ import annotations

from trading_platform.replay.ledger import TradeLedger


def test_consecutive_batches_form_one_range() -> None:
    ledger = TradeLedger()
    ledger.record("binance", "BTCUSDT", 100, 5, connection_id=1)
    ledger.record("binance", "BTCUSDT", 105, 3, connection_id=1)
    assert ledger.ranges("binance", "BTCUSDT") == [(100, 107)]
    assert ledger.count("binance") == 8


def test_same_trade_on_two_connections_is_one_trade_two_frames() -> None:
    ledger = TradeLedger()
    ledger.record("binance", "BTCUSDT", 100, 5, connection_id=1)
    ledger.record("binance", "BTCUSDT", 102, 5, connection_id=2)
    assert ledger.count("binance", "BTCUSDT") == 7
    assert ledger.frames("binance", "BTCUSDT") == 10
    assert ledger.connection_counts(2) == {"binance": {"BTCUSDT": 5}}


def test_late_batch_fills_a_gap_and_merges() -> None:
    ledger = TradeLedger()
    ledger.record("binance", "ETHUSDT", 10, 2, connection_id=1)  # 10-11
    ledger.record("binance", "ETHUSDT", 20, 2, connection_id=1)  # 20-21
    ledger.record("binance", "ETHUSDT", 15, 1, connection_id=2)  # 15, between
    assert ledger.ranges("binance", "ETHUSDT") == [(10, 11), (15, 15), (20, 21)]
    ledger.record("binance", "ETHUSDT", 11, 10, connection_id=3)  # 11-20 bridges everything
    assert ledger.ranges("binance", "ETHUSDT") == [(10, 21)]
    assert ledger.count("binance", "ETHUSDT") == 12


def test_trades_are_symbol_and_string_id_pairs() -> None:
    ledger = TradeLedger()
    ledger.record("binance", "BTCUSDT", 7, 2, connection_id=1)
    assert ledger.trades("binance") == {("BTCUSDT", "7"), ("BTCUSDT", "8")}


def test_snapshot_shape() -> None:
    ledger = TradeLedger()
    ledger.record("binance", "BTCUSDT", 7, 2, connection_id=1)
    assert ledger.snapshot("binance") == {
        "binance": {
            "BTCUSDT": {"count": 2, "frames": 2, "first_id": 7, "last_id": 8, "ranges": [[7, 8]], "ids": [7, 8]}
        }
    }
