"""Raw frames -> validated trade columns + quarantined frames: the whole per-batch hot path.

Shared by the live ingestion run, WAL recovery and the benchmark, so all three treat a frame alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from trading_platform.exchanges.base import Exchange, Rejects
from trading_platform.quality.rules import SpikeReference, validate_trades

MAX_FRAME_BYTES = 1 << 20  # larger frames are quarantined (truncated), never decoded
_QUARANTINED_RAW_LIMIT = 64 * 1024


@dataclass
class Normalized:
    trades: pa.Table  # MARKET_TRADES columns without batch_id
    rejects: pa.Table  # QUARANTINE columns without batch_id
    control_frames: int


class TradeNormalizer:
    def __init__(self, exchange: Exchange, spike_threshold: float,
                 reference: SpikeReference | None = None) -> None:
        self.exchange = exchange
        self.spike_threshold = spike_threshold
        self.reference = reference or SpikeReference()

    def process(self, frames: list[bytes], received_us: list[int]) -> Normalized:
        rejects = Rejects()
        if frames and max(map(len, frames)) > MAX_FRAME_BYTES:
            kept = [i for i, frame in enumerate(frames) if len(frame) <= MAX_FRAME_BYTES]
            for i, frame in enumerate(frames):
                if len(frame) > MAX_FRAME_BYTES:
                    rejects.add(received_us[i], "oversized",
                                f"{len(frame)} bytes > {MAX_FRAME_BYTES}; raw text truncated",
                                frame[:_QUARANTINED_RAW_LIMIT])
            frames = [frames[i] for i in kept]
            received_us = [received_us[i] for i in kept]
        decoded = self.exchange.decode(frames, received_us)
        rejects.received_us += decoded.rejects.received_us
        rejects.reasons += decoded.rejects.reasons
        rejects.details += decoded.rejects.details
        rejects.raws += decoded.rejects.raws
        validated = validate_trades(decoded.trades, self.reference, self.spike_threshold)
        for index, reason, detail in validated.rejected.iter_rows():
            rejects.add(received_us[index], reason, detail, frames[index])
        return Normalized(validated.accepted.drop_columns(["frame_index"]),
                          rejects.to_arrow(self.exchange.name), decoded.control_frames)
