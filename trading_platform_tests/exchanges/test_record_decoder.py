"""The batch decode reads a run of frames ``DECODE_CHUNK`` at a time, in place in one joined buffer: a run of several
chunks must decode exactly as its frames one by one, whatever their lengths and wherever a bad frame falls."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from trading_platform.config import ExchangesFile
from trading_platform.exchanges import record_decoder
from trading_platform.exchanges.base import SCAN_RUN
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


def test_the_frames_between_scanned_runs_are_each_read_as_one_json_array(exchanges_config: ExchangesFile) -> None:
    frames, sequence, trade_id = [], 0, 1
    for run in range(6):  # runs of scanned trade updates (the first sets the numbering), one or two heartbeats after
        for _ in range(SCAN_RUN + 1 + run):
            frames.append(coinbase_frame(sequence, trade_id))
            sequence, trade_id = sequence + 1, trade_id + 1
        for _ in range(1 + run % 2):
            frames.append(coinbase_heartbeat(sequence))
            sequence += 1
    received = list(range(len(frames)))
    watched = WatchedCoinbase(exchanges_config.exchanges["coinbase"])
    decoding = Coinbase(exchanges_config.exchanges["coinbase"])
    decoding.trade_frame = None
    decoded = watched.decode(frames, received)
    assert decoded.trades.equals(decoding.decode(frames, received).trades)
    assert decoded.trades.num_rows == trade_id - 1 and decoded.control_frames == 9
    assert watched.scanned == trade_id - 2  # all trade updates but the first
    assert watched.decoded_alone == []  # each run between scans had its brackets exactly around its frames


def test_a_look_that_finds_no_run_to_scan_spaces_out_the_next_looks(
        exchanges_config: ExchangesFile) -> None:
    chunk = record_decoder.DECODE_CHUNK
    frames = list(map(coinbase_heartbeat, range(chunk)))  # nothing to scan: the next chunk is not looked into
    frames += [*map(coinbase_heartbeat, range(chunk, chunk + 10)),
               *(coinbase_frame(s, s) for s in range(chunk + 10, 2 * chunk))]
    frames += [coinbase_heartbeat(2 * chunk), *(coinbase_frame(s, s) for s in range(2 * chunk + 1, 3 * chunk))]
    watched = WatchedCoinbase(exchanges_config.exchanges["coinbase"])
    decoded = watched.decode(frames, list(range(len(frames))))
    assert decoded.trades.num_rows == 2 * chunk - 11
    # The first chunk's look found nothing: the second is decoded whole, without a look; the third is looked into.
    assert watched.scanned == chunk - 1


def test_each_look_that_finds_nothing_doubles_the_wait_for_the_next(exchanges_config: ExchangesFile) -> None:
    chunk = record_decoder.DECODE_CHUNK
    frames = [coinbase_heartbeat(s) for s in range(3 * chunk)]  # looks in chunks 1 and 3 find nothing
    for first in range(3 * chunk, 6 * chunk, chunk):  # chunks 4 and 5 wait; 6 is looked into
        frames += [coinbase_heartbeat(first), *(coinbase_frame(s, s) for s in range(first + 1, first + chunk))]
    watched = WatchedCoinbase(exchanges_config.exchanges["coinbase"])
    decoded = watched.decode(frames, list(range(len(frames))))
    assert decoded.trades.num_rows == 3 * (chunk - 1)
    assert watched.scanned == chunk - 1
