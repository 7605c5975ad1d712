"""Coinbase Advanced Trade decoding against the exact payloads of exchange-protocols.md, section 2a."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from trading_platform.config import ExchangeConfig, ExchangesFile
from trading_platform.exchanges import record_decoder
from trading_platform.exchanges.coinbase import MARKET_TRADES_SIDE_IS_MAKER, STALE_SEQUENCE_RESET, Coinbase
from trading_platform.exchanges.decoded import DecodedFrames, DecodeOutput, Reconnect, RecordKind
from trading_platform.exchanges.registry import exchange_class
from trading_platform_tests.exchanges.scan_support import assert_the_scan_changes_nothing
from trading_platform_tests.support import replay_endpoints

DOC_L2_SNAPSHOT = b"""{
  "channel": "l2_data", "client_id": "", "timestamp": "2023-02-09T20:32:50.714964855Z", "sequence_num": 0,
  "events": [{
    "type": "snapshot", "product_id": "BTC-USD",
    "updates": [
      {"side": "bid",   "event_time": "1970-01-01T00:00:00Z", "price_level": "21921.73", "new_quantity": "0.06317902"},
      {"side": "offer", "event_time": "1970-01-01T00:00:00Z", "price_level": "21921.74", "new_quantity": "0.4"}
    ]
  }]
}"""
DOC_L2_UPDATE = b"""{"channel":"l2_data","client_id":"","timestamp":"2026-04-07T14:30:01.456789Z","sequence_num":1,
 "events":[{"type":"update","product_id":"BTC-USD","updates":[
   {"side":"bid","event_time":"2026-04-07T14:30:01.456789Z","price_level":"68900.00","new_quantity":"2.00000000"},
   {"side":"offer","event_time":"2026-04-07T14:30:01.456789Z","price_level":"68901.00","new_quantity":"0.00000000"}]}]}"""
DOC_MARKET_TRADES = b"""\
{"channel":"market_trades","client_id":"","timestamp":"2023-02-09T20:19:35.39625135Z","sequence_num":0,
 "events":[{"type":"snapshot","trades":[
   {"trade_id":"000000000","product_id":"ETH-USD","price":"1260.01","size":"0.3","side":"BUY","time":"2019-08-14T20:42:27.265Z"}]}]}"""
DOC_HEARTBEATS = b"""\
{"channel":"heartbeats","client_id":"","timestamp":"2023-06-23T20:31:26.122969572Z","sequence_num":0,
 "events":[{"current_time":"2023-06-23 20:31:56.121961769 +0000 UTC m=+91717.525857105","heartbeat_counter":"3049"}]}"""

CONNECTED = RecordKind.CONNECTED
FRAME = RecordKind.FRAME


def envelope(channel: str, sequence: int, events: list[dict[str, Any]],
             timestamp: str = "2026-04-07T14:30:00.000000Z") -> bytes:
    return json.dumps({"channel": channel, "client_id": "", "timestamp": timestamp, "sequence_num": sequence,
                       "events": events}).encode()


def trade(trade_id: str, product: str = "BTC-USD", side: str = "BUY", price: str = "68900.50",
          time: str = "2026-04-07T14:30:02.789012Z") -> dict[str, str]:
    return {"trade_id": trade_id, "product_id": product, "price": price, "size": "0.0015", "side": side,
            "time": time}


def trades_frame(sequence: int, kind: str, *trades: dict[str, str]) -> bytes:
    return envelope("market_trades", sequence, [{"type": kind, "trades": list(trades)}])


def level(side: str, price: str, quantity: str, time: str = "2026-04-07T14:30:00.100000Z") -> dict[str, str]:
    return {"side": side, "event_time": time, "price_level": price, "new_quantity": quantity}


def l2_frame(sequence: int, kind: str, levels: list[dict[str, str]], product: str = "BTC-USD",
             timestamp: str = "2026-04-07T14:30:00.100000Z") -> bytes:
    return envelope("l2_data", sequence, [{"type": kind, "product_id": product, "updates": levels}], timestamp)


def book_snapshot(sequence: int = 0, timestamp: str = "2026-04-07T14:30:00.100000Z") -> bytes:
    return l2_frame(sequence, "snapshot", [
        level("bid", "68900.00", "1.0", "1970-01-01T00:00:00Z"),
        level("bid", "68899.00", "3.0", "1970-01-01T00:00:00Z"),
        level("offer", "68901.00", "0.5", "1970-01-01T00:00:00Z"),
        level("offer", "68902.00", "4.0", "1970-01-01T00:00:00Z")], timestamp=timestamp)


def bid_update(sequence: int, quantity: str, time: str) -> bytes:
    return l2_frame(sequence, "update", [level("bid", "68899.00", quantity, time)], timestamp=time)


def config_for(exchanges_config: ExchangesFile, channels: list[str]) -> ExchangeConfig:
    config = exchanges_config.exchanges["coinbase"].model_copy()
    config.channels = channels  # type: ignore[assignment]
    config.symbols = ["BTC-USD", "ETH-USD"]
    return config


@pytest.fixture
def coinbase(exchanges_config: ExchangesFile) -> Coinbase:
    return Coinbase(config_for(exchanges_config, ["trades", "book"]))


@pytest.fixture
def trades_only(exchanges_config: ExchangesFile) -> Coinbase:
    return Coinbase(config_for(exchanges_config, ["trades"]))


def decode(exchange: Coinbase, *records: bytes | RecordKind) -> DecodedFrames:
    """Decode records in order; a RecordKind in the list stands for that record (CONNECTED: a new socket)."""
    frames = [b"ws://127.0.0.1/coinbase" if isinstance(r, RecordKind) else r for r in records]
    kinds = [r if isinstance(r, RecordKind) else FRAME for r in records]
    return exchange.decode(frames, [1_000 + i for i in range(len(frames))], kinds)


def snapshot_rows(decoded: DecodedFrames) -> list[dict[str, Any]]:
    assert decoded.book_snapshots is not None
    return decoded.book_snapshots.to_arrow().to_pylist() if len(decoded.book_snapshots) else []


def event_rows(decoded: DecodedFrames) -> list[tuple[str, str, str]]:
    assert decoded.book_events is not None
    events = decoded.book_events
    return list(zip(events.symbols, events.kinds, events.details, strict=True))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# --- the documented payloads ---------------------------------------------------------------------------------
def test_documented_market_trades_snapshot_decodes_to_normalized_columns(coinbase: Coinbase) -> None:
    decoded = coinbase.decode([DOC_MARKET_TRADES], [1_676_000_000_000_000])
    assert decoded.trades.drop_columns(["timestamp", "received_at"]).to_pylist() == [{
        "exchange": "coinbase", "symbol": "ETH-USD", "native_symbol": "ETH-USD", "trade_id": "000000000",
        "price": 1260.01, "quantity": 0.3, "side": "sell", "frame_index": 0,
        "symbol_code": coinbase.symbols.index("ETH-USD")}]
    row = decoded.trades.to_pylist()[0]
    assert row["timestamp"] == at("2019-08-14T20:42:27.265+00:00")
    assert row["received_at"] == datetime.fromtimestamp(1_676_000_000, UTC)
    assert len(decoded.rejects) == 0


def test_side_is_read_as_the_makers_side_so_the_taker_is_opposite(coinbase: Coinbase) -> None:
    assert MARKET_TRADES_SIDE_IS_MAKER
    decoded = decode(coinbase, trades_frame(0, "update", trade("1", side="BUY"), trade("2", side="SELL")))
    assert decoded.trades.column("side").to_pylist() == ["sell", "buy"]


def test_documented_level2_snapshot_uses_the_envelope_time_not_the_epoch(coinbase: Coinbase) -> None:
    [row] = snapshot_rows(coinbase.decode([DOC_L2_SNAPSHOT], [5]))
    assert row["symbol"] == "BTC-USD"
    assert row["timestamp"] == at("2023-02-09T20:32:50.714965+00:00")  # ns rounded to µs
    assert row["bids"] == [{"price": 21921.73, "quantity": 0.06317902}]
    assert row["asks"] == [{"price": 21921.74, "quantity": 0.4}]
    assert coinbase.synced["BTC-USD"]


def test_documented_level2_update_sets_absolute_quantities_and_zero_removes(coinbase: Coinbase) -> None:
    decoded = decode(coinbase, CONNECTED, book_snapshot(0), DOC_L2_UPDATE)
    first, second = snapshot_rows(decoded)
    assert second["timestamp"] == at("2026-04-07T14:30:01.456789+00:00")  # the update's event_time
    assert second["bids"] == [{"price": 68900.0, "quantity": 2.0}, {"price": 68899.0, "quantity": 3.0}]
    assert second["asks"] == [{"price": 68902.0, "quantity": 4.0}]  # 68901.00 went to zero
    assert second["sequence"] == 1
    assert first["asks"][0] == {"price": 68901.0, "quantity": 0.5}


@pytest.mark.parametrize("counter", [b'"3049"', b"3049"])
def test_heartbeats_with_string_or_int_counter_are_control(coinbase: Coinbase, counter: bytes) -> None:
    decoded = coinbase.decode([DOC_HEARTBEATS.replace(b'"3049"', counter)], [0])
    assert decoded.control_frames == 1
    assert len(decoded.rejects) == 0
    assert coinbase.heartbeat_counter == 3049


def test_frame_without_client_id_is_accepted(coinbase: Coinbase) -> None:
    frame = DOC_MARKET_TRADES.replace(b'"client_id":"",', b"")
    assert b"client_id" not in frame
    assert coinbase.decode([frame], [0]).trades.num_rows == 1


# --- subscription --------------------------------------------------------------------------------------------
def test_subscribe_frames_one_per_channel_data_first(coinbase: Coinbase, exchanges_config: ExchangesFile) -> None:
    endpoints = replay_endpoints(exchanges_config.exchanges["coinbase"], "127.0.0.1", 9555)
    assert coinbase.use_endpoints(endpoints) == endpoints.ws_url
    assert [json.loads(frame) for frame in coinbase.subscribe_frames()] == [
        {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "market_trades"},
        {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "level2"},
        {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "heartbeats"},
    ]


def test_trades_only_subscribes_no_level2(trades_only: Coinbase) -> None:
    assert [json.loads(frame)["channel"] for frame in trades_only.subscribe_frames()] == ["market_trades",
                                                                                           "heartbeats"]


def test_unsubscribe_frames_mirror_the_subscriptions(coinbase: Coinbase) -> None:
    unsubscribe = [json.loads(frame) for frame in coinbase.unsubscribe_frames()]
    subscribe = [json.loads(frame) for frame in coinbase.subscribe_frames()]
    assert unsubscribe == [{**frame, "type": "unsubscribe"} for frame in subscribe]


def subscriptions(**channels: list[str]) -> bytes:
    return envelope("subscriptions", 7, [{"subscriptions": channels}])


def test_drain_ends_when_no_data_channel_is_left(coinbase: Coinbase) -> None:
    assert not coinbase.is_unsubscribe_ack(subscriptions(level2=["BTC-USD"], market_trades=["BTC-USD"]))
    assert not coinbase.is_unsubscribe_ack(subscriptions(level2=["BTC-USD"], heartbeats=["heartbeats"]))
    assert coinbase.is_unsubscribe_ack(subscriptions(heartbeats=["heartbeats"]))
    assert coinbase.is_unsubscribe_ack(subscriptions(market_trades=[], level2=[]))
    assert coinbase.is_unsubscribe_ack(subscriptions())


def test_data_and_broken_frames_never_end_the_drain(coinbase: Coinbase) -> None:
    assert not coinbase.is_unsubscribe_ack(DOC_MARKET_TRADES)
    assert not coinbase.is_unsubscribe_ack(DOC_HEARTBEATS)
    assert not coinbase.is_unsubscribe_ack(b'{"channel":"subscriptions","events":[{"subscri')


def test_registry_finds_the_live_module(coinbase: Coinbase) -> None:
    assert exchange_class("coinbase") is Coinbase


# --- sequence numbers ----------------------------------------------------------------------------------------
def test_sequence_gap_records_events_asks_for_one_reconnect_and_stops_emission(coinbase: Coinbase) -> None:
    decoded = decode(coinbase, CONNECTED, book_snapshot(0), bid_update(1, "5", "2026-04-07T14:30:01.1Z"),
                     bid_update(5, "6", "2026-04-07T14:30:02.1Z"), bid_update(9, "7", "2026-04-07T14:30:03.1Z"))
    assert [row["timestamp"].second for row in snapshot_rows(decoded)] == [0, 1]  # nothing after the gap
    detail = "sequence_num expected 2 got 5 (3 messages missing)"
    assert event_rows(decoded)[:2] == [("BTC-USD", "sequence_gap", detail), ("ETH-USD", "sequence_gap", detail)]
    assert [kind for _, kind, _ in event_rows(decoded)] == ["sequence_gap"] * 4  # two gaps, two symbols each
    assert len(decoded.actions) == 1 and isinstance(decoded.actions[0], Reconnect)
    assert not coinbase.synced["BTC-USD"] and not coinbase.synced["ETH-USD"]


@pytest.mark.parametrize(("bad", "named"), [
    # No number, no finite number, a negative one: refused by the decode, naming the field.
    ("abc", "Expected `float`, got `str` - at `$.events[0].updates[1].price_level`"),
    ("NaN", "Expected `float` >= 0.0 - at `$.events[0].updates[1].price_level`"),
    ("inf", "Expected `float` <= 1.7976931348623157e+308 - at `$.events[0].updates[1].price_level`"),
    ("1e400", "Number out of range - at `$.events[0].updates[1].price_level`"),
    ("-68899.00", "Expected `float` >= 0.0 - at `$.events[0].updates[1].price_level`"),
])
def test_a_level2_level_that_is_no_finite_number_is_quarantined_and_resyncs_that_book(coinbase: Coinbase,
                                                                                      bad: str, named: str) -> None:
    broken = l2_frame(2, "update", [level("bid", "68898.00", "1.0"), level("offer", bad, "2.0")])
    decoded = decode(coinbase, CONNECTED, book_snapshot(0), bid_update(1, "5", "2026-04-07T14:30:01.1Z"), broken,
                     trades_frame(3, "update", trade("7")), bid_update(4, "6", "2026-04-07T14:30:03.1Z"))
    assert decoded.rejects.reasons == ["wrong_type"] and named in decoded.rejects.details[0]
    assert decoded.rejects.raws == [broken.decode()]
    assert [row["trade_id"] for row in decoded.trades.to_pylist()] == ["7"]  # the batch decoded, nothing lost
    assert [(symbol, kind) for symbol, kind, _ in event_rows(decoded)] == [("BTC-USD", "update_rejected")]
    assert [type(action) for action in decoded.actions] == [Reconnect]  # Coinbase snapshots on subscribe only
    assert not coinbase.synced["BTC-USD"] and coinbase.synced["ETH-USD"] is False  # ETH never had a snapshot
    assert [row["timestamp"].second for row in snapshot_rows(decoded)] == [0, 1]  # nothing after the lost event


def test_after_a_gap_only_a_snapshot_on_a_new_connection_resumes_emission(coinbase: Coinbase) -> None:
    decode(coinbase, CONNECTED, book_snapshot(0), bid_update(4, "6", "2026-04-07T14:30:02.1Z"))
    before = decode(coinbase, bid_update(5, "7", "2026-04-07T14:30:03.1Z"))
    assert snapshot_rows(before) == [] and before.actions == []  # still one reconnect for the gap
    after = decode(coinbase, CONNECTED, book_snapshot(0, "2026-04-07T14:30:04.1Z"),
                   bid_update(1, "8", "2026-04-07T14:30:05.1Z"))
    assert [row["timestamp"].second for row in snapshot_rows(after)] == [4, 5]
    assert [kind for _, kind, _ in event_rows(after)] == ["resync"]
    assert after.actions == []


def test_trades_keep_flowing_across_a_gap(coinbase: Coinbase) -> None:
    decoded = decode(coinbase, CONNECTED, trades_frame(0, "update", trade("1")), trades_frame(3, "update", trade("2")))
    assert decoded.trades.column("trade_id").to_pylist() == ["1", "2"]
    assert len(decoded.actions) == 1


def test_trades_only_gap_is_recorded_without_reconnecting(trades_only: Coinbase) -> None:
    decoded = decode(trades_only, CONNECTED, trades_frame(0, "update", trade("1")),
                     trades_frame(2, "update", trade("3")))
    assert [kind for _, kind, _ in event_rows(decoded) if kind == "sequence_gap"] == ["sequence_gap"] * 2
    assert not any(isinstance(action, Reconnect) for action in decoded.actions)


def test_duplicate_or_older_sequence_numbers_are_ignored_as_already_seen(coinbase: Coinbase) -> None:
    first = trades_frame(0, "update", trade("1"))
    second = trades_frame(1, "update", trade("2"))
    decoded = decode(coinbase, CONNECTED, first, second, second, first)
    assert decoded.trades.column("trade_id").to_pylist() == ["1", "2"]
    assert decoded.control_frames == 2
    assert event_rows(decoded) == []


def test_a_count_the_server_restarted_is_followed_after_frames_in_a_row_below_it(coinbase: Coinbase) -> None:
    ahead = [trades_frame(1000 + i, "update", trade(str(i + 1))) for i in range(3)]  # trades 1-3
    below = STALE_SEQUENCE_RESET - 1  # frames taken for copies until the count is followed
    restarted = [trades_frame(i, "update", trade(str(max(i - below, 0) + 4))) for i in range(below + 3)]
    decoded = decode(coinbase, CONNECTED, book_snapshot(999), *ahead, *restarted)
    assert decoded.control_frames == below
    assert [(kind, detail) for _, kind, detail in event_rows(decoded)] == [
        ("sequence_gap", f"sequence_num restarted at {below} (expected 1003)")] * 2  # one per book
    assert decoded.trades.column("trade_id").to_pylist() == ["1", "2", "3", "4", "5", "6"]


def test_copies_between_frames_in_order_never_add_up_to_a_restart(coinbase: Coinbase) -> None:
    frames = [book_snapshot(0)]
    for sequence in range(1, 2 * STALE_SEQUENCE_RESET):
        frame = trades_frame(sequence, "update", trade(str(sequence)))
        frames += [frame, frame]  # each one sent twice
    decoded = decode(coinbase, CONNECTED, *frames)
    assert event_rows(decoded) == []
    assert decoded.trades.column("trade_id").to_pylist() == [str(s) for s in range(1, 2 * STALE_SEQUENCE_RESET)]
    assert coinbase.counters["stale_sequence_frames"] == 2 * STALE_SEQUENCE_RESET - 1


def test_connected_resets_the_sequence_and_the_books(coinbase: Coinbase) -> None:
    decoded = decode(coinbase, CONNECTED, book_snapshot(0), bid_update(1, "5", "2026-04-07T14:30:01.1Z"),
                     CONNECTED, bid_update(0, "6", "2026-04-07T14:30:02.1Z"))
    assert event_rows(decoded) == []  # sequence 0 on the new socket is no gap
    assert len(snapshot_rows(decoded)) == 2  # the update on the new socket waits for its snapshot
    assert not coinbase.synced["BTC-USD"]


# --- trades exactly once -------------------------------------------------------------------------------------
def test_snapshot_trades_are_deduplicated_across_a_reconnect(coinbase: Coinbase) -> None:
    first = decode(coinbase, CONNECTED, trades_frame(0, "snapshot", trade("100"), trade("99")),
                   trades_frame(1, "update", trade("101"), trade("102")))
    assert first.trades.column("trade_id").to_pylist() == ["100", "99", "101", "102"]
    second = decode(coinbase, CONNECTED, trades_frame(0, "snapshot", trade("102"), trade("101"), trade("100")),
                    trades_frame(1, "update", trade("103")))
    assert second.trades.column("trade_id").to_pylist() == ["103"]
    assert second.control_frames == 1  # the snapshot frame had nothing new
    assert len(second.rejects) == 0
    assert coinbase.snapshot_trades_dropped == 3


def test_snapshot_listing_newest_first_keeps_every_unseen_trade(coinbase: Coinbase) -> None:
    decode(coinbase, trades_frame(0, "update", trade("0000000103")))
    decoded = decode(coinbase, CONNECTED,
                     trades_frame(0, "snapshot", trade("0000000105"), trade("0000000104"), trade("0000000103")))
    assert decoded.trades.column("trade_id").to_pylist() == ["0000000105", "0000000104"]


def test_high_water_marks_are_per_product_and_include_updates_in_the_same_batch(coinbase: Coinbase) -> None:
    decoded = decode(coinbase, CONNECTED, trades_frame(0, "update", trade("50"), trade("7", product="ETH-USD")),
                     CONNECTED, trades_frame(0, "snapshot", trade("50"), trade("8", product="ETH-USD")))
    assert decoded.trades.column("trade_id").to_pylist() == ["50", "7", "8"]
    assert coinbase.trade_high_water == {"BTC-USD": 50, "ETH-USD": 8}


def test_a_snapshot_after_updates_in_the_same_frames_drops_the_trades_they_brought(coinbase: Coinbase) -> None:
    decoded = decode(coinbase, trades_frame(0, "update", trade("50"), trade("51")),
                     trades_frame(1, "snapshot", trade("52"), trade("51"), trade("50")))
    assert decoded.trades.column("trade_id").to_pylist() == ["50", "51", "52"]
    assert coinbase.snapshot_trades_dropped == 2


def test_non_numeric_trade_ids_compare_as_text(coinbase: Coinbase) -> None:
    decode(coinbase, trades_frame(0, "update", trade("b-2")))
    decoded = decode(coinbase, CONNECTED, trades_frame(0, "snapshot", trade("b-3"), trade("b-2"), trade("a-9")))
    assert decoded.trades.column("trade_id").to_pylist() == ["b-3"]


# --- quarantine ----------------------------------------------------------------------------------------------
def test_truncated_frame_is_quarantined_with_its_raw_text(coinbase: Coinbase) -> None:
    good = trades_frame(0, "update", trade("1"))
    decoded = coinbase.decode([good[:60], good], [5, 6])
    assert decoded.rejects.reasons == ["malformed_json"]
    assert decoded.rejects.raws == [good[:60].decode()]
    assert decoded.rejects.received_us == [5]
    assert decoded.trades.column("frame_index").to_pylist() == [1]


def test_a_price_that_is_no_number_is_quarantined_and_names_the_field(coinbase: Coinbase) -> None:
    wrong = trades_frame(0, "update", trade("1")).replace(b'"price": "68900.50"', b'"price": "68,900.50"')
    decoded = coinbase.decode([wrong, trades_frame(1, "update", trade("2"))], [0, 1])
    assert decoded.rejects.reasons == ["wrong_type"]
    assert "$.events[0].trades[0].price" in decoded.rejects.details[0]
    assert decoded.trades.column("trade_id").to_pylist() == ["2"]


def test_wrong_typed_field_is_quarantined_and_names_the_field(coinbase: Coinbase) -> None:
    wrong = trades_frame(0, "update", trade("1")).replace(b'"side": "BUY"', b'"side": 1')
    decoded = coinbase.decode([wrong], [0])
    assert decoded.rejects.reasons == ["wrong_type"]
    assert "$.events[0].trades[0].side" in decoded.rejects.details[0]


def test_wrong_typed_book_field_is_quarantined_names_the_field_and_resyncs_that_book(coinbase: Coinbase) -> None:
    wrong = bid_update(1, "2.0", "2026-04-07T14:30:01.000000Z").replace(b'"new_quantity": "2.0"',
                                                                         b'"new_quantity": true')
    decoded = decode(coinbase, CONNECTED, book_snapshot(0), wrong, bid_update(2, "3.0", "2026-04-07T14:30:02Z"))
    assert decoded.rejects.reasons == ["wrong_type"]
    assert "$.events[0].updates[0].new_quantity" in decoded.rejects.details[0]
    # Its sequence number was counted (no gap), but its change is lost: that book waits for a fresh snapshot.
    assert [(symbol, kind) for symbol, kind, _ in event_rows(decoded)] == [("BTC-USD", "update_rejected")]
    assert [type(action) for action in decoded.actions] == [Reconnect]
    assert not coinbase.synced["BTC-USD"]
    assert coinbase.books["BTC-USD"].top("bid", 2) == [(68900.0, 1.0), (68899.0, 3.0)]  # the later change ignored


def test_a_refused_snapshot_leaves_its_book_waiting_for_a_fresh_one(coinbase: Coinbase) -> None:
    wrong = book_snapshot(0).replace(b'"new_quantity": "0.5"', b'"new_quantity": null')
    decoded = decode(coinbase, CONNECTED, wrong)
    assert decoded.rejects.reasons == ["wrong_type"]
    assert [(symbol, kind) for symbol, kind, _ in event_rows(decoded)] == [("BTC-USD", "snapshot_rejected")]
    assert [type(action) for action in decoded.actions] == [Reconnect]


def test_refused_events_that_name_no_product_resync_every_book_in_sync(coinbase: Coinbase) -> None:
    decode(coinbase, CONNECTED, book_snapshot(0), book_snapshot(1).replace(b'"BTC-USD"', b'"ETH-USD"'))
    wrong = envelope("l2_data", 2, [{"type": "update", "updates": []}])  # no product_id
    decoded = decode(coinbase, wrong)
    assert decoded.rejects.reasons == ["wrong_type"]
    assert sorted(symbol for symbol, _, _ in event_rows(decoded)) == ["BTC-USD", "ETH-USD"]
    assert not coinbase.synced["BTC-USD"] and not coinbase.synced["ETH-USD"]


def test_a_level_sent_as_json_numbers_is_read_as_those_numbers(coinbase: Coinbase) -> None:
    # The lax rule of every number the decoders read: a JSON number where Coinbase sends a string is that number.
    numbers = bid_update(1, "2.0", "2026-04-07T14:30:01.000000Z").replace(b'"price_level": "68899.00"',
                                                                           b'"price_level": 68899.0')
    decoded = decode(coinbase, CONNECTED, book_snapshot(0), numbers)
    assert decoded.rejects.reasons == [] and event_rows(decoded) == []
    assert coinbase.books["BTC-USD"].top("bid", 2) == [(68900.0, 1.0), (68899.0, 2.0)]


@pytest.mark.parametrize(("levels", "named"), [
    # The decode names the first field in the frame that is no finite number (or no number at all), either side.
    ([level("offer", "abc", "1.0"), level("bid", "68898.00", "xyz")], "updates[0].price_level"),
    ([level("bid", "68898.00", "NaN"), level("offer", "abc", "1.0")], "updates[0].new_quantity"),
    ([level("offer", "inf", "1.0"), level("bid", "68898.00", "NaN")], "updates[0].price_level"),
])
def test_a_level2_event_with_several_faults_is_quarantined_naming_the_first(
        coinbase: Coinbase, levels: list[dict[str, str]], named: str) -> None:
    decoded = decode(coinbase, CONNECTED, book_snapshot(0), l2_frame(1, "update", levels))
    assert decoded.rejects.reasons == ["wrong_type"] and named in decoded.rejects.details[0]


def test_a_wrong_typed_book_field_leaves_the_rest_of_its_batch_as_if_decoded_alone(
        coinbase: Coinbase, exchanges_config: ExchangesFile) -> None:
    # The batch decode types the level2 events; a frame it refuses sends the batch frame by frame, where the
    # events are decoded per message: the same rows, rejects and books as a batch without that frame.
    wrong = bid_update(2, "2.0", "2026-04-07T14:30:02Z").replace(b'"new_quantity": "2.0"', b'"new_quantity": true')
    records = [book_snapshot(0), bid_update(1, "5", "2026-04-07T14:30:01.1Z"), wrong,
               trades_frame(3, "update", trade("7")), bid_update(4, "6", "2026-04-07T14:30:03.1Z")]
    batched = decode(coinbase, CONNECTED, *records)
    alone = Coinbase(config_for(exchanges_config, ["trades", "book"]))
    one_by_one = [decode(alone, CONNECTED, records[0])] + [decode(alone, r) for r in records[1:]]
    assert batched.rejects.details == [d for one in one_by_one for d in one.rejects.details]
    def books(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:  # received_at is per call here
        return [(row["timestamp"], row["sequence"], row["bids"], row["asks"]) for row in rows]

    assert books(snapshot_rows(batched)) == books([row for one in one_by_one if one.book_snapshots
                                                   for row in snapshot_rows(one)])
    assert batched.trades.column("trade_id").to_pylist() == ["7"]
    assert coinbase.books["BTC-USD"].top("bid", 2) == alone.books["BTC-USD"].top("bid", 2)
    assert coinbase.books["BTC-USD"].top("bid", 2) == [(68900.0, 1.0), (68899.0, 5.0)]  # resyncing after it


def test_a_channel_we_did_not_subscribe_is_ignored_and_keeps_its_sequence_number(coinbase: Coinbase) -> None:
    decoded = decode(coinbase, CONNECTED, trades_frame(0, "update", trade("1")),
                     envelope("ticker", 1, [{"type": "update", "tickers": []}]), trades_frame(2, "update", trade("2")))
    assert decoded.rejects.reasons == [] and decoded.ignored_frames == 1
    assert event_rows(decoded) == [] and decoded.actions == []


def test_unknown_products_are_quarantined_trades_and_books(coinbase: Coinbase) -> None:
    decoded = decode(coinbase, trades_frame(0, "update", trade("1", product="DOGE-EUR"), trade("2")),
                     l2_frame(1, "snapshot", [level("bid", "1", "1")], product="DOGE-EUR"))
    assert decoded.rejects.reasons == ["unknown_symbol", "unknown_symbol"]
    assert "DOGE-EUR" in decoded.rejects.details[0]
    assert decoded.trades.column("trade_id").to_pylist() == ["2"]
    assert "DOGE-EUR" not in coinbase.trade_high_water


def test_error_reply_is_kept_as_exchange_error(coinbase: Coinbase) -> None:
    decoded = coinbase.decode([b'{"type":"error","message":"failure to subscribe"}'], [0])
    assert decoded.rejects.reasons == ["exchange_error"]
    assert "failure to subscribe" in decoded.rejects.details[0]


def test_bad_frame_in_a_batch_does_not_change_the_good_rows(coinbase: Coinbase,
                                                            exchanges_config: ExchangesFile) -> None:
    good = [trades_frame(i, "update", trade(str(i), side="SELL" if i % 2 else "BUY")) for i in range(50)]
    clean = coinbase.decode(good, list(range(50)))
    other = Coinbase(config_for(exchanges_config, ["trades", "book"]))
    mixed = other.decode([*good[:25], b"{oops", *good[25:]], list(range(51)))
    assert mixed.trades.drop_columns(["frame_index", "received_at"]).equals(
        clean.trades.drop_columns(["frame_index", "received_at"]))
    assert mixed.rejects.reasons == ["malformed_json"]


def test_frame_index_points_into_the_records_decoded(coinbase: Coinbase) -> None:
    decoded = decode(coinbase, CONNECTED, DOC_HEARTBEATS, trades_frame(1, "update", trade("1")))
    assert decoded.trades.column("frame_index").to_pylist() == [2]
    assert decoded.trades.column("received_at").to_pylist()[0] == datetime.fromtimestamp(1_002 / 1e6, UTC)


# --- emission ------------------------------------------------------------------------------------------------
def test_emission_follows_exchange_time_one_snapshot_per_interval(coinbase: Coinbase) -> None:
    decoded = decode(coinbase, CONNECTED, book_snapshot(0, "2026-04-07T14:30:00.100000Z"),
                     bid_update(1, "5", "2026-04-07T14:30:00.500000Z"),  # same second: no new snapshot
                     bid_update(2, "6", "2026-04-07T14:30:01.000000Z"),
                     bid_update(3, "7", "2026-04-07T14:30:01.900000Z"),
                     bid_update(4, "8", "2026-04-07T14:30:03.200000Z"))
    rows = snapshot_rows(decoded)
    assert [row["timestamp"] for row in rows] == [at("2026-04-07T14:30:00.100+00:00"),
                                                  at("2026-04-07T14:30:01+00:00"),
                                                  at("2026-04-07T14:30:03.2+00:00")]
    assert [row["bids"][1]["quantity"] for row in rows] == [3.0, 6.0, 8.0]
    assert [row["received_at"].microsecond for row in rows] == [1_001, 1_003, 1_005]


def test_emitted_depth_is_the_configured_depth(exchanges_config: ExchangesFile) -> None:
    config = config_for(exchanges_config, ["trades", "book"])
    config.book_depth = 1
    rows = snapshot_rows(decode(Coinbase(config), book_snapshot(0)))
    assert rows[0]["bids"] == [{"price": 68900.0, "quantity": 1.0}]
    assert rows[0]["asks"] == [{"price": 68901.0, "quantity": 0.5}]


def test_level2_frames_are_ignored_when_books_are_not_configured(trades_only: Coinbase) -> None:
    decoded = decode(trades_only, book_snapshot(0))
    assert snapshot_rows(decoded) == []
    assert decoded.control_frames == 1


def test_trade_high_water_marks_survive_a_restart_through_exported_state(exchanges_config) -> None:  # type: ignore[no-untyped-def]
    from trading_platform.exchanges.coinbase import Coinbase

    before = Coinbase(exchanges_config.exchanges["coinbase"])
    before.trade_high_water["BTC-USD"] = 1000
    after = Coinbase(exchanges_config.exchanges["coinbase"])
    after.import_state(before.export_state())
    assert after.trade_high_water == {"BTC-USD": 1000}


# --- trade times: parsed per batch in Arrow -----------------------------------------------------------------
def test_a_trade_whose_time_is_not_rfc3339_is_quarantined_and_its_frame_mates_kept(coinbase: Coinbase) -> None:
    frame = trades_frame(0, "update", trade("1"), trade("2", time="2026-04-07T14:30Z"))  # no seconds
    decoded = decode(coinbase, frame)
    assert decoded.trades.column("trade_id").to_pylist() == ["1"]
    assert decoded.rejects.reasons == ["wrong_type"]
    assert decoded.rejects.details == ["trade timestamp '2026-04-07T14:30Z' is not RFC3339"]
    assert decoded.rejects.raws == [frame.decode()]


def test_a_quarantined_trade_does_not_raise_the_high_water_mark(coinbase: Coinbase) -> None:
    decode(coinbase, trades_frame(0, "update", trade("1"), trade("2", time="not a time")))
    assert coinbase.trade_high_water == {"BTC-USD": 1}


def test_nanosecond_trade_times_round_to_the_nearest_microsecond(coinbase: Coinbase) -> None:
    decoded = decode(coinbase, trades_frame(0, "update", trade("1", time="2026-04-07T14:30:02.789012500Z")))
    assert decoded.trades.column("timestamp").to_pylist() == [at("2026-04-07T14:30:02.789013+00:00")]


# --- the compiled scan of in-order trade updates ---------------------------------------------------------------
def test_in_order_trade_updates_are_read_by_the_compiled_scan(trades_only: Coinbase) -> None:
    decode(trades_only, CONNECTED, trades_frame(0, "update", trade("1")))  # the first frame sets the numbering
    frames = [trades_frame(i, "update", trade(str(i + 1)), trade(str(i + 101))) for i in range(1, 6)]
    frames.insert(3, trades_frame(9, "update", trade("50")))  # a gap: left to the decode, and all after it
    out = DecodeOutput.for_exchange("coinbase")
    assert trades_only.scan_frames(frames, 0, len(frames), out) == 3
    assert out.columns is not None and len(out.columns) == 6


def mixed_stream(seed: int) -> list[bytes | RecordKind]:
    """Trade updates over a few chunks of frames, with everything that is not one (or not in order) sprinkled in:
    heartbeats, books, snapshots, gaps, repeats, restarts, unknown products, bad times, broken and escaped frames."""
    chance = random.Random(seed)
    records: list[bytes | RecordKind] = [CONNECTED]
    sequence, trade_id = 0, 1000
    for _ in range(700):
        roll = chance.random()
        if roll < 0.02:
            records.append(CONNECTED)
            sequence = 0
        elif roll < 0.04:
            sequence += chance.randint(2, 5)  # messages lost
        elif roll < 0.06 and sequence > 3:
            records.append(trades_frame(sequence - 3, "update", trade(str(trade_id - 3))))  # a repeat
            continue
        elif roll < 0.07:
            trade_id += chance.randint(2, 4)  # trades lost
        if roll < 0.10:
            records.append(envelope("heartbeats", sequence, [{"current_time": "now", "heartbeat_counter": sequence}]))
        elif roll < 0.13:
            records.append(bid_update(sequence, str(chance.randint(0, 9)), "2026-04-07T14:30:01.000000Z"))
        elif roll < 0.15:
            records.append(book_snapshot(sequence))
        elif roll < 0.17:
            records.append(trades_frame(sequence, "snapshot", *(trade(str(trade_id - k)) for k in range(3))))
        elif roll < 0.18:
            records.append(trades_frame(sequence, "update", trade(str(trade_id), product="DOGE-USD")))
            trade_id += 1
        elif roll < 0.19:
            records.append(trades_frame(sequence, "update", trade(str(trade_id), time="yesterday")))
            trade_id += 1
        elif roll < 0.20:
            records.append(trades_frame(sequence, "update", trade(str(trade_id)))[:-5])
        elif roll < 0.21:
            records.append(trades_frame(sequence, "update", trade(str(trade_id), product="ETH\\u002dUSD"))
                           .replace(b"\\\\", b"\\"))
            trade_id += 1
        else:
            count = chance.choice([1, 1, 1, 2, 4])
            records.append(trades_frame(sequence, "update", *(
                trade(str(trade_id + k), product=chance.choice(["BTC-USD", "ETH-USD"]),
                      side=chance.choice(["BUY", "SELL"]), price=f"{chance.uniform(1, 1e5):.{chance.randint(0, 8)}f}")
                for k in range(count))))
            trade_id += count
        sequence += 1
    return records


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("channels", [["trades"], ["trades", "book"]])
@pytest.mark.parametrize("chunk", [7, record_decoder.DECODE_CHUNK])  # the scan reads the first frames of each
def test_a_stream_decodes_the_same_with_and_without_the_scan(exchanges_config: ExchangesFile, seed: int,
                                                             channels: list[str], chunk: int,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record_decoder, "DECODE_CHUNK", chunk)
    assert_the_scan_changes_nothing(Coinbase, config_for(exchanges_config, channels), mixed_stream(seed))
