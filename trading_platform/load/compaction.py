"""Compaction of a closed day: each partition's small files (one per flush) merged into one sorted file.

Per partition (dataset, exchange, symbol, date), in an order that is safe to stop anywhere and run again:
1. the small files must all be loaded (in the manifest, with the checksum of the bytes read now): the
   compacted file then stands for rows ClickHouse already holds, and is never loaded again;
2. write ``compacted-<digest of the replaced keys>.parquet``, sorted by time, and read it back: its rows
   must equal the small files' rows (count and content);
3. record it in the manifest (rows and checksum);
4. switch readers to it: write ``_compacted.json`` naming it and the files it replaces (``lake_files``);
5. forget the replaced files' manifest rows and delete them.
A rerun after a crash in 3-5 finds the marker and finishes 5. Files that land in the day later (a late
batch) are read beside the compacted file, and a later compaction folds them in.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq

from trading_platform.ingestion.lake_writer import to_parquet_bytes
from trading_platform.load.lake_files import (
    COMPACTED_PREFIX,
    COMPACTION_MARKER,
    content_checksum,
    lake_partitions,
    partition_files,
    read_compaction_marker,
    read_parquet,
)
from trading_platform.load.manifest import forget_loaded, manifest_row, write_manifest
from trading_platform.schema import LOAD_MANIFEST, Table
from trading_platform.sql import quote_string, string_list
from trading_platform.storage.clickhouse import ClickHouse
from trading_platform.storage.object_store import ObjectStore


class CompactionRefused(RuntimeError):
    """A partition that must not be compacted now (files not loaded yet, or changed since they were)."""


@dataclass
class CompactionResult:
    day: date
    partitions: int = 0  # partitions compacted by this call
    files_replaced: int = 0
    rows: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # partition -> why it was left as it is


def compact_day(store: ObjectStore, ch: ClickHouse, table: Table, day: date) -> CompactionResult:
    """Compact every partition of ``table`` on ``day`` that has more than one file to read."""
    result = CompactionResult(day)
    for prefix in lake_partitions(store, table, [day]):
        listed = store.list_keys(prefix)
        if prefix + COMPACTION_MARKER in listed:
            _finish(store, ch, table, prefix, listed)  # a run that stopped after switching readers
            listed = store.list_keys(prefix)
        keys = partition_files(store, prefix, listed)
        if len(keys) < 2:
            continue
        try:
            rows = _compact_partition(store, ch, table, prefix, keys)
        except CompactionRefused as why:
            result.skipped[prefix] = str(why)
            continue
        result.partitions += 1
        result.files_replaced += len(keys)
        result.rows += rows
    return result


def _compact_partition(store: ObjectStore, ch: ClickHouse, table: Table, prefix: str, keys: list[str]) -> int:
    recorded = _manifest_checksums(ch, table, keys)
    parts: list[pa.Table] = []
    for key in keys:
        rows, checksum = read_parquet(store, key, table)
        if recorded.get(key) is None:
            raise CompactionRefused(f"{key} is not loaded into ClickHouse yet; compaction waits for the load")
        if recorded[key] != checksum:
            raise CompactionRefused(f"{key} changed since it was loaded (checksum {checksum}, loaded "
                                    f"{recorded[key]}); rebuild the day first")
        parts.append(rows)
    # By time, then by every other column that can be ordered (a book's level lists cannot): a stable order
    # whatever order the small files were listed in.
    scalar = [f.name for f in table.arrow_schema if not pa.types.is_nested(f.type) and f.name != table.time_column]
    order = [(table.time_column, "ascending"), *((c, "ascending") for c in scalar)]
    merged = pa.concat_tables(parts).sort_by(order)
    digest = hashlib.blake2b("\n".join(sorted(keys)).encode(), digest_size=8).hexdigest()
    compacted = f"{prefix}{COMPACTED_PREFIX}{digest}.parquet"
    data = to_parquet_bytes(merged)
    store.put(compacted, data)
    written = pq.read_table(io.BytesIO(store.get(compacted))).select(table.column_names).cast(table.arrow_schema)
    if written.num_rows != merged.num_rows or not written.equals(merged):
        raise CompactionRefused(f"{compacted} read back differs from the files it merges; nothing replaced")
    write_manifest(ch, [manifest_row(table, compacted, merged.num_rows, content_checksum(data))])
    replaced = list(keys)
    store.put(prefix + COMPACTION_MARKER, json.dumps({"compacted": compacted, "replaced": replaced,
                                                      "rows": merged.num_rows}).encode())
    _finish(store, ch, table, prefix, store.list_keys(prefix))
    return int(merged.num_rows)


def _finish(store: ObjectStore, ch: ClickHouse, table: Table, prefix: str, listed: list[str]) -> None:
    """Step 5 for a partition whose marker is written: forget and delete what the compacted file replaced
    (and a compacted file an earlier, stopped run wrote but never switched to)."""
    compacted, replaced = read_compaction_marker(store, prefix)
    stale = [k for k in listed if k in replaced or (k.rsplit("/", 1)[-1].startswith(COMPACTED_PREFIX)
                                                     and k != compacted)]
    if stale:
        forget_loaded(ch, table, stale)
        for key in stale:
            store.delete(key)


def _manifest_checksums(ch: ClickHouse, table: Table, keys: list[str]) -> dict[str, str]:
    rows = ch.query_arrow(
        f"SELECT lake_key, any(checksum) AS checksum FROM {LOAD_MANIFEST.sql_name} "
        f"WHERE table_name = {quote_string(table.name)} AND lake_key IN ({string_list(keys)}) GROUP BY lake_key"
    ).to_pylist()
    return {str(r["lake_key"]): str(r["checksum"]) for r in rows}
