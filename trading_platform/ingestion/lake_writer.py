"""Write a sealed batch to the lake as zstd Parquet: one file per Hive partition of each dataset."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import date

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from trading_platform.quality.batch_checks import CheckOutcome, batch_checks
from trading_platform.schema import BATCH_FILES_METADATA, MARKET_TRADES, QUARANTINE, Table
from trading_platform.storage.object_store import ObjectStore


def batch_id_for(exchange: str, first_offset: int, last_offset: int) -> str:
    """Deterministic from the WAL range: re-flushing the same frames overwrites the same objects."""
    return f"{exchange}-{first_offset:012d}-{last_offset:012d}"


@dataclass
class WrittenBatch:
    batch_id: str
    rows: dict[str, int] = field(default_factory=dict)  # dataset -> rows
    keys: list[str] = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)  # symbols with trades
    first_trade_us: int | None = None
    last_trade_us: int | None = None
    max_receive_lag_ms: float | None = None
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    book_events_by_kind: dict[str, int] = field(default_factory=dict)
    receive_lag_ms: dict[str, float] = field(default_factory=dict)  # p50, p99, max of received - traded
    checks: dict[str, list[CheckOutcome]] = field(default_factory=dict)  # dataset -> its checks on this batch

    @property
    def trade_rows(self) -> int:
        return self.rows.get(MARKET_TRADES.dataset, 0)

    @property
    def quarantined_rows(self) -> int:
        return self.rows.get(QUARANTINE.dataset, 0)


def to_parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def _write_table(store: ObjectStore, exchange: str, batch_id: str, table: Table,
                 rows: pa.Table) -> dict[str, pa.Schema]:
    """Write one dataset of the batch, a file per partition; returns each key with the schema written."""
    rows = rows.append_column("batch_id", pa.array([batch_id] * rows.num_rows, pa.string()))
    rows = rows.select(table.column_names).cast(table.arrow_schema)
    frame = pl.from_arrow(rows)
    assert isinstance(frame, pl.DataFrame)
    keys = [k for k in table.lake_partitions if k != "exchange"]
    frame = frame.with_columns(date=pl.col(table.time_column).dt.date())
    written: dict[str, pa.Schema] = {}
    parts = frame.partition_by(keys, as_dict=True, maintain_order=True)
    # Each file says how many files its batch has, so a loader never loads a batch it sees half-written.
    batch_metadata = {BATCH_FILES_METADATA: str(len(parts)).encode()}
    for values, part in parts.items():
        by_key = dict(zip(keys, values, strict=True))
        day = by_key["date"]
        assert isinstance(day, date)
        key = table.lake_key(batch_id, exchange, day, by_key.get("symbol"))
        data = to_parquet_bytes(part.drop("date").to_arrow().cast(table.arrow_schema)
                                .replace_schema_metadata(batch_metadata))
        store.put(key, data)
        written[key] = pq.read_schema(io.BytesIO(data))  # what a reader of the lake will see
    return written


def write_batch(store: ObjectStore, exchange: str, batch_id: str, tables: dict[Table, pa.Table]) -> WrittenBatch:
    """Write every non-empty dataset of the batch; returns what was written."""
    written = WrittenBatch(batch_id)
    parts: dict[Table, dict[str, pa.Schema]] = {}
    for table, rows in tables.items():
        written.rows[table.dataset] = rows.num_rows
        if rows.num_rows:
            parts[table] = _write_table(store, exchange, batch_id, table, rows)
            written.keys += list(parts[table])
    written.checks = batch_checks(tables, parts)
    trades = tables.get(MARKET_TRADES)
    if trades is not None and trades.num_rows:
        frame = pl.from_arrow(trades.select(["symbol", "timestamp", "received_at"]))
        assert isinstance(frame, pl.DataFrame)
        written.symbols = sorted(frame.get_column("symbol").unique().to_list())
        timestamps = frame.get_column("timestamp").dt.epoch("us")
        written.first_trade_us = int(timestamps.min())  # type: ignore[arg-type]
        written.last_trade_us = int(timestamps.max())  # type: ignore[arg-type]
        lag_ms = (frame.get_column("received_at").dt.epoch("us") - timestamps) / 1000
        written.max_receive_lag_ms = round(float(lag_ms.max()), 3)  # type: ignore[arg-type]
        written.receive_lag_ms = {"p50": round(float(lag_ms.quantile(0.5) or 0.0), 3),
                                  "p99": round(float(lag_ms.quantile(0.99) or 0.0), 3),
                                  "max": written.max_receive_lag_ms}
    rejects = tables.get(QUARANTINE)
    if rejects is not None and rejects.num_rows:
        written.quarantined_by_reason = _counts(rejects, "reason")
    events = next((rows for table, rows in tables.items() if table.dataset == "book_events"), None)
    if events is not None and events.num_rows:
        written.book_events_by_kind = _counts(events, "kind")
    return written


def _counts(rows: pa.Table, column: str) -> dict[str, int]:
    values = rows.column(column).value_counts().to_pylist()
    return {item["values"]: item["counts"] for item in values}
