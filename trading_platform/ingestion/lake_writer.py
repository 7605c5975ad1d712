"""Write a sealed batch to the lake as zstd Parquet: one file per Hive partition of each dataset."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import date

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from trading_platform.schema import MARKET_TRADES, QUARANTINE, Table
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


def _write_table(store: ObjectStore, exchange: str, batch_id: str, table: Table, rows: pa.Table) -> list[str]:
    rows = rows.append_column("batch_id", pa.array([batch_id] * rows.num_rows, pa.string()))
    rows = rows.select(table.column_names).cast(table.arrow_schema)
    frame = pl.from_arrow(rows)
    assert isinstance(frame, pl.DataFrame)
    keys = [k for k in table.lake_partitions if k != "exchange"]
    frame = frame.with_columns(date=pl.col(table.time_column).dt.date())
    written = []
    for values, part in frame.partition_by(keys, as_dict=True, maintain_order=True).items():
        by_key = dict(zip(keys, values, strict=True))
        day = by_key["date"]
        assert isinstance(day, date)
        key = table.lake_key(batch_id, exchange, day, by_key.get("symbol"))  # type: ignore[arg-type]
        store.put(key, to_parquet_bytes(part.drop("date").to_arrow().cast(table.arrow_schema)))
        written.append(key)
    return written


def write_batch(store: ObjectStore, exchange: str, batch_id: str, tables: dict[Table, pa.Table]) -> WrittenBatch:
    """Write every non-empty dataset of the batch; returns what was written."""
    written = WrittenBatch(batch_id)
    for table, rows in tables.items():
        written.rows[table.dataset] = rows.num_rows
        if rows.num_rows:
            written.keys += _write_table(store, exchange, batch_id, table, rows)
    trades = tables.get(MARKET_TRADES)
    if trades is not None and trades.num_rows:
        frame = pl.from_arrow(trades.select(["symbol", "timestamp", "received_at"]))
        assert isinstance(frame, pl.DataFrame)
        written.symbols = sorted(frame.get_column("symbol").unique().to_list())
        timestamps = frame.get_column("timestamp").dt.epoch("us")
        written.first_trade_us = int(timestamps.min())  # type: ignore[arg-type]
        written.last_trade_us = int(timestamps.max())  # type: ignore[arg-type]
        lag = (frame.get_column("received_at").dt.epoch("us") - timestamps).max()
        written.max_receive_lag_ms = round(float(lag) / 1000, 3)  # type: ignore[arg-type]
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
