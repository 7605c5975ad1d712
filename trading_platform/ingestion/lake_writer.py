"""Seal decoded rows into a batch and write it to the lake as zstd Parquet, one file per partition."""

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
    trade_rows: int
    quarantined_rows: int
    keys: list[str] = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)
    first_trade_us: int | None = None
    last_trade_us: int | None = None
    max_receive_lag_ms: float | None = None
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)


def to_parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def _with_batch_id(table: pa.Table, batch_id: str, target: Table) -> pa.Table:
    table = table.append_column("batch_id", pa.array([batch_id] * table.num_rows, pa.string()))
    return table.select(target.column_names).cast(target.arrow_schema)


def write_batch(store: ObjectStore, exchange: str, batch_id: str, trades: pa.Table,
                rejects: pa.Table) -> WrittenBatch:
    """Write trades per (symbol, trade date) and rejects per receive date; returns what was written."""
    written = WrittenBatch(batch_id, trades.num_rows, rejects.num_rows)
    if trades.num_rows:
        trades = _with_batch_id(trades, batch_id, MARKET_TRADES)
        frame = pl.from_arrow(trades)
        assert isinstance(frame, pl.DataFrame)
        frame = frame.with_columns(_date=pl.col("timestamp").dt.date())
        for (symbol, day), part in frame.partition_by(["symbol", "_date"], as_dict=True,
                                                      maintain_order=True).items():
            assert isinstance(symbol, str) and isinstance(day, date)
            key = MARKET_TRADES.lake_key(batch_id, exchange, day, symbol)
            store.put(key, to_parquet_bytes(part.drop("_date").to_arrow().cast(MARKET_TRADES.arrow_schema)))
            written.keys.append(key)
        written.symbols = sorted(frame.get_column("symbol").unique().to_list())
        timestamps = frame.get_column("timestamp").dt.epoch("us")
        written.first_trade_us = int(timestamps.min())  # type: ignore[arg-type]
        written.last_trade_us = int(timestamps.max())  # type: ignore[arg-type]
        lag = (frame.get_column("received_at").dt.epoch("us") - timestamps).max()
        written.max_receive_lag_ms = round(float(lag) / 1000, 3)  # type: ignore[arg-type]
    if rejects.num_rows:
        rejects = _with_batch_id(rejects, batch_id, QUARANTINE)
        frame = pl.from_arrow(rejects)
        assert isinstance(frame, pl.DataFrame)
        frame = frame.with_columns(_date=pl.col("received_at").dt.date())
        for (day,), part in frame.partition_by(["_date"], as_dict=True, maintain_order=True).items():
            assert isinstance(day, date)
            key = QUARANTINE.lake_key(batch_id, exchange, day)
            store.put(key, to_parquet_bytes(part.drop("_date").to_arrow().cast(QUARANTINE.arrow_schema)))
            written.keys.append(key)
        written.quarantined_by_reason = dict(frame.get_column("reason").value_counts().iter_rows())
    return written
