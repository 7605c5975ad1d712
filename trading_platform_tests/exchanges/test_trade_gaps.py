"""Trade-id continuity on every exchange: gaps are recorded, backfilled from the exchange's own REST history
(in its documented shape), deduplicated by id, carried across runs, and given up as data when unservable.

Each exchange is driven through its public decode() with its own wire format: a live trade frame and the
REST page its protocol answers (Binance ``historicalTrades``, Kraken ``Trades``, Coinbase ``ticker``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from trading_platform.config import ExchangesFile
from trading_platform.exchanges.base import Exchange
from trading_platform.exchanges.decoded import DecodedFrames, FetchSnapshot, RecordKind
from trading_platform.exchanges.registry import exchange_for

T0_MS = 1_700_000_000_000


def time_ms(trade_id: int) -> int:
    return T0_MS + trade_id * 10


def rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Protocol:
    """One exchange's wire format for a live trade of BTC and a REST history page."""

    name: str
    live: Callable[[int], bytes]
    page: Callable[[list[int]], bytes]  # ids in the order the exchange lists them
    page_size: int


def binance_live(i: int) -> bytes:
    return json.dumps({"stream": "btcusdt@trade", "data": {
        "e": "trade", "E": time_ms(i), "s": "BTCUSDT", "t": i, "p": "100.5", "q": "0.25", "T": time_ms(i),
        "m": i % 2 == 0, "M": True}}).encode()


def binance_page(ids: list[int]) -> bytes:
    return json.dumps([{"id": i, "price": "100.5", "qty": "0.25", "quoteQty": "25.125", "time": time_ms(i),
                        "isBuyerMaker": i % 2 == 0, "isBestMatch": True} for i in ids]).encode()


def kraken_live(i: int) -> bytes:
    return json.dumps({"channel": "trade", "type": "update", "data": [{
        "symbol": "BTC/USD", "side": "sell" if i % 2 == 0 else "buy", "price": 100.5, "qty": 0.25,
        "ord_type": "limit", "trade_id": i, "timestamp": rfc3339(time_ms(i))}]}).encode()


def kraken_page(ids: list[int]) -> bytes:
    # The documented shape: keyed by Kraken's own pair name, [price, volume, time, side, type, misc, id].
    rows = [["100.50000", "0.25000000", time_ms(i) / 1000, "s" if i % 2 == 0 else "b", "l", "", i] for i in ids]
    last = str(time_ms(ids[-1]) * 1_000_000) if ids else "0"
    return json.dumps({"error": [], "result": {"XXBTZUSD": rows, "last": last}}).encode()


_sequence = iter(range(1, 10**9))


def coinbase_live(i: int) -> bytes:
    # side is the maker's side (see exchanges/coinbase.py): the taker sold when the maker bought.
    return json.dumps({"channel": "market_trades", "client_id": "", "timestamp": rfc3339(time_ms(i)),
                       "sequence_num": next(_sequence), "events": [{"type": "update", "trades": [{
                           "trade_id": str(i), "product_id": "BTC-USD", "price": "100.5", "size": "0.25",
                           "side": "BUY" if i % 2 == 0 else "SELL", "time": rfc3339(time_ms(i))}]}]}).encode()


def coinbase_page(ids: list[int]) -> bytes:
    trades = [{"trade_id": str(i), "product_id": "BTC-USD", "price": "100.5", "size": "0.25",
               "time": rfc3339(time_ms(i)), "side": "BUY" if i % 2 == 0 else "SELL", "bid": "", "ask": "",
               "exchange": "coinbase"} for i in sorted(ids, reverse=True)]  # newest first
    return json.dumps({"trades": trades, "best_bid": "100.4", "best_ask": "100.6"}).encode()


PROTOCOLS = {
    "binance": Protocol("binance", binance_live, binance_page, 1000),
    "kraken": Protocol("kraken", kraken_live, kraken_page, 1000),
    "coinbase": Protocol("coinbase", coinbase_live, coinbase_page, 1000),
}
SYMBOL = {"binance": "BTC-USDT", "kraken": "BTC-USD", "coinbase": "BTC-USD"}


@pytest.fixture(params=sorted(PROTOCOLS))
def protocol(request: pytest.FixtureRequest) -> Protocol:
    return PROTOCOLS[request.param]


@pytest.fixture
def exchange(protocol: Protocol, exchanges_config: ExchangesFile) -> Exchange:
    config = exchanges_config.exchanges[protocol.name].model_copy()  # type: ignore[index]
    config.channels = ["trades"]  # type: ignore[assignment]
    return exchange_for(config)


def live(exchange: Exchange, protocol: Protocol, *ids: int) -> DecodedFrames:
    return exchange.decode([protocol.live(i) for i in ids], [time_ms(i) * 1000 + 5 for i in ids])


def backfills(decoded: DecodedFrames) -> list[FetchSnapshot]:
    return [a for a in decoded.actions if isinstance(a, FetchSnapshot) and a.purpose.startswith("trades ")]


def answer(exchange: Exchange, request: FetchSnapshot, body: bytes,
           kind: RecordKind = RecordKind.REST) -> DecodedFrames:
    return exchange.decode([request.header + b"\n" + body], [T0_MS * 1000 + 10**9], [kind])


def ids_of(decoded: DecodedFrames) -> list[int]:
    return sorted(int(i) for i in decoded.trades.column("trade_id").to_pylist())


def kinds(decoded: DecodedFrames) -> list[str]:
    return decoded.book_events.kinds if decoded.book_events is not None else []


def test_contiguous_ids_ask_for_nothing(exchange: Exchange, protocol: Protocol) -> None:
    assert backfills(live(exchange, protocol, 100, 101, 102)) == []
    assert backfills(live(exchange, protocol, 103)) == []


def test_a_jump_is_recorded_and_asked_from_the_exchanges_own_rest_history(exchange: Exchange,
                                                                           protocol: Protocol) -> None:
    live(exchange, protocol, 100, 101)
    decoded = live(exchange, protocol, 105, 106)
    assert kinds(decoded) == ["trade_gap"]
    assert "trade ids 102..104" in decoded.book_events.details[0]  # type: ignore[union-attr]
    [request] = backfills(decoded)
    paths = {"binance": "/api/v3/historicalTrades?symbol=BTCUSDT&fromId=102&limit=3",
             "kraken": "/0/public/Trades?pair=BTC%2FUSD&since=",
             "coinbase": "/api/v3/brokerage/market/products/BTC-USD/ticker?limit=1000&start="}
    assert paths[protocol.name] in request.url
    filled = answer(exchange, request, protocol.page([101, 102, 103, 104, 105]))  # pages overlap what we have
    assert ids_of(filled) == [102, 103, 104]
    assert kinds(filled) == ["trade_gap_filled"]
    assert exchange.trade_gaps.open_gaps() == []
    rows = sorted(filled.trades.to_pylist(), key=lambda r: int(r["trade_id"]))
    assert {r["symbol"] for r in rows} == {SYMBOL[protocol.name]}
    assert [r["side"] for r in rows] == ["sell", "buy", "sell"]  # the aggressor, whatever the wire says
    assert [r["price"] for r in rows] == [100.5] * 3 and [r["quantity"] for r in rows] == [0.25] * 3
    assert [r["timestamp"] for r in rows] == [datetime.fromtimestamp(time_ms(i) / 1000, UTC) for i in (102, 103, 104)]


def test_a_batch_decoded_again_in_one_call_gives_the_live_rows_in_their_order(
        exchanges_config: ExchangesFile, protocol: Protocol) -> None:
    """Recovery and re-normalization decode a batch's records in one call; live, the backfill answer came in a
    later call than the trades that opened its gap. Both must give the same rows, in the same order."""
    live_run, again = (exchange_for(exchanges_config.exchanges[protocol.name]) for _ in range(2))
    before = live(live_run, protocol, 100, 101)
    opened = live(live_run, protocol, 105)
    [request] = backfills(opened)
    rest = request.header + b"\n" + protocol.page([102, 103, 104])
    frames = [protocol.live(i) for i in (100, 101, 105)] + [rest] + [protocol.live(106)]
    received = [time_ms(i) * 1000 + 5 for i in (100, 101, 105)] + [T0_MS * 1000 + 10**9, time_ms(106) * 1000 + 5]
    filled = live_run.decode(frames[3:], received[3:], [RecordKind.REST, RecordKind.FRAME])
    whole = again.decode(frames, received, [RecordKind.FRAME] * 3 + [RecordKind.REST, RecordKind.FRAME])
    in_calls = [r["trade_id"] for d in (before, opened, filled) for r in d.trades.to_pylist()]
    # The page's rows at the answer's place (in the exchange's page order), before the trade after it.
    assert in_calls[:3] == ["100", "101", "105"] and sorted(in_calls[3:6]) == ["102", "103", "104"]
    assert in_calls[6:] == ["106"]
    assert [r["trade_id"] for r in whole.trades.to_pylist()] == in_calls
    assert again.trade_gaps.open_gaps() == [] and again.export_state() == live_run.export_state()


def test_the_same_trade_twice_is_stored_once(exchange: Exchange, protocol: Protocol) -> None:
    first = live(exchange, protocol, 100, 101)
    again = live(exchange, protocol, 101, 102)
    assert ids_of(first) + ids_of(again) == [100, 101, 102]
    assert exchange.counters["duplicate_trades_dropped"] == 1


def test_a_late_trade_fills_its_gap_without_rest(exchange: Exchange, protocol: Protocol) -> None:
    live(exchange, protocol, 100)
    live(exchange, protocol, 102)
    late = live(exchange, protocol, 101)
    assert ids_of(late) == [101]
    assert exchange.trade_gaps.open_gaps() == []


def test_ids_out_of_order_within_a_batch_are_no_gap(exchange: Exchange, protocol: Protocol) -> None:
    live(exchange, protocol, 100)
    decoded = live(exchange, protocol, 103, 101, 102)
    assert ids_of(decoded) == [101, 102, 103] and kinds(decoded) == []


def test_a_full_page_asks_for_the_next_one(exchange: Exchange, protocol: Protocol) -> None:
    live(exchange, protocol, 1)
    [request] = backfills(live(exchange, protocol, 2500))
    newest = protocol.name == "coinbase"  # Coinbase pages back from the newest trades
    page_ids = list(range(1500, 2500)) if newest else list(range(2, 1002))
    decoded = answer(exchange, request, protocol.page(page_ids))
    assert len(ids_of(decoded)) == 1000
    [following] = backfills(decoded)
    assert following.url != request.url
    rest = list(range(2, 1500)) if newest else list(range(1002, 2500))
    done = answer(exchange, following, protocol.page(rest[-1000:] if newest else rest[:1000]))
    assert len(ids_of(done)) == 1000 and backfills(done) != []  # still 498 to go: one more page


def test_ids_the_exchange_no_longer_serves_become_an_unresolved_gap(exchange: Exchange,
                                                                     protocol: Protocol) -> None:
    live(exchange, protocol, 100)
    [request] = backfills(live(exchange, protocol, 200))
    # History starts at 150: a complete answer (not a full page) that lacks 101..149.
    decoded = answer(exchange, request, protocol.page(list(range(150, 200))))
    assert ids_of(decoded) == list(range(150, 200))
    assert kinds(decoded) == ["trade_gap_unresolved"]
    assert "trade ids 101..149 (49 trades) lost" in decoded.book_events.details[0]  # type: ignore[union-attr]
    assert backfills(decoded) == [] and exchange.trade_gaps.open_gaps() == []
    assert exchange.counters["trade_gaps_unresolved"] == 1


def test_a_request_refused_for_good_gives_the_range_up(exchange: Exchange, protocol: Protocol) -> None:
    live(exchange, protocol, 100)
    [request] = backfills(live(exchange, protocol, 103))
    decoded = answer(exchange, request, b"HTTP 400 from ...: invalid parameter", RecordKind.REST_FAILED)
    assert kinds(decoded) == ["trade_gap_unresolved"] and "REST refused" in decoded.book_events.details[0]  # type: ignore[union-attr]


def test_a_body_that_is_no_history_page_is_quarantined_and_asked_again(exchange: Exchange,
                                                                      protocol: Protocol) -> None:
    live(exchange, protocol, 100)
    [request] = backfills(live(exchange, protocol, 103))
    decoded = answer(exchange, request, b"<html>maintenance</html>")
    assert decoded.rejects.reasons == ["bad_snapshot"]
    assert [a.url for a in backfills(decoded)] == [request.url]
    answer(exchange, request, b"<html>maintenance</html>")
    third = answer(exchange, request, b"<html>maintenance</html>")
    assert backfills(third) == [] and kinds(third) == ["trade_gap_unresolved"]  # not re-asked forever


def test_open_gaps_and_last_ids_survive_a_restart(exchange: Exchange, protocol: Protocol,
                                                  exchanges_config: ExchangesFile) -> None:
    live(exchange, protocol, 100)
    [asked] = backfills(live(exchange, protocol, 104))  # the run ends before REST answers
    restarted = exchange_for(exchange.config)
    restarted.import_state(json.loads(json.dumps(exchange.export_state())))  # through the checkpoint's JSON
    [again] = [a for a in restarted.outstanding_actions() if isinstance(a, FetchSnapshot)]
    assert again.purpose == asked.purpose
    assert ids_of(answer(restarted, again, protocol.page([101, 102, 103]))) == [101, 102, 103]
    assert kinds(live(restarted, protocol, 106)) == ["trade_gap"]  # 105 missing: the last id carried over


def test_importing_a_checkpoint_replaces_what_the_instance_saw_before(exchange: Exchange,
                                                                       protocol: Protocol) -> None:
    """WAL recovery re-decodes from the checkpoint's marks: ids an instance decoded after that checkpoint
    (or before it was handed to a run) must not make the re-decoded trades look already stored."""
    checkpoint = json.loads(json.dumps(exchange.export_state()))  # nothing seen yet
    live(exchange, protocol, 1, 2, 3)
    exchange.import_state(checkpoint)
    assert ids_of(live(exchange, protocol, 1, 2, 3)) == [1, 2, 3]


def test_a_binance_checkpoint_from_before_times_were_kept_still_loads(exchanges_config: ExchangesFile) -> None:
    binance = exchange_for(exchanges_config.exchanges["binance"])
    binance.import_state({"last_trade_id": {"BTC-USDT": 5}, "open_gaps": {"BTC-USDT": [[2, 4]]}})
    [request] = binance.outstanding_actions()
    assert isinstance(request, FetchSnapshot) and "fromId=2&limit=3" in request.url


def test_a_kraken_page_ending_inside_a_sweep_is_continued_at_the_same_time(exchanges_config: ExchangesFile) -> None:
    """The fills of one order share a time and Kraken's `since` is exclusive: the next page must start 1 ns
    before the last trade of this one, or the rest of the sweep would be skipped."""
    kraken = exchange_for(exchanges_config.exchanges["kraken"])
    protocol = PROTOCOLS["kraken"]
    live(kraken, protocol, 1)
    [request] = backfills(live(kraken, protocol, 1500))
    page = json.loads(protocol.page(list(range(2, 1002))))
    [following] = backfills(answer(kraken, request, json.dumps(page).encode()))
    assert f"since={int(page['result']['last']) - 1}&" in following.url
