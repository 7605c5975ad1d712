"""Lake -> ClickHouse, exactly once: each lake batch (all the files of one flush, for one table) is one
insert whose dedup token names exactly those files, and a manifest row per file records it. A retry
after a crash between the two sees the same complete batch, re-sends the same insert, which ClickHouse
drops as a duplicate token, then writes the missing manifest rows. A batch is loaded only once all of
its files are in the lake (each file carries its batch's file count), so two loads, or a load and a
retry, always form the same inserts. Files written without that count (by hand, by other tools) load
one file per insert, with their key as the token.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from trading_platform.load.lake_files import batch_of, content_checksum, lake_days, list_lake_keys
from trading_platform.load.manifest import ManifestRow, loaded_keys, manifest_row, write_manifest
from trading_platform.quality.batch_checks import row_check, schema_problems
from trading_platform.schema import BATCH_FILES_METADATA, Table
from trading_platform.storage.clickhouse import ClickHouse
from trading_platform.storage.object_store import ObjectStore

MANIFEST_EVERY = 200  # files between manifest writes, so a long load keeps its progress


@dataclass
class LoadResult:
    files: int = 0
    rows: int = 0
    keys: list[str] = field(default_factory=list)
    pending_before: int = 0
    # Files that fail the lake checks (layout or row rules) stay out of ClickHouse until fixed; key -> why.
    held_back: dict[str, str] = field(default_factory=dict)
    rows_per_key: dict[str, int] = field(default_factory=dict)
    # Batches still being written (fewer files in the lake than the batch declares): loaded next time.
    incomplete: dict[str, str] = field(default_factory=dict)  # batch id -> "seen/declared files"
    inserts: int = 0
    listed: list[str] = field(default_factory=list)  # every lake key the load saw (loaded before or not)

    def rows_by_exchange(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for key, rows in self.rows_per_key.items():
            exchange = key.split("/exchange=", 1)[1].split("/", 1)[0]
            totals[exchange] = totals.get(exchange, 0) + rows
        return totals


@dataclass
class _LakeFile:
    key: str
    rows: pa.Table | None = None
    checksum: str = ""
    batch_files: int | None = None  # files its batch declares; None when written without the count
    problem: str = ""  # why the lake checks hold it back


def _read_lake_file(store: ObjectStore, key: str, table: Table) -> _LakeFile:
    data = store.get(key)
    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
    except pa.ArrowInvalid as error:
        return _LakeFile(key, problem=f"not a Parquet file: {error}")
    schema = parquet.schema_arrow
    declared = (schema.metadata or {}).get(BATCH_FILES_METADATA)
    problems = schema_problems(schema, table)
    if problems:
        return _LakeFile(key, problem="; ".join(problems))
    rows = parquet.read(columns=table.column_names).cast(table.arrow_schema)
    return _LakeFile(key, rows, content_checksum(data), int(declared) if declared is not None else None)


def _insert_units(store: ObjectStore, table: Table, pending: list[str], loaded: set[str],
                  result: LoadResult) -> Iterator[tuple[str, list[_LakeFile], pa.Table]]:
    """(dedup token, files, their rows) of each insert: one per complete batch, one per file without a count.

    Batches still being written go to ``result.incomplete``; files failing the lake checks, with their
    whole batch, to ``result.held_back``."""
    by_batch: dict[str, list[str]] = {}
    for key in pending:
        by_batch.setdefault(batch_of(key), []).append(key)
    loaded_per_batch = Counter(batch_of(key) for key in loaded)
    for batch, keys in by_batch.items():
        files = [_read_lake_file(store, key, table) for key in keys]
        counted = [f for f in files if f.batch_files is not None]
        for single in (f for f in files if f.batch_files is None):
            if single.problem:
                result.held_back[single.key] = single.problem
                continue
            rows, verdict = _checked_rows(table, [single])
            if verdict:
                result.held_back[single.key] = verdict
            else:
                yield single.key, [single], rows
        if not counted:
            continue
        declared = max(f.batch_files or 0 for f in counted)
        # Files of this batch an earlier load already took (a batch's files load together, so only after
        # a partial load by an older version of the loader) count toward completeness too.
        already = loaded_per_batch[batch]
        if len(counted) + already < declared:
            result.incomplete[batch] = f"{len(counted) + already}/{declared}"
            continue
        # A blocking lake check holds back the whole batch: its rows load together or not at all.
        problem = next((f"{f.key}: {f.problem}" for f in counted if f.problem), "")
        rows, verdict = _checked_rows(table, counted) if not problem else (None, problem)
        if rows is None or verdict:
            for f in counted:
                result.held_back[f.key] = problem or verdict
            continue
        names = "\n".join(sorted(f.key for f in counted))
        yield f"batch:{hashlib.blake2b(names.encode(), digest_size=16).hexdigest()}", counted, rows


def _checked_rows(table: Table, files: list[_LakeFile]) -> tuple[pa.Table, str]:
    """The files' rows as one table, and why the row rules hold them back ("" when they pass)."""
    rows = pa.concat_tables([f.rows for f in files if f.rows is not None])
    verdict = row_check(table, rows)
    return rows, "" if verdict.passed else verdict.description


def load_keys(store: ObjectStore, ch: ClickHouse, table: Table, keys: list[str],
              loaded: set[str] | None = None) -> LoadResult:
    """Load these lake files of ``table``; ``loaded``: the files the manifest already holds."""
    result = LoadResult()
    manifest: list[ManifestRow] = []
    for token, files, rows in _insert_units(store, table, keys, loaded or set(), result):
        ch.insert_arrow(table.qualified_name, rows, dedup_token=token)
        result.inserts += 1
        for f in files:
            assert f.rows is not None
            manifest.append(manifest_row(table, f.key, f.rows.num_rows, f.checksum))
            result.files += 1
            result.rows += f.rows.num_rows
            result.keys.append(f.key)
            result.rows_per_key[f.key] = f.rows.num_rows
        # Written between inserts, so one batch's manifest rows always land together.
        if len(manifest) >= MANIFEST_EVERY:
            write_manifest(ch, manifest)
            manifest = []
    if manifest:
        write_manifest(ch, manifest)
    return result


def load_new_batches(store: ObjectStore, ch: ClickHouse, table: Table, lookback_days: int) -> LoadResult:
    """Load every lake file of the last ``lookback_days`` date partitions not yet in the manifest."""
    days = lake_days(lookback_days)
    loaded = loaded_keys(ch, table, days)
    listed = list_lake_keys(store, table, days)
    pending = sorted(set(listed) - loaded)
    result = load_keys(store, ch, table, pending, loaded)
    result.pending_before = len(pending)
    result.listed = listed
    return result
