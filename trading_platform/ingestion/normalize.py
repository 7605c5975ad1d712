"""Raw records -> validated trades, book output and quarantined frames: the per-batch hot path.

Shared by the live ingestion run, WAL recovery, the offline importer and the benchmark, so all of them
treat a frame alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from trading_platform.exchanges.base import Action, DecodedFrames, RecordKind, Rejects
from trading_platform.quality.rules import SpikeReference, validate_trades

MAX_FRAME_BYTES = 1 << 20  # larger frames are quarantined (truncated), never decoded
_QUARANTINED_RAW_LIMIT = 64 * 1024


class Decoder(Protocol):
    """An Exchange, or a legacy-format decoder the importer uses."""

    name: str

    def decode(self, frames: list[bytes], received_us: list[int],
               kinds: list[RecordKind] | None = None) -> DecodedFrames: ...


@dataclass
class Normalized:
    trades: pa.Table  # MARKET_TRADES columns without batch_id
    rejects: pa.Table  # QUARANTINE columns without batch_id
    control_frames: int
    book_snapshots: pa.Table | None = None  # ORDERBOOK_SNAPSHOTS columns without batch_id
    book_events: pa.Table | None = None  # BOOK_EVENTS columns without batch_id
    actions: list[Action] = field(default_factory=list)


class TradeNormalizer:
    def __init__(self, exchange: Decoder, spike_threshold: float, reference: SpikeReference | None = None) -> None:
        self.exchange = exchange
        self.spike_threshold = spike_threshold
        self.reference = reference or SpikeReference()

    def process(self, frames: list[bytes], received_us: list[int],
                kinds: list[RecordKind] | None = None) -> Normalized:
        rejects = Rejects()
        limit = getattr(self.exchange, "max_frame_bytes", MAX_FRAME_BYTES)
        if frames and max(map(len, frames)) > limit:
            kept = [i for i, frame in enumerate(frames)
                    if len(frame) <= limit or (kinds is not None and kinds[i] != RecordKind.FRAME)]
            kept_set = set(kept)
            for i, frame in enumerate(frames):
                if i not in kept_set:
                    rejects.add(received_us[i], "oversized",
                                f"{len(frame)} bytes > {limit}; raw text truncated",
                                frame[:_QUARANTINED_RAW_LIMIT])
            frames = [frames[i] for i in kept]
            received_us = [received_us[i] for i in kept]
            kinds = [kinds[i] for i in kept] if kinds is not None else None
        decoded = self.exchange.decode(frames, received_us, kinds)
        rejects.received_us += decoded.rejects.received_us
        rejects.reasons += decoded.rejects.reasons
        rejects.details += decoded.rejects.details
        rejects.raws += decoded.rejects.raws
        validated = validate_trades(decoded.trades, self.reference, self.spike_threshold)
        if validated.rejected.height:
            # frame_index points into the `frames` the exchange decoded
            for index, reason, detail in validated.rejected.iter_rows():
                rejects.add(received_us[index], reason, detail, frames[index])
        snapshots = decoded.book_snapshots
        events = decoded.book_events
        return Normalized(
            trades=validated.accepted.drop_columns(["frame_index"]),
            rejects=rejects.to_arrow(self.exchange.name),
            control_frames=decoded.control_frames,
            book_snapshots=snapshots.to_arrow() if snapshots is not None and len(snapshots) else None,
            book_events=events.to_arrow() if events is not None and len(events) else None,
            actions=decoded.actions,
        )
