"""The lake as the loads read it: which date partitions, which Parquet files, whose batch, their content."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from trading_platform.schema import Table
from trading_platform.storage.object_store import ObjectStore


def lake_days(lookback_days: int, today: date | None = None) -> list[date]:
    today = today or datetime.now(UTC).date()
    return [today - timedelta(days=n) for n in range(lookback_days)]


def list_lake_keys(store: ObjectStore, table: Table, days: Iterable[date]) -> list[str]:
    """Every Parquet key of ``table`` in the given date partitions, walking partitions, not all keys."""
    wanted = {f"date={day.isoformat()}/" for day in days}
    prefixes = [table.lake_prefix()]
    for key in table.lake_partitions:
        next_prefixes: list[str] = []
        for prefix in prefixes:
            children = store.list_children(prefix)
            if key == "date":
                children = [c for c in children if c[len(prefix):] in wanted]
            next_prefixes.extend(children)
        prefixes = next_prefixes
    return sorted(k for prefix in prefixes for k in store.list_keys(prefix) if k.endswith(".parquet"))


def batch_of(key: str) -> str:
    """The batch id of a lake file: its file name (``{batch_id}.parquet``)."""
    return key.rsplit("/", 1)[-1].removesuffix(".parquet")


def content_checksum(data: bytes) -> str:
    """What the manifest records of a loaded file's bytes."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def read_parquet(store: ObjectStore, key: str, table: Table) -> tuple[pa.Table, str]:
    """A lake file's rows in ``table``'s columns and types, and its content checksum."""
    data = store.get(key)
    return pq.read_table(io.BytesIO(data)).select(table.column_names).cast(table.arrow_schema), (
        content_checksum(data))
