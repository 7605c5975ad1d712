"""Binance decoding against the exact payloads of exchange-protocols.md, section 1."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from trading_platform.config import ExchangeConfig, ExchangesFile
from trading_platform.exchanges.binance import Binance
from trading_platform_tests.support import replay_endpoints

DOC_TRADE = (b'{"e": "trade", "E": 1672515782136, "s": "BNBBTC", "t": 12345, "p": "0.001", "q": "100", '
             b'"T": 1672515782136, "m": true, "M": true}')


def combined(payload: bytes, stream: str = "bnbbtc@trade") -> bytes:
    return b'{"stream":"' + stream.encode() + b'","data":' + payload + b"}"


@pytest.fixture
def binance(exchanges_config: ExchangesFile) -> Binance:
    config: ExchangeConfig = exchanges_config.exchanges["binance"].model_copy()
    config.symbols = [*config.symbols, "BNB-BTC"]
    return Binance(config)


def test_documented_trade_decodes_to_normalized_columns(binance: Binance) -> None:
    decoded = binance.decode([combined(DOC_TRADE)], [1672515782200000])
    row = decoded.trades.to_pylist()[0]
    assert row["exchange"] == "binance"
    assert row["symbol"] == "BNB-BTC"
    assert row["native_symbol"] == "BNBBTC"
    assert row["trade_id"] == "12345"
    assert row["price"] == 0.001
    assert row["quantity"] == 100.0
    assert row["timestamp"] == datetime(2022, 12, 31, 19, 43, 2, 136000, tzinfo=UTC)
    assert row["received_at"] == datetime.fromtimestamp(1672515782.2, UTC)
    assert len(decoded.rejects) == 0


def test_buyer_is_maker_means_the_taker_sold(binance: Binance) -> None:
    maker_buy = combined(DOC_TRADE)
    taker_buy = combined(DOC_TRADE.replace(b'"m": true', b'"m": false').replace(b"12345", b"12346"))
    sides = binance.decode([maker_buy, taker_buy], [0, 0]).trades.column("side").to_pylist()
    assert sides == ["sell", "buy"]


def test_subscribe_reply_is_a_control_frame_not_a_reject(binance: Binance) -> None:
    decoded = binance.decode([b'{"result": null, "id": 1}', combined(DOC_TRADE)], [0, 0])
    assert decoded.control_frames == 1
    assert decoded.trades.num_rows == 1
    assert len(decoded.rejects) == 0


def test_truncated_frame_is_quarantined_with_its_raw_text(binance: Binance) -> None:
    truncated = combined(DOC_TRADE)[:40]
    decoded = binance.decode([truncated, combined(DOC_TRADE)], [5, 6])
    assert decoded.rejects.reasons == ["malformed_json"]
    assert decoded.rejects.raws == [truncated.decode()]
    assert decoded.trades.num_rows == 1


def test_wrong_typed_field_is_quarantined_and_names_the_field(binance: Binance) -> None:
    wrong = combined(DOC_TRADE.replace(b'"t": 12345', b'"t": "abc"'))
    decoded = binance.decode([wrong], [0])
    assert decoded.rejects.reasons == ["wrong_type"]
    assert "$.data.t" in decoded.rejects.details[0]


@pytest.mark.parametrize("text", ["abc", "", " 0.001", "0x1", "1_000"])
def test_a_price_text_that_is_no_number_is_quarantined_and_names_the_field(binance: Binance, text: str) -> None:
    """Number texts are read by the decode itself: only the JSON number grammar is a number; the frame is set
    aside, naming the field, and the others of its batch are kept."""
    wrong = combined(DOC_TRADE.replace(b'"p": "0.001"', b'"p": "' + text.encode() + b'"'))
    decoded = binance.decode([wrong, combined(DOC_TRADE)], [0, 1])
    assert decoded.rejects.reasons == ["wrong_type"]
    assert "$.data.p" in decoded.rejects.details[0]
    assert decoded.trades.column("price").to_pylist() == [0.001]


def test_number_texts_read_exactly_as_their_decimal_text(binance: Binance) -> None:
    texts = ["0.00000001", "68901.23000000", "1e-8", "123456789.12345678", "0.1", "3.0000000000000004"]
    frames = [combined(DOC_TRADE.replace(b'"0.001"', f'"{text}"'.encode())
                       .replace(b'"t": 12345', b'"t": %d' % (12345 + i))) for i, text in enumerate(texts)]
    decoded = binance.decode(frames, [0] * len(frames))
    assert decoded.trades.column("price").to_pylist() == [float(text) for text in texts]


def test_unknown_symbol_is_quarantined(binance: Binance) -> None:
    unknown = combined(DOC_TRADE.replace(b'"BNBBTC"', b'"FOOBAR"'), "foobar@trade")
    decoded = binance.decode([unknown], [0])
    assert decoded.rejects.reasons == ["unknown_symbol"]
    assert decoded.trades.num_rows == 0


def test_error_reply_is_kept_as_exchange_error(binance: Binance) -> None:
    decoded = binance.decode([b'{"error": {"code": 2, "msg": "Invalid request"}, "id": 3}'], [0])
    assert decoded.rejects.reasons == ["exchange_error"]


def test_connect_url_carries_lowercase_combined_streams(binance: Binance, exchanges_config: ExchangesFile) -> None:
    endpoints = replay_endpoints(exchanges_config.exchanges["binance"], "127.0.0.1", 9555)
    url = binance.use_endpoints(endpoints)
    assert url.startswith(f"{endpoints.ws_url}?streams=btcusdt@trade/ethusdt@trade/")
    assert binance.subscribe_frames() == []


def test_unsubscribe_ack_is_recognized_only_for_its_own_id(binance: Binance) -> None:
    request = binance.unsubscribe_frames()[0]
    import json

    request_id = json.loads(request)["id"]
    assert json.loads(request)["method"] == "UNSUBSCRIBE"
    assert binance.is_unsubscribe_ack(b'{"result":null,"id":%d}' % request_id)
    assert not binance.is_unsubscribe_ack(b'{"result":null,"id":1}')
    assert not binance.is_unsubscribe_ack(combined(DOC_TRADE))
