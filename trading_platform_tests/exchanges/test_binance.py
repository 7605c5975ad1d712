"""Binance decoding against the exact payloads of exchange-protocols.md, section 1."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import pytest

from trading_platform.config import ExchangeConfig, ExchangesFile
from trading_platform.exchanges import record_decoder
from trading_platform.exchanges.binance import Binance
from trading_platform.exchanges.decoded import DecodeOutput
from trading_platform_tests.exchanges.scan_support import assert_the_scan_changes_nothing
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


# --- the compiled scan of @trade frames ------------------------------------------------------------------------
def trade_frame(trade_id: int, **changed: object) -> bytes:
    payload = {"e": "trade", "E": 1672515782136 + trade_id, "s": "BNBBTC", "t": trade_id,
               "p": f"0.00{1 + trade_id % 89}", "q": f"{trade_id % 7 + 1}.5", "T": 1672515782136 + trade_id,
               "m": trade_id % 3 == 0, "M": True, **changed}
    return combined(json.dumps(payload).encode())


def stream(seed: int) -> list[bytes]:
    """@trade frames over a few chunks, with what is not one sprinkled in: @aggTrade frames, depth, a server
    shutdown, replies, unknown symbols, number texts that are none, times and ids out of range, broken frames,
    and trades lost or repeated."""
    chance = random.Random(seed)
    frames: list[bytes] = []
    trade_id = 1000
    for _ in range(700):
        roll = chance.random()
        trade_id += chance.choice([1, 1, 1, 1, 3, -2]) if roll < 0.1 else 1
        if roll < 0.02:
            frames.append(combined(json.dumps({"e": "aggTrade", "E": 1, "s": "BNBBTC", "a": trade_id, "p": "0.001",
                                               "q": "1", "f": 1, "l": 1, "T": 1, "m": True, "M": True}).encode(),
                                   "bnbbtc@aggTrade"))
        elif roll < 0.04:
            frames.append(combined(json.dumps({"e": "depthUpdate", "E": 1, "s": "BNBBTC", "U": trade_id,
                                               "u": trade_id + 1, "b": [["0.001", "1"]], "a": []}).encode(),
                                   "bnbbtc@depth@100ms"))
        elif roll < 0.045:
            frames.append(combined(b'{"e": "serverShutdown", "E": 1}', "bnbbtc@trade"))
        elif roll < 0.05:
            frames.append(b'{"result": null, "id": 1}')
        elif roll < 0.06:
            frames.append(trade_frame(trade_id, s="DOGEBTC"))
        elif roll < 0.07:
            frames.append(trade_frame(trade_id, p=chance.choice(["Infinity", "abc", "1e999", "-0.0"])))
        elif roll < 0.08:
            frames.append(trade_frame(trade_id, T=chance.choice([2**53 + 1, -1, 2**63])))
        elif roll < 0.085:
            frames.append(trade_frame(trade_id, t=-trade_id))
        elif roll < 0.09:
            frames.append(trade_frame(trade_id)[:-7])
        else:
            frames.append(trade_frame(trade_id))
    return frames


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("channels", [["trades"], ["trades", "book"]])
@pytest.mark.parametrize("chunk", [7, record_decoder.DECODE_CHUNK])  # the scan reads the first frames of each
def test_a_stream_decodes_the_same_with_and_without_the_scan(binance: Binance, seed: int, channels: list[str],
                                                             chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record_decoder, "DECODE_CHUNK", chunk)
    config = binance.config.model_copy()
    config.channels = channels  # type: ignore[assignment]
    assert_the_scan_changes_nothing(Binance, config, list(stream(seed)))


def test_trade_frames_are_read_by_the_compiled_scan(binance: Binance) -> None:
    frames = [trade_frame(i) for i in range(5)]
    frames.insert(3, combined(b'{"e": "serverShutdown", "E": 1}'))
    out = DecodeOutput.for_exchange("binance")
    assert binance.scan_frames(frames, 0, len(frames), out) == 3
    assert out.columns is not None and len(out.columns) == 3
