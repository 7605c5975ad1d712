"""Trade ids step by one per symbol: a gap (reconnect, restart, kill -9) is filled from REST."""

from __future__ import annotations

import json

import pytest

from trading_platform.config import ExchangesFile
from trading_platform.exchanges.binance import Binance
from trading_platform.exchanges.decoded import FetchSnapshot, RecordKind
from trading_platform_tests.support import replay_endpoints


def trade(trade_id: int, price: str = "100.5", symbol: str = "BTCUSDT") -> bytes:
    return json.dumps({"stream": f"{symbol.lower()}@trade", "data": {
        "e": "trade", "E": 1700000000000 + trade_id, "s": symbol, "t": trade_id, "p": price, "q": "0.25",
        "T": 1700000000000 + trade_id, "m": False, "M": True}}).encode()


def history(*ids: int) -> bytes:
    return json.dumps([{"id": i, "price": "100.5", "qty": "0.25", "quoteQty": "25.1", "time": 1700000000000 + i,
                        "isBuyerMaker": True, "isBestMatch": True} for i in ids]).encode()


def ranges(action: FetchSnapshot) -> str:
    """The id range a backfill request asks for (its purpose also carries times and a cursor)."""
    return " ".join(action.purpose.split(" ")[:3])


@pytest.fixture
def binance(exchanges_config: ExchangesFile) -> Binance:
    exchange = Binance(exchanges_config.exchanges["binance"])
    exchange.use_endpoints(replay_endpoints(exchange.config, "127.0.0.1", 9555))  # REST on loopback, never live
    return exchange


def test_contiguous_ids_ask_for_nothing(binance: Binance) -> None:
    assert binance.decode([trade(1), trade(2)], [0, 0]).actions == []
    assert binance.decode([trade(3)], [0]).actions == []


def test_a_gap_between_batches_is_recorded_and_requested(binance: Binance) -> None:
    binance.decode([trade(1), trade(2), trade(3)], [0, 0, 0])
    decoded = binance.decode([trade(7), trade(8)], [5, 5])
    assert [(a.symbol, a.url, ranges(a)) for a in decoded.actions if isinstance(a, FetchSnapshot)] == [
        ("BTC-USDT", "http://127.0.0.1:9555/binance/api/v3/historicalTrades?symbol=BTCUSDT&fromId=4&limit=3",
         "trades 4 6")]
    assert decoded.book_events is not None and decoded.book_events.kinds == ["trade_gap"]
    assert decoded.trades.num_rows == 2


def test_a_gap_inside_a_batch_is_found_too(binance: Binance) -> None:
    decoded = binance.decode([trade(10), trade(11), trade(14)], [0, 0, 0])
    assert [ranges(a) for a in decoded.actions if isinstance(a, FetchSnapshot)] == ["trades 12 13"]


def test_the_rest_answer_adds_exactly_the_missing_trades(binance: Binance) -> None:
    binance.decode([trade(1)], [0])
    binance.decode([trade(5)], [0])
    answer = b"BTC-USDT trades 2 4\n" + history(1, 2, 3, 4, 5)  # the page may overlap what we have
    decoded = binance.decode([answer], [9], [RecordKind.REST])
    rows = decoded.trades.to_pylist()
    assert [r["trade_id"] for r in rows] == ["2", "3", "4"]
    assert all(r["side"] == "sell" and r["price"] == 100.5 for r in rows)
    assert binance.counters["trades_backfilled"] == 3


def test_a_short_page_asks_for_the_rest(binance: Binance) -> None:
    binance.decode([trade(1)], [0])
    binance.decode([trade(2002)], [0])
    page = b"BTC-USDT trades 2 2001\n" + history(*range(2, 1002))
    decoded = binance.decode([page], [9], [RecordKind.REST])
    assert decoded.trades.num_rows == 1000
    assert [ranges(a) for a in decoded.actions if isinstance(a, FetchSnapshot)] == ["trades 1002 2001"]


def test_the_last_trade_id_survives_a_restart(binance: Binance, exchanges_config: ExchangesFile) -> None:
    binance.decode([trade(41), trade(42)], [0, 0])
    restarted = Binance(exchanges_config.exchanges["binance"])
    restarted.import_state(binance.export_state())
    decoded = restarted.decode([trade(45)], [0])
    assert [ranges(a) for a in decoded.actions if isinstance(a, FetchSnapshot)] == ["trades 43 44"]


def test_an_unanswered_gap_is_asked_again_by_the_next_run(binance: Binance, exchanges_config: ExchangesFile) -> None:
    binance.decode([trade(1)], [0])
    binance.decode([trade(5)], [0])  # asks for 2..4, the run ends before REST answers
    restarted = Binance(exchanges_config.exchanges["binance"])
    restarted.import_state(binance.export_state())
    assert [ranges(a) for a in restarted.outstanding_actions() if isinstance(a, FetchSnapshot)] == ["trades 2 4"]
    restarted.decode([b"BTC-USDT trades 2 4\n" + history(2, 3, 4)], [1], [RecordKind.REST])
    assert restarted.export_state()["open_gaps"] == {}
