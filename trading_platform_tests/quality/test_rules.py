from __future__ import annotations

import pyarrow as pa

from trading_platform.exchanges.decoded import DECODED_TRADE_SCHEMA
from trading_platform.quality.rules import SpikeReference, validate_trades

SYMBOL_CODES = {"BTC-USDT": 0, "DOGE-USDT": 1}  # positions in the exchange's symbol list, as a decoder sets them


def trades(prices: list[float], quantities: list[float] | None = None, symbol: str = "BTC-USDT") -> pa.Table:
    n = len(prices)
    return pa.table({
        "exchange": ["binance"] * n, "symbol": [symbol] * n, "native_symbol": [symbol.replace("-", "")] * n,
        "trade_id": [str(i) for i in range(n)], "price": prices, "quantity": quantities or [1.0] * n,
        "side": ["buy"] * n, "timestamp": pa.array([0] * n, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "received_at": pa.array([0] * n, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "frame_index": list(range(n)), "symbol_code": [SYMBOL_CODES[symbol]] * n,
    }, schema=DECODED_TRADE_SCHEMA)


def test_non_positive_and_non_finite_numbers_are_rejected() -> None:
    result = validate_trades(trades([100.0, 0.0, -1.0, float("nan"), 100.0], [1, 1, 1, 1, 0]), SpikeReference(), 0.2)
    assert result.rejected.get_column("reason").to_list() == ["bad_price", "bad_price", "bad_price", "bad_quantity"]
    assert result.accepted.column("frame_index").to_pylist() == [0]


def test_a_single_spike_is_rejected_but_the_trade_after_it_is_not() -> None:
    result = validate_trades(trades([100.0, 100.5, 101.0, 150.0, 100.8]), SpikeReference(), 0.2)
    assert result.rejected.get_column("frame_index").to_list() == [3]
    assert result.rejected.get_column("reason").to_list() == ["price_spike"]
    assert "reference=" in result.rejected.get_column("detail")[0]


def test_the_spike_reference_carries_across_batches() -> None:
    reference = SpikeReference()
    validate_trades(trades([100.0, 100.2, 100.1]), reference, 0.2)
    result = validate_trades(trades([130.0]), reference, 0.2)
    assert result.rejected.get_column("reason").to_list() == ["price_spike"]


def test_batch_and_tick_by_tick_validation_agree() -> None:
    prices = [100.0, 101.0, 140.0, 100.5, 99.0, 60.0, 98.0, 97.5]
    whole = validate_trades(trades(prices), SpikeReference(), 0.2).rejected.get_column("frame_index").to_list()
    reference = SpikeReference()
    split: list[int] = []
    for start in range(0, len(prices), 3):
        table = trades(prices)[start:start + 3]
        split += validate_trades(table, reference, 0.2).rejected.get_column("frame_index").to_list()
    assert whole == split == [2, 5]


def test_symbols_are_judged_separately() -> None:
    table = pa.concat_tables([trades([100.0, 100.0]), trades([0.5, 0.5], symbol="DOGE-USDT")])
    assert validate_trades(table, SpikeReference(), 0.2).rejected.is_empty()


def test_an_even_window_references_the_midpoint_of_its_two_middle_prices() -> None:
    result = validate_trades(trades([100.0, 110.0, 200.0]), SpikeReference(), 0.2)
    assert result.rejected.get_column("detail").to_list() == ["BTC-USDT price=200.0 quantity=1.0 reference=105.0"]


def test_rows_of_several_chunks_are_validated_as_one_table() -> None:
    table = pa.concat_tables([trades([100.0, 100.5]), trades([101.0, 150.0])])
    result = validate_trades(table, SpikeReference(), 0.2)
    assert result.rejected.get_column("frame_index").to_list() == [1]  # the 150.0, second chunk's row 1
    assert result.accepted.num_rows == 3
