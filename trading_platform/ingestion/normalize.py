"""Raw records -> validated trades, book output and quarantined frames: the per-batch hot path.

Shared by the live ingestion run, WAL recovery, the offline importer and the benchmark, so all of them
treat a frame alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import pyarrow as pa

from trading_platform.exchanges.decoded import (
    DECODED_TRADE_SCHEMA,
    INTERNAL_TRADE_COLUMNS,
    Action,
    DecodedFrames,
    RecordKind,
    Rejects,
)
from trading_platform.exchanges.record_decoder import json_array
from trading_platform.quality.rules import SpikeReference, validate_trades

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_FRAME_BYTES = 1 << 20  # larger frames are quarantined (truncated), never decoded
_QUARANTINED_RAW_LIMIT = 64 * 1024


class Decoder(Protocol):
    """An Exchange, or a legacy-format decoder the importer uses."""

    name: str

    def decode(self, frames: list[bytes], received_us: list[int], kinds: list[RecordKind] | None = None,
               joined: bytearray | None = None) -> DecodedFrames: ...


@dataclass
class Normalized:
    trades: pa.Table  # MARKET_TRADES columns without batch_id
    rejects: pa.Table  # QUARANTINE columns without batch_id
    control_frames: int
    book_snapshots: pa.Table | None = None  # ORDERBOOK_SNAPSHOTS columns without batch_id
    book_events: pa.Table | None = None  # BOOK_EVENTS columns without batch_id
    actions: list[Action] = field(default_factory=list)
    ignored_frames: int = 0  # well-formed frames of channels / message types the platform does not use


class TradeNormalizer:
    def __init__(self, exchange: Decoder, spike_threshold: float, reference: SpikeReference | None = None) -> None:
        self.exchange = exchange
        self.spike_threshold = spike_threshold
        self.reference = reference or SpikeReference()

    def process(self, frames: list[bytes], received_us: list[int],
                kinds: list[RecordKind] | None = None) -> Normalized:
        rejects = Rejects()
        kinds, joined = self._screen(frames, received_us, kinds, rejects)
        decoded = self._decode(frames, received_us, kinds, joined, rejects)
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
            trades=validated.accepted.drop_columns(INTERNAL_TRADE_COLUMNS),
            rejects=rejects.to_arrow(self.exchange.name),
            control_frames=decoded.control_frames,
            book_snapshots=snapshots.to_arrow() if snapshots is not None and len(snapshots) else None,
            book_events=events.to_arrow() if events is not None and len(events) else None,
            actions=decoded.actions,
            ignored_frames=decoded.ignored_frames,
        )

    def _screen(self, frames: list[bytes], received_us: list[int], kinds: list[RecordKind] | None,
                rejects: Rejects) -> tuple[list[RecordKind] | None, bytearray | None]:
        """Quarantine frames no decoder should see (oversized, not UTF-8); they stay in place as SCREENED
        records, so a decoder can still count them in its per-connection sequence. Also returns the batch
        as the one JSON array the decoder reads (``json_array``) when nothing was screened: screened on that
        copy, the frames are read once here, not once per check and again by the decoder."""
        if not frames:
            return kinds, None
        limit = getattr(self.exchange, "max_frame_bytes", MAX_FRAME_BYTES)
        joined = json_array(frames)
        screened: list[int] = []
        # The frames' bytes in all (the array less its brackets and commas) within the limit: none is over it.
        if len(joined) - len(frames) - 1 > limit and max(map(len, frames)) > limit:
            for i, frame in enumerate(frames):
                if len(frame) > limit and (kinds is None or kinds[i] == RecordKind.FRAME):
                    rejects.add(received_us[i], "oversized", f"{len(frame)} bytes > {limit}; raw text truncated",
                                frame[:_QUARANTINED_RAW_LIMIT])
                    screened.append(i)
        try:
            # The session reads bytes (recv(decode=False)), which websockets does not validate, and a decoder
            # must never meet a UnicodeDecodeError. Exchange frames are nearly always ASCII, which is UTF-8:
            # checked in C on the array (its brackets and commas are ASCII), without building a str.
            if not joined.isascii():
                b"".join(frames).decode("utf-8")
        except UnicodeDecodeError:
            done = set(screened)
            for i, frame in enumerate(frames):
                if i in done or (kinds is not None and kinds[i] == RecordKind.CONNECTED):
                    continue
                try:
                    frame.decode("utf-8")
                except UnicodeDecodeError as error:
                    rejects.add(received_us[i], "invalid_utf8", f"not UTF-8: {error}", frame[:_QUARANTINED_RAW_LIMIT])
                    screened.append(i)
        if not screened:
            return kinds, joined
        marked = list(kinds) if kinds is not None else [RecordKind.FRAME] * len(frames)
        for i in screened:
            marked[i] = RecordKind.SCREENED
        return marked, None

    def _decode(self, frames: list[bytes], received_us: list[int], kinds: list[RecordKind] | None,
                joined: bytearray | None, rejects: Rejects) -> DecodedFrames:
        try:
            return self.exchange.decode(frames, received_us, kinds, joined)
        except Exception as error:  # a decoder bug must cost one frame, never the feed (or every restart)
            log.exception("%s: batch decode raised %s; decoding frame by frame", self.exchange.name, error)
        out = DecodedFrames(DECODED_TRADE_SCHEMA.empty_table(), Rejects())
        trades: list[pa.Table] = []
        for i, frame in enumerate(frames):
            kind = [kinds[i]] if kinds is not None else None
            try:
                one = self.exchange.decode([frame], [received_us[i]], kind)
            except Exception as error:
                rejects.add(received_us[i], "decoder_error", f"{type(error).__name__}: {error}",
                            frame[:_QUARANTINED_RAW_LIMIT])
                continue
            trades.append(one.trades.set_column(one.trades.schema.get_field_index("frame_index"), "frame_index",
                                                pa.array([i] * one.trades.num_rows, pa.int64())))
            out.rejects.received_us += one.rejects.received_us
            out.rejects.reasons += one.rejects.reasons
            out.rejects.details += one.rejects.details
            out.rejects.raws += one.rejects.raws
            out.control_frames += one.control_frames
            out.ignored_frames += one.ignored_frames
            out.actions += one.actions
            out.book_snapshots = _merge(out.book_snapshots, one.book_snapshots)
            out.book_events = _merge(out.book_events, one.book_events)
        if trades:
            out.trades = pa.concat_tables(trades)
        return out


def _merge(into: T | None, more: T | None) -> T | None:
    """Append one frame's book rows (BookSnapshots / BookEvents: dataclasses of parallel lists)."""
    if more is None or into is None:
        return into if more is None else more
    for name in vars(more):
        value = getattr(more, name)
        if isinstance(value, list):
            getattr(into, name).extend(value)
    return into
