"""Kraken v2 decoding against the exact payloads of exchange-protocols.md, section 3.

Expected checksums of our own fixtures are computed here by a second, independent spelling of the
documented algorithm (``doc_checksum``: ``int()`` strips the leading zeros, ``binascii`` does the CRC), so
the tests do not check ``kraken_checksum`` against itself.
"""

from __future__ import annotations

import binascii
import json
import random
from datetime import UTC, datetime

import pytest

from trading_platform.config import ExchangeConfig, ExchangesFile
from trading_platform.exchanges import record_decoder
from trading_platform.exchanges.decoded import DecodeOutput, RecordKind, SendFrames
from trading_platform.exchanges.kraken import MAX_RESUBSCRIBES, Kraken, kraken_checksum, subscription_depth
from trading_platform.exchanges.registry import exchange_class
from trading_platform_tests.exchanges.scan_support import assert_the_scan_changes_nothing

# The documented snapshot, as (price text, qty text), best first.
DOC_BIDS = [("45283.5", "0.10000000"), ("45283.4", "1.54582015"), ("45282.1", "0.10000000"),
            ("45281.0", "0.10000000"), ("45280.3", "1.54592586"), ("45279.0", "0.07990000"),
            ("45277.6", "0.03310103"), ("45277.5", "0.30000000"), ("45277.3", "1.54602737"),
            ("45276.6", "0.15445238")]
DOC_ASKS = [("45285.2", "0.00100000"), ("45286.4", "1.54571953"), ("45286.6", "1.54571109"),
            ("45289.6", "1.54560911"), ("45290.2", "0.15890660"), ("45291.8", "1.54553491"),
            ("45294.7", "0.04454749"), ("45296.1", "0.35380000"), ("45297.5", "0.09945542"),
            ("45299.5", "0.18772827")]
DOC_SNAPSHOT = b'''{"channel":"book","type":"snapshot","data":[{"symbol":"BTC/USD",
  "bids":[{"price":45283.5,"qty":0.10000000},{"price":45283.4,"qty":1.54582015},{"price":45282.1,"qty":0.10000000},{"price":45281.0,"qty":0.10000000},{"price":45280.3,"qty":1.54592586},{"price":45279.0,"qty":0.07990000},{"price":45277.6,"qty":0.03310103},{"price":45277.5,"qty":0.30000000},{"price":45277.3,"qty":1.54602737},{"price":45276.6,"qty":0.15445238}],
  "asks":[{"price":45285.2,"qty":0.00100000},{"price":45286.4,"qty":1.54571953},{"price":45286.6,"qty":1.54571109},{"price":45289.6,"qty":1.54560911},{"price":45290.2,"qty":0.15890660},{"price":45291.8,"qty":1.54553491},{"price":45294.7,"qty":0.04454749},{"price":45296.1,"qty":0.35380000},{"price":45297.5,"qty":0.09945542},{"price":45299.5,"qty":0.18772827}],
  "checksum":3310070434,"timestamp":"2023-10-06T17:35:55.440295Z"}]}'''
DOC_CHECKSUM = 3310070434
DOC_UPDATE = (b'{"channel":"book","type":"update","data":[{"symbol":"BTC/USD",'
              b'"bids":[{"price":45283.5,"qty":0.00000000}],'
              b'"asks":[],"checksum":2114181697,"timestamp":"2023-10-06T17:35:56.124301Z"}]}')
DOC_TRADE = (b'{"channel":"trade","type":"update","data":[\n  {"symbol":"BTC/USD","side":"buy","price":105944.20,'
             b'"qty":0.00027625,"ord_type":"limit","trade_id":10218208,"timestamp":"2023-10-06T17:35:55.440295Z"}]}')

Levels = list[tuple[str, str]]


def floats(levels: Levels) -> list[tuple[float, float]]:
    """Levels as the book holds them: the numbers of their texts."""
    return [(float(price), float(qty)) for price, qty in levels]


def doc_checksum(asks: Levels, bids: Levels) -> int:
    """The documented algorithm, spelled independently of the module under test."""
    text = ""
    for price, qty in asks[:10] + bids[:10]:
        text += str(int(price.replace(".", ""))) + str(int(qty.replace(".", "")))
    return binascii.crc32(text.encode())


def book_frame(kind: str, bids: Levels, asks: Levels, checksum: int, timestamp: str,
               symbol: str = "BTC/USD") -> bytes:
    """A v2 book frame with the numbers written as JSON numbers in exactly the given text."""
    def side(levels: Levels) -> str:
        return ",".join(f'{{"price":{p},"qty":{q}}}' for p, q in levels)

    return (f'{{"channel":"book","type":"{kind}","data":[{{"symbol":"{symbol}","bids":[{side(bids)}],'
            f'"asks":[{side(asks)}],"checksum":{checksum},"timestamp":"{timestamp}"}}]}}').encode()


def apply(levels: Levels, changes: Levels, best_first_descending: bool, depth: int) -> Levels:
    """What the book holds after ``changes`` (qty 0 deletes), truncated to ``depth``: the test's oracle."""
    book = dict(levels)
    for price, qty in changes:
        if float(qty) == 0:
            book.pop(price, None)
        else:
            book[price] = qty
    ordered = sorted(book.items(), key=lambda level: float(level[0]), reverse=best_first_descending)
    return ordered[:depth]


def ts(second: int, micros: int = 0) -> str:
    return f"2023-10-06T17:35:{second:02d}.{micros:06d}Z"


def us(second: int, micros: int = 0) -> int:
    return int(datetime(2023, 10, 6, 17, 35, second, micros, tzinfo=UTC).timestamp()) * 1_000_000 + micros


def book_config(exchanges_config: ExchangesFile) -> ExchangeConfig:
    """Kraken with trades and books, 10 levels: the depth of the documented checksum examples."""
    config = exchanges_config.exchanges["kraken"].model_copy()
    config.channels = ["trades", "book"]
    config.book_depth = 10
    return config


@pytest.fixture
def config(exchanges_config: ExchangesFile) -> ExchangeConfig:
    return book_config(exchanges_config)


@pytest.fixture
def kraken(config: ExchangeConfig) -> Kraken:
    return Kraken(config)


@pytest.fixture
def synced(kraken: Kraken) -> Kraken:
    decoded = kraken.decode([DOC_SNAPSHOT], [us(55, 500000)])
    assert len(decoded.book_events or []) == 0
    assert kraken.synced["BTC-USD"]
    return kraken


# --- checksum ------------------------------------------------------------------------------
def test_documented_snapshot_checksum_is_3310070434() -> None:
    assert kraken_checksum(DOC_ASKS, DOC_BIDS) == DOC_CHECKSUM
    assert doc_checksum(DOC_ASKS, DOC_BIDS) == DOC_CHECKSUM


def test_float_parsing_would_give_the_wrong_checksum_and_the_decoder_keeps_the_text(synced: Kraken) -> None:
    data = json.loads(DOC_SNAPSHOT)["data"][0]  # plain floats: 0.10000000 becomes 0.1
    as_floats = [[(str(level["price"]), str(level["qty"])) for level in data[side]] for side in ("asks", "bids")]
    assert kraken_checksum(*as_floats) == 1604409348
    book = synced.books["BTC-USD"]
    assert book.top("bid", 1) == [(45283.5, 0.1)]
    assert book.top("ask", 10) == floats(DOC_ASKS) and book.top("bid", 10) == floats(DOC_BIDS)
    # What the book verifies each update against: the documented text, trailing zeros included.
    assert book.checksum_text(10) == "".join(str(int(price.replace(".", ""))) + str(int(qty.replace(".", "")))
                                             for price, qty in DOC_ASKS + DOC_BIDS)


def test_snapshot_is_verified_and_emitted(kraken: Kraken) -> None:
    decoded = kraken.decode([DOC_SNAPSHOT], [us(55, 500000)])
    assert decoded.book_snapshots is not None and decoded.book_events is not None
    assert len(decoded.book_events) == 0 and decoded.actions == []
    row = decoded.book_snapshots.to_arrow().to_pylist()[0]
    assert (row["symbol"], row["native_symbol"]) == ("BTC-USD", "BTC/USD")
    assert row["timestamp"] == datetime(2023, 10, 6, 17, 35, 55, 440295, tzinfo=UTC)
    assert row["bids"][0] == {"price": 45283.5, "quantity": 0.1}
    assert row["asks"][0] == {"price": 45285.2, "quantity": 0.001}
    assert len(row["bids"]) == len(row["asks"]) == 10


def test_snapshot_with_a_wrong_checksum_is_not_trusted(kraken: Kraken) -> None:
    decoded = kraken.decode([DOC_SNAPSHOT.replace(b"3310070434", b"3310070435")], [0])
    assert decoded.book_events is not None and decoded.book_events.kinds == ["checksum_mismatch"]
    assert not kraken.synced["BTC-USD"]
    assert decoded.book_snapshots is not None and len(decoded.book_snapshots) == 0
    assert len(decoded.actions) == 1


def test_update_is_applied_then_checksummed(synced: Kraken) -> None:
    bids = apply(DOC_BIDS, [("45283.5", "0.00000000")], True, 10)
    expected = doc_checksum(DOC_ASKS, bids)
    decoded = synced.decode([DOC_UPDATE.replace(b"2114181697", str(expected).encode())], [us(56, 200000)])
    assert decoded.book_events is not None and len(decoded.book_events) == 0
    assert decoded.actions == []
    assert synced.books["BTC-USD"].top("bid", 10) == floats(bids)
    assert synced.synced["BTC-USD"]


def test_documented_update_with_its_illustrative_checksum_is_a_mismatch(synced: Kraken) -> None:
    decoded = synced.decode([DOC_UPDATE], [us(56, 200000)])
    assert decoded.book_events is not None and decoded.book_events.kinds == ["checksum_mismatch"]


def test_tampered_update_records_mismatch_resubscribes_and_waits_for_the_snapshot(synced: Kraken) -> None:
    bids = apply(DOC_BIDS, [("45283.5", "0.00000000")], True, 10)
    good = doc_checksum(DOC_ASKS, bids)
    tampered = book_frame("update", [("45283.5", "0.00000000")], [], good ^ 1, ts(56, 100000))
    decoded = synced.decode([tampered], [us(56, 200000)])
    events = decoded.book_events
    assert events is not None and events.kinds == ["checksum_mismatch"] and events.symbols == ["BTC-USD"]
    assert str(good ^ 1) in events.details[0] and str(good) in events.details[0]
    assert events.timestamps_us == [us(56, 200000)]  # when the platform detected it
    assert not synced.synced["BTC-USD"]
    assert decoded.book_snapshots is not None and len(decoded.book_snapshots) == 0
    assert len(decoded.actions) == 1 and isinstance(decoded.actions[0], SendFrames)
    unsubscribe, subscribe = (json.loads(f) for f in decoded.actions[0].frames)
    assert unsubscribe["method"] == "unsubscribe"
    assert unsubscribe["params"] == {"channel": "book", "symbol": ["BTC/USD"], "depth": 10}
    assert subscribe["method"] == "subscribe"
    assert subscribe["params"] == {"channel": "book", "symbol": ["BTC/USD"], "depth": 10, "snapshot": True}
    assert len({unsubscribe["req_id"], subscribe["req_id"], 1, 2, 3, 4}) == 6  # distinct from all others

    # Updates before the new snapshot are ignored, whatever their checksum: no emission, no new event.
    later = book_frame("update", [("45283.4", "2.00000000")], [], 0, ts(57, 100000))
    decoded = synced.decode([later], [us(57, 200000)])
    assert decoded.book_events is not None and len(decoded.book_events) == 0
    assert decoded.book_snapshots is not None and len(decoded.book_snapshots) == 0
    assert decoded.actions == []

    fresh = DOC_SNAPSHOT.replace(b"17:35:55.440295", b"17:35:58.000000")
    decoded = synced.decode([fresh], [us(58, 100000)])
    assert decoded.book_events is not None and decoded.book_events.kinds == ["resync"]
    assert decoded.book_snapshots is not None and len(decoded.book_snapshots) == 1
    assert synced.synced["BTC-USD"]
    assert synced.books["BTC-USD"].top("bid", 10) == floats(DOC_BIDS)


def test_exponent_notation_is_expanded_to_plain_digits(kraken: Kraken) -> None:
    bids = [("45283.5", "1e-05")]
    asks = [("45285.2", "0.00100000")]
    frame = book_frame("snapshot", bids, asks, doc_checksum(asks, [("45283.5", "0.00001")]), ts(55))
    decoded = kraken.decode([frame], [0])
    assert decoded.book_events is not None and len(decoded.book_events) == 0
    assert kraken.books["BTC-USD"].top("bid", 1) == [(45283.5, 1e-05)]


def test_levels_pushed_beyond_the_depth_are_dropped_without_a_delete(synced: Kraken) -> None:
    assert synced.depth == 10
    new_bids = [("45284.0", "0.50000000"), ("45283.9", "0.25000000")]
    new_asks = [("45285.0", "1.00000000")]
    bids = apply(DOC_BIDS, new_bids, True, 10)
    asks = apply(DOC_ASKS, new_asks, False, 10)
    assert ("45277.3", "1.54602737") not in bids and ("45299.5", "0.18772827") not in asks
    frame = book_frame("update", new_bids, new_asks, doc_checksum(asks, bids), ts(56))
    decoded = synced.decode([frame], [us(56, 1)])
    assert decoded.book_events is not None and len(decoded.book_events) == 0
    book = synced.books["BTC-USD"]
    assert len(book.bids) == len(book.asks) == 10
    assert book.top("bid", 20) == floats(bids) and book.top("ask", 20) == floats(asks)


def test_several_updates_in_one_frame_are_applied_in_order(synced: Kraken) -> None:
    first = apply(DOC_BIDS, [("45283.5", "0.00000000")], True, 10)
    second = apply(first, [("45283.5", "0.20000000")], True, 10)
    one = book_frame("update", [("45283.5", "0.00000000")], [], doc_checksum(DOC_ASKS, first), ts(56))
    two = book_frame("update", [("45283.5", "0.20000000")], [], doc_checksum(DOC_ASKS, second), ts(56))
    # Splice the second entry into the first frame's data[] as text (json.dumps would reformat numbers).
    frame = one[:-2] + b"," + two[two.index(b"[") + 1:]
    decoded = synced.decode([frame], [us(56, 1)])
    assert decoded.book_events is not None and len(decoded.book_events) == 0
    assert synced.books["BTC-USD"].top("bid", 1) == [(45283.5, 0.2)]


# --- emission cadence ------------------------------------------------------------------------
def updates_for(seconds: list[tuple[int, int]], synced: Kraken) -> list[bytes]:
    frames, bids = [], DOC_BIDS
    for n, (second, micros) in enumerate(seconds):
        change = [("45276.6", f"0.{n + 1}0000000")]
        bids = apply(bids, change, True, 10)
        frames.append(book_frame("update", change, [], doc_checksum(DOC_ASKS, bids), ts(second, micros)))
    return frames


def test_emits_once_per_interval_in_exchange_time(synced: Kraken) -> None:
    frames = updates_for([(56, 100000), (56, 900000), (57, 50000)], synced)
    decoded = synced.decode(frames, [us(59)] * 3)  # receive time does not matter, exchange time does
    assert decoded.book_events is not None and len(decoded.book_events) == 0
    assert decoded.book_snapshots is not None
    assert decoded.book_snapshots.timestamps_us == [us(56, 100000), us(57, 50000)]
    assert [bids[-1][1] for bids in decoded.book_snapshots.bids] == [0.1, 0.3]


def test_a_crossed_book_is_never_emitted(synced: Kraken) -> None:
    crossing = [("45290.0", "1.00000000")]  # a bid above the best ask
    bids = apply(DOC_BIDS, crossing, True, 10)
    frame = book_frame("update", crossing, [], doc_checksum(DOC_ASKS, bids), ts(56))
    decoded = synced.decode([frame], [us(56, 1)])
    assert decoded.book_events is not None and len(decoded.book_events) == 0
    assert synced.books["BTC-USD"].crossed()
    assert decoded.book_snapshots is not None and len(decoded.book_snapshots) == 0


def test_a_new_connection_waits_for_a_fresh_snapshot(synced: Kraken) -> None:
    update = updates_for([(56, 0)], synced)[0]
    decoded = synced.decode([b"ws://127.0.0.1/kraken/v2", update, DOC_SNAPSHOT.replace(b"17:35:55", b"17:35:57")],
                            [1, 2, 3], [RecordKind.CONNECTED, RecordKind.FRAME, RecordKind.FRAME])
    assert decoded.book_events is not None and len(decoded.book_events) == 0  # no resync: nothing failed
    assert decoded.book_snapshots is not None and decoded.book_snapshots.timestamps_us == [us(57, 440295)]


def test_a_resubscribe_asked_before_a_reconnect_is_dropped(synced: Kraken) -> None:
    decoded = synced.decode([DOC_UPDATE, b"ws://127.0.0.1/kraken/v2"], [1, 2], [RecordKind.FRAME, RecordKind.CONNECTED])
    assert decoded.book_events is not None and decoded.book_events.kinds == ["checksum_mismatch"]
    assert decoded.actions == []  # the new connection subscribes with a fresh snapshot anyway


def test_book_counters_are_kept_for_the_run_and_the_importer(synced: Kraken) -> None:
    good = updates_for([(56, 0)], synced)[0]
    synced.decode([good, DOC_UPDATE, good], [1, 2, 3])
    assert synced.counters["snapshots_applied"] == 1
    assert synced.counters["book_updates_applied"] == 2
    assert synced.counters["checksums_passed"] == 2  # the snapshot and the first update
    assert synced.counters["checksums_failed"] == 1
    assert synced.counters["book_updates_ignored"] == 1


def test_resubscribing_stops_when_snapshots_keep_failing(kraken: Kraken) -> None:
    bad = DOC_SNAPSHOT.replace(b"3310070434", b"1")
    decoded = kraken.decode([bad] * (MAX_RESUBSCRIBES + 2), [0] * (MAX_RESUBSCRIBES + 2))
    assert len(decoded.actions) == MAX_RESUBSCRIBES
    assert decoded.book_events is not None
    assert decoded.book_events.kinds.count("resync_abandoned") == 1
    decoded = kraken.decode([b"ws://127.0.0.1/kraken/v2", bad], [1, 2], [RecordKind.CONNECTED, RecordKind.FRAME])
    assert len(decoded.actions) == 1  # a new connection gets a new budget


# --- trades ----------------------------------------------------------------------------------
def test_documented_trade_decodes_to_normalized_columns(kraken: Kraken) -> None:
    decoded = kraken.decode([DOC_TRADE], [1696613755500000])
    assert decoded.trades.to_pylist() == [{
        "exchange": "kraken", "symbol": "BTC-USD", "native_symbol": "BTC/USD", "trade_id": "10218208",
        "price": 105944.20, "quantity": 0.00027625, "side": "buy",
        "timestamp": datetime(2023, 10, 6, 17, 35, 55, 440295, tzinfo=UTC),
        "received_at": datetime(2023, 10, 6, 17, 35, 55, 500000, tzinfo=UTC), "frame_index": 0,
        "symbol_code": kraken.symbols.index("BTC-USD"),
    }]
    assert len(decoded.rejects) == 0 and decoded.control_frames == 0


def test_a_trade_snapshot_with_several_entries_gives_one_row_each(kraken: Kraken) -> None:
    message = json.loads(DOC_TRADE)
    sell = {**message["data"][0], "side": "sell", "trade_id": 10218209, "symbol": "ETH/USD"}
    frame = json.dumps({**message, "type": "snapshot", "data": [message["data"][0], sell]}).encode()
    trades = kraken.decode([frame, DOC_TRADE.replace(b"10218208", b"10218209")], [0, 0]).trades
    assert trades.column("symbol").to_pylist() == ["BTC-USD", "ETH-USD", "BTC-USD"]
    assert trades.column("side").to_pylist() == ["buy", "sell", "buy"]
    assert trades.column("frame_index").to_pylist() == [0, 0, 1]


def test_frame_index_counts_every_record(kraken: Kraken) -> None:
    decoded = kraken.decode([b"ws://127.0.0.1/kraken/v2", DOC_TRADE], [0, 0], [RecordKind.CONNECTED, RecordKind.FRAME])
    assert decoded.trades.column("frame_index").to_pylist() == [1]


def test_control_frames_are_counted_not_rejected(kraken: Kraken) -> None:
    frames = [
        b'{"channel":"heartbeat"}',
        b'{"channel":"status","type":"update","data":[{"version":"2.0.0","system":"online","api_version":"v2",'
        b'"connection_id":123,"websocket_connections":1}]}',
        b'{"method":"subscribe","result":{"channel":"book","symbol":"BTC/USD","depth":10,"snapshot":true},'
        b'"success":true,"time_in":"2023-10-06T17:35:55.000000Z","time_out":"2023-10-06T17:35:55.000100Z","req_id":2}',
        b'{"method":"pong","req_id":101,"time_in":"2023-10-06T17:35:55.000000Z","time_out":"2023-10-06T17:35:55.1Z"}',
        DOC_TRADE,
    ]
    decoded = kraken.decode(frames, [0] * len(frames))
    assert decoded.control_frames == 4
    assert len(decoded.rejects) == 0
    assert decoded.trades.num_rows == 1


def test_failed_subscribe_is_an_exchange_error(kraken: Kraken) -> None:
    frame = (b'{"error":"Currency pair not supported XBT/USD","method":"subscribe","success":false,'
             b'"symbol":"XBT/USD","time_in":"2023-10-06T17:35:55Z","time_out":"2023-10-06T17:35:55Z","req_id":1}')
    decoded = kraken.decode([frame], [0])
    assert decoded.rejects.reasons == ["exchange_error"]
    assert "Currency pair not supported" in decoded.rejects.details[0]


def test_truncated_frame_is_quarantined_with_its_raw_text(kraken: Kraken) -> None:
    truncated = DOC_TRADE[:50]
    decoded = kraken.decode([truncated, DOC_TRADE], [5, 6])
    assert decoded.rejects.reasons == ["malformed_json"]
    assert decoded.rejects.raws == [truncated.decode()]
    assert decoded.trades.num_rows == 1


def test_wrong_typed_trade_field_is_quarantined_and_names_the_field(kraken: Kraken) -> None:
    wrong = DOC_TRADE.replace(b'"price":105944.20', b'"price":"105944.20"')
    decoded = kraken.decode([wrong], [0])
    assert decoded.rejects.reasons == ["wrong_type"]
    assert "$.data[0].price" in decoded.rejects.details[0]


def test_wrong_typed_book_level_is_quarantined(synced: Kraken) -> None:
    wrong = DOC_UPDATE.replace(b'"qty":0.00000000', b'"qty":"0.00000000"')
    decoded = synced.decode([wrong], [0])
    assert decoded.rejects.reasons == ["wrong_type"]
    assert synced.books["BTC-USD"].top("bid", 1) == [(45283.5, 0.1)]  # not applied
    # The book missed an update, so it is no longer trusted: recorded, and resynced.
    assert decoded.book_events is not None and decoded.book_events.kinds == ["update_rejected"]
    assert not synced.synced["BTC-USD"]
    assert len(decoded.actions) == 1


def test_bad_trade_timestamp_is_quarantined_alone(kraken: Kraken) -> None:
    bad = DOC_TRADE.replace(b"2023-10-06T17:35:55.440295Z", b"yesterday")
    decoded = kraken.decode([bad, DOC_TRADE], [0, 0])
    assert decoded.rejects.reasons == ["wrong_type"]
    assert decoded.trades.column("frame_index").to_pylist() == [1]


def test_a_channel_we_did_not_subscribe_is_counted_as_ignored(kraken: Kraken) -> None:
    decoded = kraken.decode([b'{"channel":"ticker","type":"update","data":[]}'], [0])
    assert decoded.rejects.reasons == [] and decoded.ignored_frames == 1


def test_unknown_symbol_is_quarantined(kraken: Kraken) -> None:
    decoded = kraken.decode([DOC_TRADE.replace(b"BTC/USD", b"FOO/USD"),
                             DOC_SNAPSHOT.replace(b"BTC/USD", b"FOO/USD")], [0, 0])
    assert decoded.rejects.reasons == ["unknown_symbol", "unknown_symbol"]
    assert decoded.trades.num_rows == 0


# --- subscriptions ---------------------------------------------------------------------------
def test_subscribe_frames_follow_the_documented_shape(kraken: Kraken) -> None:
    trade, book = (json.loads(frame) for frame in kraken.subscribe_frames())
    natives = [s.replace("-", "/") for s in kraken.symbols]
    assert trade == {"method": "subscribe", "params": {"channel": "trade", "symbol": natives, "snapshot": False},
                     "req_id": 1}
    assert book == {"method": "subscribe",
                    "params": {"channel": "book", "symbol": natives, "depth": 10, "snapshot": True}, "req_id": 2}
    assert "BTC/USD" in natives and "DOGE/USD" in natives


def test_no_book_subscription_without_the_book_channel(config: ExchangeConfig) -> None:
    config.channels = ["trades"]
    frames = [json.loads(frame) for frame in Kraken(config).subscribe_frames()]
    assert [frame["params"]["channel"] for frame in frames] == ["trade"]


@pytest.mark.parametrize(("book_depth", "depth"), [(1, 10), (10, 10), (20, 25), (26, 100), (500, 500), (1000, 1000)])
def test_book_depth_is_the_smallest_allowed_that_covers_the_emitted_levels(book_depth: int, depth: int) -> None:
    assert subscription_depth(book_depth) == depth


def unsubscribe_ack(req_id: int, channel: str, symbol: str) -> bytes:
    return json.dumps({"method": "unsubscribe", "result": {"channel": channel, "symbol": symbol}, "success": True,
                       "time_in": "2023-10-06T17:35:55Z", "time_out": "2023-10-06T17:35:55Z",
                       "req_id": req_id}).encode()


def test_drain_ends_with_the_last_expected_unsubscribe_ack(kraken: Kraken) -> None:
    requests = [json.loads(frame) for frame in kraken.unsubscribe_frames()]
    assert [r["method"] for r in requests] == ["unsubscribe", "unsubscribe"]
    assert [r["params"]["channel"] for r in requests] == ["trade", "book"]
    assert len({r["req_id"] for r in requests} | {1, 2}) == 4
    acks = [unsubscribe_ack(r["req_id"], r["params"]["channel"], symbol)
            for r in requests for symbol in r["params"]["symbol"]]
    assert not kraken.is_unsubscribe_ack(DOC_TRADE)
    assert not kraken.is_unsubscribe_ack(b'{"method":"subscribe","success":true,"req_id":1}')
    assert not kraken.is_unsubscribe_ack(unsubscribe_ack(1000, "book", "BTC/USD"))  # a resync's ack
    assert [kraken.is_unsubscribe_ack(ack) for ack in acks] == [False] * (len(acks) - 1) + [True]


def test_drain_acks_are_counted_in_any_order(kraken: Kraken) -> None:
    requests = [json.loads(frame) for frame in kraken.unsubscribe_frames()]
    acks = [unsubscribe_ack(r["req_id"], r["params"]["channel"], symbol)
            for r in requests for symbol in r["params"]["symbol"]]
    acks.reverse()
    assert [kraken.is_unsubscribe_ack(ack) for ack in acks][-2:] == [False, True]


def test_the_registry_finds_exactly_the_v2_exchange() -> None:
    assert exchange_class("kraken") is Kraken


def test_a_wrong_typed_book_field_leaves_the_rest_of_its_batch_as_if_decoded_alone(synced: Kraken) -> None:
    # The batch decode types the book entries; a frame it refuses sends the batch frame by frame, where the
    # entries are decoded per message: the same reject, the update before it applied and verified, and the book
    # resynced from there, as for that frame alone.
    frames = updates_for([(56, 100000), (56, 200000), (57, 300000)], synced)
    wrong = frames[1].replace(b'"checksum":', b'"checksum":"').replace(b',"timestamp"', b'","timestamp"')
    decoded = synced.decode([frames[0], wrong, frames[2]], [us(56, 1), us(56, 2), us(57, 3)])
    assert decoded.rejects.reasons == ["wrong_type"] and "$.data[0].checksum" in decoded.rejects.details[0]
    assert decoded.book_events is not None and decoded.book_events.kinds == ["update_rejected"]
    assert synced.counters["checksums_passed"] == 2  # the snapshot and the first update; the last awaits a snapshot
    assert synced.books["BTC-USD"].top("bid", 10)[-1] == (45276.6, 0.1)  # as the first update set it
    assert not synced.synced["BTC-USD"] and len(decoded.actions) == 1


def test_wrong_typed_book_field_is_quarantined_and_names_the_field(synced: Kraken) -> None:
    wrong = DOC_UPDATE.replace(b'"checksum":2114181697', b'"checksum":"2114181697"')
    decoded = synced.decode([wrong], [0])
    assert decoded.rejects.reasons == ["wrong_type"]
    assert "$.data[0].checksum" in decoded.rejects.details[0]
    assert synced.books["BTC-USD"].top("bid", 1) == [(45283.5, 0.1)]  # not applied
    # The book missed an update, so it is no longer trusted: recorded, and resynced.
    assert decoded.book_events is not None and decoded.book_events.kinds == ["update_rejected"]
    assert not synced.synced["BTC-USD"] and len(decoded.actions) == 1


def test_book_level_beyond_a_float_is_quarantined_and_resynced(synced: Kraken) -> None:
    decoded = synced.decode([DOC_UPDATE.replace(b'"qty":0.00000000', b'"qty":1e400')], [0])
    assert decoded.rejects.reasons == ["wrong_type"] and "finite" in decoded.rejects.details[0]
    assert decoded.book_events is not None and decoded.book_events.kinds == ["update_rejected"]
    assert not synced.synced["BTC-USD"]


# --- the compiled scan of trade updates --------------------------------------------------------------------------
def trade_update(*trades: dict[str, object], kind: str = "update") -> bytes:
    return json.dumps({"channel": "trade", "type": kind, "data": list(trades)}).encode()


def kraken_trade(trade_id: int, **changed: object) -> dict[str, object]:
    return {"symbol": "BTC/USD", "side": "buy" if trade_id % 3 else "sell", "price": 105944.2 + trade_id % 97 / 10,
            "qty": 0.00027625, "ord_type": "limit", "trade_id": trade_id, "timestamp": ts(55, trade_id % 10**6),
            **changed}


def stream(seed: int) -> list[bytes]:
    """Trade updates over a few chunks of frames, with what is not one sprinkled in: books, heartbeats, trade
    snapshots, empty updates, unknown pairs, bad times, number texts (which the strict decode refuses), broken
    frames, and trades lost or repeated."""
    chance = random.Random(seed)
    frames = [DOC_SNAPSHOT]
    trade_id = 1000
    for _ in range(700):
        roll = chance.random()
        trade_id += chance.choice([1, 1, 1, 1, 1, 1, 3, -2]) if roll < 0.1 else 1
        if roll < 0.02:
            frames.append(DOC_UPDATE)
        elif roll < 0.04:
            frames.append(b'{"channel":"heartbeat"}')
        elif roll < 0.05:
            frames.append(trade_update(kraken_trade(trade_id), kind="snapshot"))
        elif roll < 0.06:
            frames.append(trade_update())
        elif roll < 0.07:
            frames.append(trade_update(kraken_trade(trade_id, symbol="DOGE/USD")))
        elif roll < 0.08:
            frames.append(trade_update(kraken_trade(trade_id, timestamp="yesterday")))
        elif roll < 0.09:
            frames.append(trade_update(kraken_trade(trade_id, price="105944.2")))
        elif roll < 0.10:
            frames.append(trade_update(kraken_trade(trade_id))[:-4])
        else:
            count = chance.choice([1, 1, 1, 2, 4])
            frames.append(trade_update(*(kraken_trade(trade_id + k) for k in range(count))))
            trade_id += count
    return frames


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("chunk", [7, record_decoder.DECODE_CHUNK])  # the scan reads the first frames of each
def test_a_stream_decodes_the_same_with_and_without_the_scan(config: ExchangeConfig, seed: int, chunk: int,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record_decoder, "DECODE_CHUNK", chunk)
    assert_the_scan_changes_nothing(Kraken, config, list(stream(seed)))


def test_trade_updates_are_read_by_the_compiled_scan(kraken: Kraken) -> None:
    frames = [trade_update(kraken_trade(i), kraken_trade(i + 100)) for i in range(5)]
    frames.insert(3, trade_update(kraken_trade(9, price="1.5")))  # a number text: the decode's to refuse
    out = DecodeOutput.for_exchange("kraken")
    assert kraken.scan_frames(frames, 0, len(frames), out) == 3
    assert out.columns is not None and len(out.columns) == 6
