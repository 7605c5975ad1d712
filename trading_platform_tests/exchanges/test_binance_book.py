"""Binance Spot order books: the local order book procedure of exchange-protocols.md §1 (2025-11-12 text)."""

from __future__ import annotations

import json

import pytest

from trading_platform.config import Endpoints, ExchangeConfig, ExchangesFile
from trading_platform.exchanges.binance import SNAPSHOT_LIMIT, Binance
from trading_platform.exchanges.decoded import DecodedFrames, FetchSnapshot, Reconnect, RecordKind
from trading_platform.settings import ConfigError

DOC_DEPTH = (b'{"e": "depthUpdate", "E": 1672515782136, "s": "BNBBTC", "U": 157, "u": 160, '
             b'"b": [["0.0024", "10"]], "a": [["0.0026", "100"]]}')
DOC_SNAPSHOT = (b'{"lastUpdateId": 1027024, "bids": [["4.00000000", "431.00000000"]], '
                b'"asks": [["4.00000200", "12.00000000"]]}')
NKN_FRAME = (b'{"stream":"nknusdt@depth@100ms","data":{"e":"depthUpdate","E":1633998512068,"s":"NKNUSDT",'
             b'"U":499869750,"u":499869752,"b":[["0.35130000","6195.00000000"],["0.34750000","5548.00000000"],'
             b'["0.34640000","6222.00000000"]],"a":[]}}')
DOC_TRADE = (b'{"e": "trade", "E": 1672515782136, "s": "BNBBTC", "t": 12345, "p": "0.001", "q": "100", '
             b'"T": 1672515782136, "m": true, "M": true}')
REST_URL = "http://127.0.0.1:9/binance"
T0_MS = 1_700_000_000_000  # a cadence-bucket boundary (1 s)

Level = list[str]  # [price, quantity] as Binance sends it
Record = tuple[RecordKind, bytes]


def combined(payload: bytes, stream: str) -> bytes:
    return b'{"stream":"' + stream.encode() + b'","data":' + payload + b"}"


def depth(first: int, last: int, event_ms: int = T0_MS, bids: list[Level] | None = None,
          asks: list[Level] | None = None, native: str = "BNBBTC") -> Record:
    payload = {"e": "depthUpdate", "E": event_ms, "s": native, "U": first, "u": last,
               "b": bids or [], "a": asks or []}
    return RecordKind.FRAME, combined(json.dumps(payload).encode(), f"{native.lower()}@depth@100ms")


def snapshot(last_update_id: int, bids: list[Level], asks: list[Level], symbol: str = "BNB-BTC") -> Record:
    body = json.dumps({"lastUpdateId": last_update_id, "bids": bids, "asks": asks}).encode()
    return RecordKind.REST, symbol.encode() + b"\n" + body


def feed(exchange: Binance, *records: Record) -> DecodedFrames:
    """Decode records in one call, in order, received 1 ms apart."""
    return exchange.decode([payload for _, payload in records], [1_000 * i for i in range(len(records))],
                           [kind for kind, _ in records])


def fetch(symbol: str = "BNB-BTC", native: str = "BNBBTC") -> FetchSnapshot:
    return FetchSnapshot(symbol, f"{REST_URL}/api/v3/depth?symbol={native}&limit={SNAPSHOT_LIMIT}")


BIDS: list[Level] = [["100.0", "1"], ["99.0", "2"]]
ASKS: list[Level] = [["101.0", "1"], ["102.0", "2"]]


def make(exchanges_config: ExchangesFile, **changes: object) -> Binance:
    config: ExchangeConfig = exchanges_config.exchanges["binance"].model_copy()
    config.symbols = [*config.symbols, "BNB-BTC", "NKN-USDT"]
    config.channels = ["trades", "book"]
    for key, value in changes.items():
        setattr(config, key, value)
    exchange = Binance(config)
    exchange.use_endpoints(Endpoints(ws_url="ws://127.0.0.1:9/binance/stream", rest_url=REST_URL))
    return exchange


@pytest.fixture
def binance(exchanges_config: ExchangesFile) -> Binance:
    return make(exchanges_config)


@pytest.fixture
def synced(binance: Binance) -> Binance:
    """BNB-BTC synced from a snapshot (id 10) plus one buffered event: book id 11, last emission before T0."""
    feed(binance, (RecordKind.CONNECTED, b"ws://127.0.0.1/b"), depth(9, 11, T0_MS - 1), snapshot(10, BIDS, ASKS))
    assert binance.synced["BNB-BTC"] and binance.books["BNB-BTC"].sequence == 11
    return binance


# --- subscription --------------------------------------------------------------------------------
def test_connect_url_adds_depth_streams_when_book_is_configured(binance: Binance) -> None:
    url = binance.use_endpoints(Endpoints(ws_url="ws://127.0.0.1/binance/stream", rest_url=REST_URL))
    streams = url.split("?streams=")[1].split("/")
    assert "btcusdt@trade" in streams and "btcusdt@depth@100ms" in streams and "bnbbtc@depth@100ms" in streams
    assert binance.subscribe_frames() == []


def test_unsubscribe_covers_the_depth_streams(binance: Binance) -> None:
    params = json.loads(binance.unsubscribe_frames()[0])["params"]
    assert "nknusdt@depth@100ms" in params and "nknusdt@trade" in params


def test_trades_only_config_has_no_depth_streams(exchanges_config: ExchangesFile) -> None:
    binance = make(exchanges_config, channels=["trades"])
    assert "@depth" not in binance.use_endpoints(Endpoints(ws_url="ws://127.0.0.1/stream"))


def test_more_than_1024_streams_is_a_config_error(exchanges_config: ExchangesFile) -> None:
    with pytest.raises(ConfigError, match="1024"):
        make(exchanges_config, symbols=[f"A{i:03d}-USDT" for i in range(513)])


# --- sync procedure ------------------------------------------------------------------------------
def test_first_buffered_event_asks_for_one_snapshot_from_the_connected_rest_url(binance: Binance) -> None:
    decoded = feed(binance, depth(1, 2), depth(3, 4), depth(5, 6))
    assert decoded.actions == [fetch()]
    assert not binance.synced["BNB-BTC"]


def test_documented_event_straddling_the_snapshot_is_applied(binance: Binance) -> None:
    frame = (RecordKind.FRAME, combined(DOC_DEPTH, "bnbbtc@depth@100ms"))
    feed(binance, frame, snapshot(158, [["0.0023", "5"]], [["0.0027", "7"]]))  # U=157 <= 159 <= u=160
    book = binance.books["BNB-BTC"]
    assert binance.synced["BNB-BTC"]
    assert book.sequence == 160
    assert book.top("bid", 5) == [(0.0024, 10.0), (0.0023, 5.0)]
    assert book.top("ask", 5) == [(0.0026, 100.0), (0.0027, 7.0)]


def test_documented_snapshot_sets_the_book(binance: Binance) -> None:
    feed(binance, depth(1027020, 1027030), (RecordKind.REST, b"BNB-BTC\n" + DOC_SNAPSHOT))
    book = binance.books["BNB-BTC"]
    assert binance.synced["BNB-BTC"]
    assert book.top("bid", 1) == [(4.0, 431.0)] and book.top("ask", 1) == [(4.000002, 12.0)]
    assert book.sequence == 1027030


def test_buffered_events_older_than_the_snapshot_are_dropped(binance: Binance) -> None:
    feed(binance, depth(5, 6, bids=[["90.0", "5"]]), depth(7, 10, bids=[["91.0", "5"]]),
         depth(11, 12, bids=[["92.0", "5"]]), snapshot(10, BIDS, ASKS))
    book = binance.books["BNB-BTC"]
    assert book.sequence == 12
    assert 90.0 not in book.bids and 91.0 not in book.bids and 92.0 in book.bids


def test_snapshot_older_than_the_first_buffered_event_is_stale_and_fetched_again(binance: Binance) -> None:
    decoded = feed(binance, depth(20, 25), snapshot(19, BIDS, ASKS))
    assert decoded.book_events is not None
    assert decoded.book_events.kinds == ["stale_snapshot"]
    assert decoded.actions == [fetch(), fetch()]
    assert not binance.synced["BNB-BTC"]
    feed(binance, snapshot(22, BIDS, ASKS))  # the re-fetched one is accepted
    assert binance.synced["BNB-BTC"] and binance.books["BNB-BTC"].sequence == 25


def test_gap_between_snapshot_and_buffered_events_restarts(binance: Binance) -> None:
    decoded = feed(binance, depth(20, 25), depth(32, 45), snapshot(30, BIDS, ASKS))  # 31 is missing
    assert decoded.book_events is not None
    assert decoded.book_events.kinds == ["sequence_gap"]
    assert decoded.book_events.details == ["snapshot lastUpdateId=30: expected U<=31, got U=32 u=45"]
    assert decoded.book_events.timestamps_us == [2_000]  # when the snapshot showed it (third record)
    assert decoded.actions == [fetch(), fetch()]
    assert not binance.synced["BNB-BTC"]


def test_qty_zero_removes_the_level(synced: Binance) -> None:
    feed(synced, depth(12, 12, bids=[["99.0", "0.00000000"]], asks=[["103.0", "4"]]))
    book = synced.books["BNB-BTC"]
    assert 99.0 not in book.bids
    assert book.top("ask", 3) == [(101.0, 1.0), (102.0, 2.0), (103.0, 4.0)]


def test_event_already_in_the_book_is_ignored(synced: Binance) -> None:
    decoded = feed(synced, depth(5, 9, bids=[["50.0", "1"]]))
    assert 50.0 not in synced.books["BNB-BTC"].bids
    assert decoded.actions == [] and synced.books["BNB-BTC"].sequence == 11


def test_gap_after_sync_records_event_unsyncs_and_asks_again(synced: Binance) -> None:
    decoded = feed(synced, depth(15, 16, T0_MS + 1000), depth(17, 18, T0_MS + 2000))
    assert decoded.book_events is not None
    assert decoded.book_events.kinds == ["sequence_gap"]
    assert decoded.book_events.details == ["expected U=12, got U=15 u=16"]
    assert not synced.synced["BNB-BTC"] and not synced.books["BNB-BTC"].bids
    assert decoded.actions == [fetch()]
    assert decoded.book_snapshots is not None and len(decoded.book_snapshots) == 0


def test_a_gap_is_stamped_with_the_time_it_was_received_not_the_exchange_time(synced: Binance) -> None:
    # Event time E is 0.25 s before the frame arrived: the book was emitted (in sync as far as anyone could know)
    # until then, so the gap is dated when the frame that showed it was received, as every book event is.
    received_us = (T0_MS + 1250) * 1000
    decoded = synced.decode([depth(15, 16, T0_MS + 1000)[1]], [received_us])
    assert decoded.book_events is not None and decoded.book_events.timestamps_us == [received_us]


def test_one_missing_update_id_is_a_gap(synced: Binance) -> None:
    decoded = feed(synced, depth(13, 13))  # book id 11: 12 is missing
    assert decoded.book_events is not None and decoded.book_events.kinds == ["sequence_gap"]
    assert not synced.synced["BNB-BTC"]


def test_resync_after_a_gap_is_recorded_and_emission_resumes(synced: Binance) -> None:
    feed(synced, depth(15, 16, T0_MS + 1000))
    decoded = feed(synced, snapshot(15, BIDS, ASKS), depth(17, 17, T0_MS + 2000))
    assert decoded.book_events is not None and decoded.book_events.kinds == ["resync"]
    assert synced.synced["BNB-BTC"] and synced.books["BNB-BTC"].sequence == 17
    assert decoded.book_snapshots is not None
    assert decoded.book_snapshots.sequences == [16, 17]  # buffered 15..16 at T0+1 s, live 17 at T0+2 s


def test_connected_resets_books_buffers_and_pending_requests(synced: Binance) -> None:
    feed(synced, depth(12, 12, T0_MS + 1))
    decoded = feed(synced, (RecordKind.CONNECTED, b"ws://127.0.0.1/b"), depth(500, 501))
    assert not synced.synced["BNB-BTC"] and not synced.books["BNB-BTC"].bids
    assert decoded.actions == [fetch()]  # the new connection asks afresh


def test_snapshot_answering_a_request_forgotten_at_reconnect_is_ignored(binance: Binance) -> None:
    feed(binance, depth(1, 2))
    decoded = feed(binance, (RecordKind.CONNECTED, b"ws://127.0.0.1/b"), snapshot(5, BIDS, ASKS))
    assert not binance.synced["BNB-BTC"]
    assert decoded.control_frames == 1 and len(decoded.rejects) == 0


def test_garbage_rest_body_is_a_bad_snapshot_and_fetched_again(binance: Binance) -> None:
    feed(binance, depth(1, 2))
    decoded = feed(binance, (RecordKind.REST, b"BNB-BTC\n<html>502 Bad Gateway</html>"),
                   (RecordKind.REST, b'BNB-BTC\n{"code": -1003, "msg": "Too many requests"}'))
    assert decoded.rejects.reasons == ["bad_snapshot", "bad_snapshot"]
    assert decoded.rejects.raws[0] == "BNB-BTC\n<html>502 Bad Gateway</html>"
    assert decoded.actions == [fetch(), fetch()]
    assert not binance.synced["BNB-BTC"]


# --- emission ------------------------------------------------------------------------------------
def test_snapshots_are_emitted_once_per_cadence_bucket_in_exchange_time(synced: Binance) -> None:
    decoded = feed(synced, depth(12, 12, T0_MS), depth(13, 13, T0_MS + 500), depth(14, 14, T0_MS + 1000),
                   depth(15, 15, T0_MS + 1999), depth(16, 16, T0_MS + 3000))
    assert decoded.book_snapshots is not None
    assert decoded.book_snapshots.timestamps_us == [T0_MS * 1000, (T0_MS + 1000) * 1000, (T0_MS + 3000) * 1000]
    assert decoded.book_snapshots.sequences == [12, 14, 16]
    assert decoded.book_snapshots.bids[0] == [(100.0, 1.0), (99.0, 2.0)]


def test_crossed_book_is_never_emitted(synced: Binance) -> None:
    crossed = feed(synced, depth(12, 12, T0_MS, bids=[["101.5", "1"]], asks=[["101.0", "0"], ["101.2", "3"]]))
    assert synced.books["BNB-BTC"].crossed()
    assert crossed.book_snapshots is not None and len(crossed.book_snapshots) == 0
    uncrossed = feed(synced, depth(13, 13, T0_MS + 100, bids=[["101.5", "0"]]))
    assert uncrossed.book_snapshots is not None and uncrossed.book_snapshots.sequences == [13]


def test_recorded_2021_nknusdt_frame_applies_to_its_book(binance: Binance) -> None:
    feed(binance, (RecordKind.FRAME, NKN_FRAME),
         snapshot(499869751, [["0.35120000", "100.00000000"]], [["0.35200000", "50.00000000"]], "NKN-USDT"))
    book = binance.books["NKN-USDT"]
    assert binance.synced["NKN-USDT"] and book.sequence == 499869752
    assert book.top("bid", 2) == [(0.3513, 6195.0), (0.3512, 100.0)]
    decoded = feed(binance, depth(499869753, 499869753, 1633998513000, native="NKNUSDT"))
    assert decoded.book_snapshots is not None and decoded.book_snapshots.symbols == ["NKN-USDT"]
    assert decoded.book_snapshots.natives == ["NKNUSDT"]


# --- other frames --------------------------------------------------------------------------------
@pytest.mark.parametrize("frame", [
    b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1672515782136}}',
    b'{"e":"serverShutdown","E":1672515782136}',
])
def test_server_shutdown_asks_for_a_reconnect(binance: Binance, frame: bytes) -> None:
    decoded = feed(binance, (RecordKind.FRAME, frame), (RecordKind.FRAME, combined(DOC_TRADE, "bnbbtc@trade")))
    assert decoded.actions == [Reconnect("serverShutdown")]
    assert decoded.control_frames == 1 and len(decoded.rejects) == 0
    assert decoded.trades.num_rows == 1


def test_agg_trade_is_normalized_with_the_aggregate_id(binance: Binance) -> None:
    agg = (b'{"e":"aggTrade","E":1672515782136,"s":"BNBBTC","a":12345,"p":"0.001","q":"100","f":100,"l":105,'
           b'"T":1672515782136,"m":true,"M":true}')
    trade = combined(DOC_TRADE, "bnbbtc@trade")
    for exchange in (binance, make_trades_only(binance)):
        rows = exchange.decode([combined(agg, "bnbbtc@aggTrade"), trade], [0, 0]).trades.to_pylist()
        assert [r["trade_id"] for r in rows] == ["12345", "12345"]
        assert rows[0]["side"] == "sell" and rows[0]["price"] == 0.001 and rows[0]["symbol"] == "BNB-BTC"


def make_trades_only(binance: Binance) -> Binance:
    config = binance.config.model_copy()
    config.channels = ["trades"]
    return Binance(config)


def test_trades_in_a_mixed_batch_point_at_their_own_records(binance: Binance) -> None:
    trade = (RecordKind.FRAME, combined(DOC_TRADE, "bnbbtc@trade"))
    next_trade = (RecordKind.FRAME, combined(DOC_TRADE.replace(b"12345", b"12346"), "bnbbtc@trade"))
    decoded = feed(binance, (RecordKind.CONNECTED, b"ws://127.0.0.1/b"), depth(1, 2), trade,
                   snapshot(1, BIDS, ASKS), next_trade)
    assert decoded.trades.column("frame_index").to_pylist() == [2, 4]
    assert [t.timestamp() for t in decoded.trades.column("received_at").to_pylist()] == [0.002, 0.004]


def test_depth_for_an_unconfigured_symbol_is_quarantined(binance: Binance) -> None:
    decoded = feed(binance, depth(1, 2, native="FOOBAR"))
    assert decoded.rejects.reasons == ["unknown_symbol"] and decoded.actions == []


def test_non_numeric_level_is_quarantined_and_its_hole_is_a_gap(synced: Binance) -> None:
    decoded = feed(synced, depth(12, 12, bids=[["abc", "1"]]), depth(13, 13))
    assert decoded.rejects.reasons == ["wrong_type"]
    assert decoded.book_events is not None
    assert decoded.book_events.details == ["expected U=12, got U=13 u=13"]
    assert not synced.synced["BNB-BTC"]


def test_level_that_is_not_a_pair_of_numbers_is_quarantined(synced: Binance) -> None:
    decoded = feed(synced, (RecordKind.FRAME, combined(b'{"e":"depthUpdate","E":1,"s":"BNBBTC","U":12,"u":12,'
                                                       b'"b":[[true,"5"]],"a":[]}', "bnbbtc@depth@100ms")))
    assert decoded.rejects.reasons == ["wrong_type"]
    assert synced.books["BNB-BTC"].top("bid", 1) == [(100.0, 1.0)]


def test_a_level_sent_as_json_numbers_is_read_as_those_numbers(synced: Binance) -> None:
    # The lax rule of every number the decoders read: a JSON number where Binance sends a string is that number.
    decoded = feed(synced, (RecordKind.FRAME, combined(b'{"e":"depthUpdate","E":1,"s":"BNBBTC","U":12,"u":12,'
                                                       b'"b":[[100.0,5]],"a":[]}', "bnbbtc@depth@100ms")))
    assert decoded.rejects.reasons == []
    assert synced.books["BNB-BTC"].top("bid", 1) == [(100.0, 5.0)] and synced.books["BNB-BTC"].sequence == 12


def test_wrong_typed_levels_in_a_batch_are_quarantined_as_depth_levels_and_the_rest_applied(synced: Binance) -> None:
    # The batch decode types the levels; the frame it refuses sends the batch frame by frame, where its levels
    # are decoded on their own: the same reject as ever, and the frames around it applied.
    wrong = (RecordKind.FRAME, combined(b'{"e":"depthUpdate","E":1,"s":"BNBBTC","U":13,"u":13,'
                                        b'"b":[[true,"5"]],"a":[]}', "bnbbtc@depth@100ms"))
    decoded = feed(synced, depth(12, 12, bids=[["100.0", "7"]]), wrong)
    assert decoded.rejects.reasons == ["wrong_type"]
    assert decoded.rejects.details == ["depth levels: Expected `float | str`, got `bool` - at `$[0][0]`"]
    assert synced.books["BNB-BTC"].top("bid", 1) == [(100.0, 7.0)] and synced.books["BNB-BTC"].sequence == 12


def test_a_non_numeric_level_in_a_batch_is_quarantined_as_ever_and_the_rest_applied(synced: Binance) -> None:
    # A text that is no number fails the lax batch decode too: frame by frame, it is the same reject as alone.
    decoded = feed(synced, depth(12, 12, bids=[["100.0", "7"]]), depth(13, 13, bids=[["abc", "1"]]))
    assert decoded.rejects.reasons == ["wrong_type"]
    assert decoded.rejects.details == ["depth level is not a number"]
    assert synced.books["BNB-BTC"].top("bid", 1) == [(100.0, 7.0)] and synced.books["BNB-BTC"].sequence == 12


def test_non_finite_level_is_quarantined(synced: Binance) -> None:
    decoded = feed(synced, depth(12, 12, bids=[["100.0", "NaN"]]), depth(12, 12, asks=[["inf", "1"]]))
    assert decoded.rejects.reasons == ["wrong_type", "wrong_type"]
    assert synced.books["BNB-BTC"].top("bid", 1) == [(100.0, 1.0)]


def test_bad_level_on_one_side_leaves_the_other_side_unapplied(synced: Binance) -> None:
    feed(synced, depth(12, 12, bids=[["100.0", "5"]], asks=[["abc", "1"]]))
    assert synced.books["BNB-BTC"].top("bid", 1) == [(100.0, 1.0)]


def test_snapshot_with_a_non_numeric_level_is_bad(binance: Binance) -> None:
    feed(binance, depth(1, 2))
    decoded = feed(binance, snapshot(1, [["x", "1"]], ASKS))
    assert decoded.rejects.reasons == ["bad_snapshot"] and decoded.actions == [fetch()]


def test_depth_frames_without_a_book_subscription_are_ignored(exchanges_config: ExchangesFile) -> None:
    binance = make(exchanges_config, channels=["trades"])
    decoded = feed(binance, depth(1, 2))
    assert decoded.control_frames == 1 and decoded.actions == [] and len(decoded.rejects) == 0


def test_same_records_give_the_same_output(exchanges_config: ExchangesFile) -> None:
    records = [(RecordKind.CONNECTED, b"ws://127.0.0.1/b"), depth(5, 8, T0_MS), snapshot(6, BIDS, ASKS),
               depth(9, 9, T0_MS + 1000), depth(12, 12, T0_MS + 2000), snapshot(12, BIDS, ASKS),
               depth(13, 13, T0_MS + 3000)]
    outputs = []
    for _ in range(2):
        decoded = feed(make(exchanges_config), *records)
        assert decoded.book_snapshots is not None and decoded.book_events is not None
        outputs.append((decoded.book_snapshots.to_arrow(), decoded.book_events.to_arrow(), decoded.actions))
    assert outputs[0][0].equals(outputs[1][0]) and outputs[0][1].equals(outputs[1][1])
    assert outputs[0][2] == outputs[1][2]
    assert outputs[0][1].column("kind").to_pylist() == ["sequence_gap", "resync"]
