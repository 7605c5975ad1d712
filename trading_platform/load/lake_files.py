"""The lake as the loads read it: which date partitions, which Parquet files, whose batch, their content.

A compacted partition holds ``_compacted.json``: the one compacted file in force and the small files it
replaced. Readers that list through here follow it (the replaced files are skipped, and a compacted file
it does not name - one still being written - is not read), so the switch is the single write of that
small object: a reader sees the small files or the compacted one, never both or neither.
"""

from __future__ import annotations

import hashlib
import io
import json
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
    return sorted(k for prefix in lake_partitions(store, table, days)
                  for k in partition_files(store, prefix, store.list_keys(prefix)))


def lake_partitions(store: ObjectStore, table: Table, days: Iterable[date]) -> list[str]:
    """The key prefixes of ``table``'s deepest partitions (``.../date=YYYY-MM-DD/``) on these days."""
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
    return prefixes


COMPACTION_MARKER = "_compacted.json"
COMPACTED_PREFIX = "compacted-"


def partition_files(store: ObjectStore, prefix: str, keys: list[str]) -> list[str]:
    """The Parquet files a reader reads among one partition's ``keys``, following its compaction marker."""
    files = [k for k in keys if k.endswith(".parquet")]
    in_force, replaced = read_compaction_marker(store, prefix) if prefix + COMPACTION_MARKER in keys else ("", set())
    return [k for k in files if k not in replaced
            and (not k.rsplit("/", 1)[-1].startswith(COMPACTED_PREFIX) or k == in_force)]


def read_compaction_marker(store: ObjectStore, prefix: str) -> tuple[str, set[str]]:
    """(the compacted file in force, the files it replaced) of a compacted partition."""
    marker = json.loads(store.get(prefix + COMPACTION_MARKER))
    return str(marker["compacted"]), {str(key) for key in marker["replaced"]}


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
