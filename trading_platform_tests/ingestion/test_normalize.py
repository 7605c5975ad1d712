from __future__ import annotations

from trading_platform.config import ExchangesFile
from trading_platform.exchanges.binance import Binance
from trading_platform.ingestion.normalize import MAX_FRAME_BYTES, TradeNormalizer

TRADE = (b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":7,"p":"90000.5","q":"0.1",'
         b'"T":1700000000000,"m":false,"M":true}}')


def test_an_oversized_frame_is_quarantined_truncated_and_the_rest_decoded(exchanges_config: ExchangesFile) -> None:
    normalizer = TradeNormalizer(Binance(exchanges_config.exchanges["binance"]), 0.2)
    oversized = b'{"stream":"btcusdt@trade","data":"' + b"x" * MAX_FRAME_BYTES + b'"}'
    result = normalizer.process([TRADE, oversized], [1, 2])
    assert result.trades.num_rows == 1
    rejects = result.rejects.to_pylist()
    assert [r["reason"] for r in rejects] == ["oversized"]
    assert len(rejects[0]["raw"]) == 64 * 1024
    assert str(len(oversized)) in rejects[0]["detail"]


def test_validation_rejects_keep_the_raw_frame(exchanges_config: ExchangesFile) -> None:
    normalizer = TradeNormalizer(Binance(exchanges_config.exchanges["binance"]), 0.2)
    bad_price = TRADE.replace(b'"90000.5"', b'"-1"')
    result = normalizer.process([b'{"result":null,"id":1}', bad_price], [1, 2])
    assert result.control_frames == 1
    assert result.rejects.to_pylist()[0]["raw"] == bad_price.decode()
    assert result.rejects.to_pylist()[0]["reason"] == "bad_price"
