"""Coinbase Exchange feed archives (exchange-protocols.md, section 2b), decoded for the offline importer."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from trading_platform.config import ExchangeConfig, ExchangesFile
from trading_platform.exchanges.coinbase import Coinbase
from trading_platform.exchanges.decoded import DecodedFrames, RecordKind
from trading_platform.exchanges.legacy.coinbase import CoinbaseExchangeFeedDecoder
from trading_platform_tests.exchanges.test_coinbase import event_rows, snapshot_rows

DOC_MATCH = (b'{"type":"match","trade_id":280232,"maker_order_id":"2a0da34e-61f7-4c36-88e5-c9dd15927b16",'
             b'"taker_order_id":"3c82abaa-c01e-4608-be59-6a1e69742891","side":"sell","size":"985",'
             b'"price":"0.00001305","product_id":"SKL-BTC","sequence":177100030,"time":"2021-04-17T16:43:37.089723Z"}')
DOC_L2UPDATE = (b'{"type":"l2update","product_id":"SKL-BTC","changes":[["sell","0.00001306","660.5"]],'
                b'"time":"2021-04-17T16:43:37.075687Z"}')
DOC_SUBSCRIBE = {"type": "subscribe", "product_ids": ["ETH-USD"], "channels": ["level2_batch", "matches", "heartbeat"]}

CONNECTED = RecordKind.CONNECTED


def match(trade_id: int, side: str = "sell", product: str = "SKL-BTC", kind: str = "match",
          sequence: int | None = None) -> bytes:
    return json.dumps({"type": kind, "trade_id": trade_id, "maker_order_id": "m", "taker_order_id": "t",
                       "side": side, "size": "985", "price": "0.00001305", "product_id": product,
                       "sequence": sequence if sequence is not None else 177_100_000 + 7 * trade_id,
                       "time": "2021-04-17T16:43:37.089723Z"}).encode()


def snapshot(product: str = "SKL-BTC") -> bytes:
    return json.dumps({"type": "snapshot", "product_id": product,
                       "bids": [["0.00001304", "100"], ["0.00001303", "200"]],
                       "asks": [["0.00001306", "50"], ["0.00001307", "70"]]}).encode()


def l2update(changes: list[list[str]], time: str) -> bytes:
    return json.dumps({"type": "l2update", "product_id": "SKL-BTC", "changes": changes, "time": time}).encode()


@pytest.fixture
def config(exchanges_config: ExchangesFile) -> ExchangeConfig:
    config = exchanges_config.exchanges["coinbase"].model_copy()
    config.channels = ["trades", "book"]  # type: ignore[assignment]
    config.symbols = ["SKL-BTC", "BTC-USD"]
    return config


@pytest.fixture
def decoder(config: ExchangeConfig) -> CoinbaseExchangeFeedDecoder:
    return CoinbaseExchangeFeedDecoder(config)


def decode(decoder: CoinbaseExchangeFeedDecoder | Coinbase, *records: bytes | RecordKind) -> DecodedFrames:
    frames = [b"ws://127.0.0.1/coinbase-exchange-feed" if isinstance(r, RecordKind) else r for r in records]
    kinds = [r if isinstance(r, RecordKind) else RecordKind.FRAME for r in records]
    return decoder.decode(frames, [1_000 + i for i in range(len(frames))], kinds)


def test_documented_match_is_a_taker_buy(decoder: CoinbaseExchangeFeedDecoder) -> None:
    decoded = decoder.decode([DOC_MATCH], [1_618_677_817_200_000])
    assert decoded.trades.drop_columns(["timestamp", "received_at", "symbol_code"]).to_pylist() == [{
        "exchange": "coinbase", "symbol": "SKL-BTC", "native_symbol": "SKL-BTC", "trade_id": "280232",
        "price": 0.00001305, "quantity": 985.0, "side": "buy", "frame_index": 0}]
    row = decoded.trades.to_pylist()[0]
    assert row["timestamp"] == datetime(2021, 4, 17, 16, 43, 37, 89723, tzinfo=UTC)
    assert row["received_at"] == datetime.fromtimestamp(1_618_677_817.2, UTC)


def test_maker_buy_means_the_taker_sold(decoder: CoinbaseExchangeFeedDecoder) -> None:
    decoded = decode(decoder, match(1, side="buy"), match(2, side="sell"))
    assert decoded.trades.column("side").to_pylist() == ["sell", "buy"]


def test_sequence_jumps_between_consecutive_trade_ids_are_not_gaps(decoder: CoinbaseExchangeFeedDecoder) -> None:
    decoded = decode(decoder, match(10, sequence=500), match(11, sequence=530), match(12, sequence=531))
    assert decoded.trades.num_rows == 3
    assert event_rows(decoded) == []


def test_trade_id_jump_is_recorded_as_a_trade_gap(decoder: CoinbaseExchangeFeedDecoder) -> None:
    decoded = decode(decoder, match(10), match(14, sequence=900))
    assert event_rows(decoded) == [
        ("SKL-BTC", "trade_sequence_gap", "trade_id expected 11 got 14 (3 trades missing; sequence 900)")]
    assert decoded.trades.column("trade_id").to_pylist() == ["10", "14"]
    assert decoded.actions == []


def test_last_match_after_a_reconnect_is_not_counted_twice(decoder: CoinbaseExchangeFeedDecoder) -> None:
    first = decode(decoder, CONNECTED, match(20, kind="last_match"), match(21))
    second = decode(decoder, CONNECTED, match(21, kind="last_match"), match(22), match(22))
    assert first.trades.column("trade_id").to_pylist() == ["20", "21"]
    assert second.trades.column("trade_id").to_pylist() == ["22"]
    assert second.control_frames == 2
    assert event_rows(second) == []


def test_snapshot_then_documented_l2update_emits_in_exchange_time(decoder: CoinbaseExchangeFeedDecoder) -> None:
    alone = decode(decoder, snapshot())
    assert snapshot_rows(alone) == []  # a snapshot carries no time: the next update emits
    [row] = snapshot_rows(decode(decoder, DOC_L2UPDATE))
    assert row["timestamp"] == datetime(2021, 4, 17, 16, 43, 37, 75687, tzinfo=UTC)
    assert row["bids"] == [{"price": 0.00001304, "quantity": 100.0}, {"price": 0.00001303, "quantity": 200.0}]
    assert row["asks"] == [{"price": 0.00001306, "quantity": 660.5}, {"price": 0.00001307, "quantity": 70.0}]
    assert row["sequence"] == 0  # l2 frames carry no sequence


def test_zero_size_removes_a_level(decoder: CoinbaseExchangeFeedDecoder) -> None:
    [row] = snapshot_rows(decode(decoder, snapshot(), l2update([["buy", "0.00001304", "0"]],
                                                               "2021-04-17T16:43:38.000000Z")))
    assert row["bids"] == [{"price": 0.00001303, "quantity": 200.0}]


def test_a_new_connection_waits_for_a_fresh_snapshot(decoder: CoinbaseExchangeFeedDecoder) -> None:
    decoded = decode(decoder, snapshot(), l2update([["buy", "0.00001304", "1"]], "2021-04-17T16:43:38Z"),
                     CONNECTED, l2update([["buy", "0.00001304", "2"]], "2021-04-17T16:43:39Z"),
                     snapshot(), l2update([["buy", "0.00001304", "3"]], "2021-04-17T16:43:40Z"))
    assert [row["bids"][0]["quantity"] for row in snapshot_rows(decoded)] == [1.0, 3.0]


def test_control_messages_are_counted_not_rejected(decoder: CoinbaseExchangeFeedDecoder) -> None:
    frames = [
        json.dumps({"type": "subscriptions", "channels": [{"name": "matches", "product_ids": ["SKL-BTC"]}]}),
        json.dumps({"type": "heartbeat", "sequence": 90, "last_trade_id": 20, "product_id": "SKL-BTC",
                    "time": "2014-11-07T08:19:28.464459Z"}),
        json.dumps({"type": "ticker", "product_id": "SKL-BTC", "price": "0.00001305"}),
    ]
    decoded = decoder.decode([f.encode() for f in frames], [0, 0, 0])
    assert decoded.control_frames == 3
    assert len(decoded.rejects) == 0


def test_bad_frames_are_quarantined_by_reason(decoder: CoinbaseExchangeFeedDecoder) -> None:
    frames = [DOC_MATCH[:50], b'{"type":"error","message":"Failed to subscribe","reason":"bad product"}',
              DOC_MATCH.replace(b'"trade_id":280232', b'"trade_id":"x"'), match(1, product="DOGE-EUR"),
              snapshot("DOGE-EUR"), DOC_MATCH, json.dumps({"type": "mystery"}).encode()]
    decoded = decoder.decode(frames, list(range(len(frames))))
    by_frame = dict(zip(decoded.rejects.raws, zip(decoded.rejects.reasons, decoded.rejects.details, strict=True),
                        strict=True))
    assert [by_frame[frame.decode()][0] for frame in frames[:5] + frames[6:]] == [
        "malformed_json", "exchange_error", "wrong_type", "unknown_symbol", "unknown_symbol", "wrong_type"]
    assert "Failed to subscribe" in by_frame[frames[1].decode()][1]
    assert "$.trade_id" in by_frame[frames[2].decode()][1]
    assert decoded.trades.column("trade_id").to_pylist() == ["280232"]
    assert decoded.trades.column("frame_index").to_pylist() == [5]


def test_a_batch_of_matches_decodes_in_one_pass(decoder: CoinbaseExchangeFeedDecoder) -> None:
    frames = [match(i, side="buy" if i % 3 else "sell") for i in range(1, 1001)]
    decoded = decoder.decode(frames, list(range(1000)))
    assert decoded.trades.num_rows == 1000
    assert decoded.trades.column("side").to_pylist()[:3] == ["sell", "sell", "buy"]
    assert decoder.trade_high_water == {"SKL-BTC": 1000}


def test_archived_and_live_books_share_one_code_path(config: ExchangeConfig,
                                                     decoder: CoinbaseExchangeFeedDecoder) -> None:
    live = Coinbase(config)
    levels = [("bid", "0.00001304", "100"), ("bid", "0.00001303", "200"), ("offer", "0.00001306", "50"),
              ("offer", "0.00001307", "70")]
    live_snapshot = json.dumps({"channel": "l2_data", "timestamp": "2021-04-17T16:43:36Z", "sequence_num": 0,
                                "events": [{"type": "snapshot", "product_id": "SKL-BTC", "updates": [
                                    {"side": s, "price_level": p, "new_quantity": q} for s, p, q in levels]}]})
    live_update = json.dumps({"channel": "l2_data", "timestamp": "2021-04-17T16:43:37.075687Z", "sequence_num": 1,
                              "events": [{"type": "update", "product_id": "SKL-BTC", "updates": [
                                  {"side": "offer", "price_level": "0.00001306", "new_quantity": "660.5",
                                   "event_time": "2021-04-17T16:43:37.075687Z"}]}]})
    from_live = snapshot_rows(decode(live, live_snapshot.encode(), live_update.encode()))[-1]
    from_archive = snapshot_rows(decode(decoder, snapshot(), DOC_L2UPDATE))[-1]
    for row in (from_live, from_archive):
        row.pop("sequence")
        row.pop("received_at")
    assert from_archive == from_live


def test_documented_subscribe_uses_plural_channels() -> None:
    # The archives' own subscribe frame, for reference: the legacy feed takes a list of channels.
    assert "channels" in DOC_SUBSCRIBE and "channel" not in DOC_SUBSCRIBE
