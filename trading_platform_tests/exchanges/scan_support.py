"""The check each exchange's compiled scan (``Exchange.trade_frame``) passes: a stream of records decodes to the same
output with the scan as with the typed decode alone."""

from __future__ import annotations

from trading_platform.config import ExchangeConfig
from trading_platform.exchanges.base import Exchange
from trading_platform.exchanges.decoded import DecodedFrames, RecordKind


def rejected(decoded: DecodedFrames) -> list[tuple[int, str, str, str]]:
    rejects = decoded.rejects
    return list(zip(rejects.received_us, rejects.reasons, rejects.details, rejects.raws, strict=True))


def assert_the_scan_changes_nothing(exchange_class: type[Exchange], config: ExchangeConfig,
                                    records: list[bytes | RecordKind], call: int = 300) -> None:
    """``records`` (a RecordKind stands for that record, CONNECTED: a new socket) decoded ``call`` at a time, so
    state carries across calls, by one exchange that scans and one that decodes every frame."""
    scanning, decoding = exchange_class(config), exchange_class(config)
    decoding.trade_frame = None
    for start in range(0, len(records), call):
        batch = records[start:start + call]
        frames = [b"ws://127.0.0.1/feed" if isinstance(r, RecordKind) else r for r in batch]
        kinds = [r if isinstance(r, RecordKind) else RecordKind.FRAME for r in batch]
        received = list(range(start, start + len(batch)))
        ours, theirs = (exchange.decode(frames, received, kinds) for exchange in (scanning, decoding))
        assert ours.trades.equals(theirs.trades)
        # Each reject once, with its frame (the typed decode records a broken frame's before the trade rows of the
        # frames ahead of it in its chunk, so the order in a call is not the frames').
        assert sorted(rejected(ours)) == sorted(rejected(theirs))
        assert (ours.control_frames, ours.ignored_frames) == (theirs.control_frames, theirs.ignored_frames)
        assert ours.actions == theirs.actions
        for book_output in ("book_events", "book_snapshots"):
            mine, other = getattr(ours, book_output), getattr(theirs, book_output)
            assert len(mine) == len(other) and (not len(mine) or mine.to_arrow().equals(other.to_arrow()))
    assert scanning.counters == decoding.counters
    assert scanning.export_state() == decoding.export_state()
