"""The raw-frame archive: every record of a flushed batch (exactly what the WAL held: frames, REST answers,
connection marks), zstd-compressed in the lake beside the batch's Parquet files, with the state the batch
was decoded from. A day can then be re-normalized with corrected code (``ingestion.renormalize``), and
replayed through the exchange protocols.

Key: ``raw/frames/exchange={exchange}/date={YYYY-MM-DD}/hour={HH}/{batch_id}.zst`` (date and hour of the
batch's first record, UTC). Content: a standard zstd stream of one JSON header line (batch id, WAL range,
spike reference and exchange state at the batch's start) followed by the records in the WAL's framing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa

from trading_platform.ingestion.wal import WrittenSpan, decode_records, encode_records
from trading_platform.storage.object_store import ObjectStore

PREFIX = "raw/frames/"
Record = tuple[int, int, int, bytes]  # (WAL offset, received µs, kind, payload)


@dataclass(frozen=True)
class ArchivedBatch:
    batch_id: str
    records: list[Record]
    reference: dict[str, Any]  # spike reference before the batch's first record
    exchange_state: dict[str, Any]  # Exchange.export_state() before the batch's first record


def archive_key(exchange: str, batch_id: str, first_received_us: int) -> str:
    at = datetime.fromtimestamp(first_received_us / 1e6, UTC)
    return f"{PREFIX}exchange={exchange}/date={at.date().isoformat()}/hour={at.hour:02d}/{batch_id}.zst"


def write_archive(store: ObjectStore, exchange: str, batch: ArchivedBatch) -> str | None:
    """Store one batch's records; returns the key (None: the batch had no records)."""
    if not batch.records:
        return None
    return _store(store, exchange, batch.batch_id, batch.records[0][0], batch.records[-1][0], batch.records[0][1],
                  batch.reference, batch.exchange_state, [encode_records(batch.records)])


def archive_wal_span(store: ObjectStore, exchange: str, batch_id: str, span: WrittenSpan,
                     reference: dict[str, Any], exchange_state: dict[str, Any]) -> str:
    """Store a batch's records straight from the WAL files (their framing is the archive's): copied a chunk at a
    time, so archiving a batch costs neither its records as Python objects nor a copy of its segments."""
    return _store(store, exchange, batch_id, span.first, span.last, span.first_received_us, reference,
                  exchange_state, span.chunks())


def _store(store: ObjectStore, exchange: str, batch_id: str, first: int, last: int, first_received_us: int,
           reference: dict[str, Any], exchange_state: dict[str, Any], framed: Iterable[bytes]) -> str:
    header = json.dumps({"batch_id": batch_id, "first": first, "last": last, "reference": reference,
                         "exchange_state": exchange_state})
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as stream:
        stream.write(header.encode() + b"\n")
        for chunk in framed:
            stream.write(chunk)
    key = archive_key(exchange, batch_id, first_received_us)
    store.put(key, sink.getvalue().to_pybytes())
    return key


def read_archive(store: ObjectStore, key: str) -> ArchivedBatch:
    with pa.CompressedInputStream(pa.BufferReader(store.get(key)), "zstd") as stream:
        data = stream.read()
    header_end = data.index(b"\n")
    header = json.loads(data[:header_end])
    return ArchivedBatch(header["batch_id"], list(decode_records(data[header_end + 1:])), header["reference"],
                         header["exchange_state"])


def archive_keys(store: ObjectStore, exchange: str, day: date) -> list[str]:
    """A day's archived batches of one exchange, in WAL order (batch ids are zero-padded WAL ranges)."""
    keys = store.list_keys(f"{PREFIX}exchange={exchange}/date={day.isoformat()}/")
    return sorted((k for k in keys if k.endswith(".zst")), key=lambda k: k.rsplit("/", 1)[-1])
