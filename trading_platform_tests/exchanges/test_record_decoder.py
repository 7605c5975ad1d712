"""The batch decode reads a run of frames ``DECODE_CHUNK`` at a time, in place in one joined buffer: a run of several
chunks must decode exactly as its frames one by one, whatever their lengths and wherever a bad frame falls."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from trading_platform.config import ExchangesFile
from trading_platform.exchanges import record_decoder
from trading_platform.exchanges.coinbase import Coinbase
from trading_platform.exchanges.decoded import DecodeOutput
from trading_platform.exchanges.kraken import Kraken
from trading_platform.ingestion.normalize import TradeNormalizer

SPIKE_THRESHOLD = 0.5
TRUNCATED = b'{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy"'
OUT_OF_PLACE = b'{"channel":"trade","type":"update","data":[]},{"channel":"heartbeat"}'  # two values in one frame


def trade_frame(trade_id: int) -> bytes:
    """A Kraken v2 trade whose number texts (read as raw JSON, ``msgspec.Raw``) grow with the id: frames of
    different lengths."""
    price, qty = f"{60000 + trade_id}.{'5' * (trade_id % 7)}0", f"0.{'1' * (1 + trade_id % 5)}"
    return (f'{{"channel":"trade","type":"update","data":[{{"symbol":"BTC/USD","side":"buy","price":{price},'
            f'"qty":{qty},"ord_type":"limit","trade_id":{trade_id},"timestamp":"2023-10-06T17:35:55.{trade_id:06d}Z"}}]}}'
            ).encode()


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(record_decoder, "DECODE_CHUNK", 3)
    return 3


class WatchedKraken(Kraken):
    """Kraken noting the frames it decodes alone: the fallback a chunk takes when its one typed decode fails. Every
    frame takes the typed decode (the chunks are what these tests are about): none is read by the scan."""

    trade_frame = None

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.decoded_alone: list[bytes] = []

    def decode_frame(self, frame: bytes) -> Any:
        self.decoded_alone.append(frame)
        return super().decode_frame(frame)


def normalized_whole_and_one_by_one(exchanges_config: ExchangesFile, frames: list[bytes],
                                    ) -> tuple[list[pa.Table], list[pa.Table], list[bytes]]:
    """The frames normalized in one call, then one call per frame; and the frames the one call decoded alone."""
    received = [1_700_000_000_000_000 + i for i in range(len(frames))]
    watched = WatchedKraken(exchanges_config.exchanges["kraken"])
    whole = TradeNormalizer(watched, SPIKE_THRESHOLD).process(frames, received)
    alone = TradeNormalizer(Kraken(exchanges_config.exchanges["kraken"]), SPIKE_THRESHOLD)
    one_by_one = [alone.process([frame], [time]) for frame, time in zip(frames, received, strict=True)]
    return ([whole.trades, whole.rejects], [pa.concat_tables([o.trades for o in one_by_one]),
                                            pa.concat_tables([o.rejects for o in one_by_one])], watched.decoded_alone)


def test_a_run_of_several_chunks_decodes_as_its_frames_one_by_one(exchanges_config: ExchangesFile,
                                                                  small_chunks: int) -> None:
    frames = [trade_frame(trade_id) for trade_id in range(1, 12)]
    (trades, rejects), (expected_trades, _), alone = normalized_whole_and_one_by_one(exchanges_config, frames)
    assert trades.num_rows == 11 and rejects.num_rows == 0
    assert trades.to_pylist() == expected_trades.to_pylist()  # every number text as the frame spells it
    assert alone == []  # each chunk read as one JSON array: its brackets sit exactly around its frames


@pytest.mark.parametrize("position", [0, 2, 3, 5, 10])  # a chunk's first, last, middle frame; the run's last
@pytest.mark.parametrize("bad", [TRUNCATED, OUT_OF_PLACE, b""])
def test_a_bad_frame_costs_itself_only_wherever_it_falls_among_the_chunks(
        exchanges_config: ExchangesFile, small_chunks: int, bad: bytes, position: int) -> None:
    frames = [trade_frame(trade_id) for trade_id in range(1, 12)]
    frames[position] = bad
    (trades, rejects), (expected_trades, expected_rejects), alone = normalized_whole_and_one_by_one(
        exchanges_config, frames)
    chunk = position - position % small_chunks
    assert alone == frames[chunk:chunk + small_chunks]  # the bad frame's chunk only went frame by frame
    assert trades.num_rows == 10 and rejects.num_rows == 1
    assert trades.to_pylist() == expected_trades.to_pylist()
    assert rejects.to_pylist() == expected_rejects.to_pylist()
    assert rejects.column("raw").to_pylist() == [bad.decode()]


class WatchedCoinbase(Coinbase):
    """Coinbase noting the frames it decodes alone and how many its compiled scan read."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.decoded_alone: list[bytes] = []
        self.scanned = 0

    def decode_frame(self, frame: bytes) -> Any:
        self.decoded_alone.append(frame)
        return super().decode_frame(frame)

    def scan_frames(self, frames: list[bytes], lo: int, hi: int, out: DecodeOutput) -> int:
        scanned = super().scan_frames(frames, lo, hi, out)
        self.scanned += scanned
        return scanned


def coinbase_frame(sequence: int, trade_id: int) -> bytes:
    """A ``market_trades`` update whose length grows with the trade id."""
    return (f'{{"channel":"market_trades","client_id":"","timestamp":"2026-04-07T14:30:00Z","sequence_num":{sequence},'
            f'"events":[{{"type":"update","trades":[{{"trade_id":"{trade_id}","product_id":"BTC-USD",'
            f'"price":"{60000 + trade_id}.{"5" * (1 + trade_id % 7)}","size":"0.1","side":"BUY",'
            f'"time":"2026-04-07T14:30:00.{trade_id:06d}Z"}}]}}]}}').encode()


def coinbase_heartbeat(sequence: int) -> bytes:
    return f'{{"channel":"heartbeats","sequence_num":{sequence},"events":[]}}'.encode()


@pytest.mark.parametrize("leading", [[0, 1, 2, 3, 4], [4, 0, 3, 1, 2]])  # trade updates at the start of each chunk
def test_a_chunk_s_first_frames_are_scanned_and_the_rest_read_as_one_json_array(
        exchanges_config: ExchangesFile, monkeypatch: pytest.MonkeyPatch, leading: list[int]) -> None:
    monkeypatch.setattr(record_decoder, "DECODE_CHUNK", 5)
    frames = [coinbase_heartbeat(s) for s in range(5)]  # the first frame sets the numbering
    for count in leading:  # a chunk of `count` trade updates, a heartbeat, then trade updates and heartbeats in turn
        for place in range(5):
            sequence = len(frames)
            trade = place < count or (place > count and place % 2 == 0)
            frames.append(coinbase_frame(sequence, sequence) if trade else coinbase_heartbeat(sequence))
    received = list(range(len(frames)))
    watched = WatchedCoinbase(exchanges_config.exchanges["coinbase"])
    decoding = Coinbase(exchanges_config.exchanges["coinbase"])
    decoding.trade_frame = None
    decoded = watched.decode(frames, received)
    assert decoded.trades.equals(decoding.decode(frames, received).trades)
    assert watched.scanned == sum(leading)
    assert watched.decoded_alone == []  # each chunk's rest had its brackets exactly around its frames
