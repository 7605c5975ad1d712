"""Re-normalize archived batches: decode a batch's archived records again, from the state it was decoded
from live, and write its trade files under the same batch id. With unchanged code that reproduces the lake's
trade files byte for byte; with corrected code (say, a side convention the other way round) it rewrites them.
A day's batches are re-normalized in WAL order, each from its own archived state.

Trades only: a trade depends on the archived state (trade-id marks, open gaps, the spike reference), while a
book snapshot depends on the whole book at the batch's start, which the archive does not keep; re-deriving
books needs the records since the book's last snapshot, and is left to a replay of the day."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import pyarrow as pa

from trading_platform.config import ExchangeConfig
from trading_platform.exchanges.decoded import RecordKind
from trading_platform.exchanges.registry import exchange_for
from trading_platform.ingestion.frame_archive import ArchivedBatch, archive_keys, read_archive
from trading_platform.ingestion.lake_writer import write_batch
from trading_platform.ingestion.normalize import TradeNormalizer
from trading_platform.quality.rules import SpikeReference
from trading_platform.schema import MARKET_TRADES
from trading_platform.storage.object_store import ObjectStore


@dataclass
class RenormalizeResult:
    batches: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # dataset -> rows written
    keys: list[str] = field(default_factory=list)


def renormalize_batch(archive: ArchivedBatch, config: ExchangeConfig, spike_threshold: float) -> pa.Table:
    """The batch's trades, decoded again from its archived records and state."""
    exchange = exchange_for(config)
    exchange.import_state(archive.exchange_state)
    normalizer = TradeNormalizer(exchange, spike_threshold, SpikeReference.from_json(archive.reference))
    kinds = [RecordKind(r[2]) for r in archive.records]
    normalized = normalizer.process([r[3] for r in archive.records], [r[1] for r in archive.records],
                                    kinds if any(kinds) else None)  # as the live run calls it
    return normalized.trades


def renormalize_day(source: ObjectStore, target: ObjectStore, config: ExchangeConfig, day: date,
                    spike_threshold: float) -> RenormalizeResult:
    """Every archived batch of ``config``'s exchange whose first record is of ``day``, into ``target``."""
    result = RenormalizeResult()
    for key in archive_keys(source, config.name, day):
        archive = read_archive(source, key)
        trades = renormalize_batch(archive, config, spike_threshold)
        written = write_batch(target, config.name, archive.batch_id, {MARKET_TRADES: trades})
        result.batches += 1
        result.keys += written.keys
        for dataset, rows in written.rows.items():
            result.rows[dataset] = result.rows.get(dataset, 0) + rows
    return result

