"""Lake -> ClickHouse, exactly once, many lake batches per insert.

A load takes the lake files not yet in the manifest. A batch (all the files of one flush, for one table)
is loaded only once all of its files are in the lake (each file carries its batch's file count) and all
of them pass the lake checks; otherwise it waits (``incomplete``) or is held back (``held_back``), whole.
Files written without that count (by hand, by other tools) stand alone, each checked on its own.

The batches that pass are inserted in groups (up to ``GROUP_MAX_BYTES`` of rows each: one insert, one
manifest write). Before a group is sent, the load claims the table's next epoch in ``trading.load_intents``
with one row naming the group's files and its dedup token; of two loads claiming the same epoch
ClickHouse keeps the first row only, and the loser leaves the winner's files alone. A load first sends
again every open intent (one whose files the manifest does not hold yet), with exactly the recorded files
and token: after a crash between insert and manifest write ClickHouse drops the repeated insert and the
manifest rows are written; after a crash before the insert the rows go in now. A file named by an intent
is never put in another group, so two loads, or a load and a retry, never insert a file under two tokens.
"""

from __future__ import annotations

import hashlib
from collections import Counter, deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache

import pyarrow as pa
import pyarrow.parquet as pq

from trading_platform.load.lake_files import batch_of, content_checksum, lake_days, list_lake_keys
from trading_platform.load.manifest import Intent, claim_epoch, loaded_keys, manifest_rows, read_intents, write_manifest
from trading_platform.quality.batch_checks import row_check, schema_problems
from trading_platform.schema import BATCH_FILES_METADATA, Table
from trading_platform.storage.clickhouse import ClickHouse
from trading_platform.storage.object_store import ObjectStore

# Arrow bytes of rows per insert (about 350 k trade rows): large enough that a day of 10 s flushes takes few
# inserts, small enough to bound the memory of a catch-up load after days down. Nothing is inserted until the
# first group is read and checked, and the next group is read while one is inserted: 32 MiB loaded a 3 M-row
# day 15% faster than 64 MiB (median of 6 alternating runs, 1.25 M vs 1.09 M rows/s), 16 MiB slower again
# (more inserts, each with its claim and manifest write).
GROUP_MAX_BYTES = 32 << 20
# Files are fetched, hashed and decoded in threads (object-store I/O, hashlib and pyarrow release the GIL),
# this many at most ahead of the grouping, so the loader's memory stays bounded too.
READ_THREADS = 2
READ_AHEAD = 256


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


# A unit loads whole or not at all: the files of one complete batch, or one file written without a count.
_Unit = list[_LakeFile]


@lru_cache(maxsize=64)
def _layout_problems(schema: pa.Schema, table: Table) -> str:
    """The layout check of a file schema; cached, because every file of a dataset has the same one."""
    return "; ".join(schema_problems(schema, table))


def _dictionary_columns(table: Table) -> list[str]:
    """The columns ClickHouse stores as LowCardinality: read from Parquet as Arrow dictionaries (their Parquet
    dictionary pages, without building each string) and sent so, which ClickHouse turns into its own
    dictionaries far faster than it hashes the same strings row by row."""
    return [c.name for c in table.columns if c.clickhouse_type.startswith("LowCardinality(")]


@lru_cache(maxsize=16)
def _insert_schema(table: Table) -> pa.Schema:
    """``table``'s Arrow schema as the loader reads and inserts it: LowCardinality columns as dictionaries."""
    schema = table.arrow_schema
    for name in _dictionary_columns(table):
        i = schema.get_field_index(name)
        schema = schema.set(i, schema.field(i).with_type(pa.dictionary(pa.int32(), schema.field(i).type)))
    return schema


def _read_lake_file(store: ObjectStore, key: str, table: Table) -> _LakeFile:
    data = store.get(key)
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data), read_dictionary=_dictionary_columns(table))
    except pa.ArrowInvalid as error:
        return _LakeFile(key, problem=f"not a Parquet file: {error}")
    # The layout as written (``schema_arrow`` would show the dictionary reading asked for above).
    schema = parquet.metadata.schema.to_arrow_schema()
    declared = (schema.metadata or {}).get(BATCH_FILES_METADATA)
    problem = _layout_problems(schema.remove_metadata(), table)
    if problem:
        return _LakeFile(key, problem=problem)
    rows = parquet.read(columns=table.column_names, use_threads=False).select(table.column_names)
    if not rows.schema.equals(_insert_schema(table)):  # the platform's own files already have these types
        rows = rows.cast(_insert_schema(table))
    return _LakeFile(key, rows, content_checksum(data), int(declared) if declared is not None else None)


def _read_files(store: ObjectStore, keys: Iterable[str], table: Table) -> Iterator[_LakeFile]:
    """The files of ``keys``, in that order, read up to ``READ_AHEAD`` files ahead in threads."""
    with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="lake-read") as pool:
        ahead: deque[Future[_LakeFile]] = deque()
        for key in keys:
            ahead.append(pool.submit(_read_lake_file, store, key, table))
            if len(ahead) >= READ_AHEAD:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()


def _units_of(files: list[_LakeFile]) -> list[_Unit]:
    """The load units among these files: one per batch for counted files, one per file without a count."""
    by_batch: dict[str, _Unit] = {}
    singles: list[_Unit] = []
    for f in files:
        if f.batch_files is None:
            singles.append([f])
        else:
            by_batch.setdefault(batch_of(f.key), []).append(f)
    return [*singles, *by_batch.values()]


def _rows(table: Table, units: list[_Unit]) -> pa.Table:
    """The units' rows as one table of one chunk per column: chdb's Python() reads one chunk far faster than
    thousands of small ones, and so does polars. The files' dictionaries are unified first, so the
    dictionary columns concatenate as indices."""
    parts = [f.rows for unit in units for f in unit if f.rows is not None]
    if not parts:
        return _insert_schema(table).empty_table()
    return pa.concat_tables(parts).unify_dictionaries().combine_chunks()


def _row_verdicts(table: Table, units: list[_Unit]) -> tuple[pa.Table, dict[int, str]]:
    """The units' rows, and index -> why for each unit whose rows break the row rules.

    One check over all the units first: every rule but uniqueness is per row, and a duplicate inside a
    unit is a duplicate in the whole, so a pass means each unit passes. Only after a failure is each unit
    checked on its own (a trade id repeated across two batches does not hold either back)."""
    rows = _rows(table, units)
    # The rules read plain strings; decoding the few dictionary columns is cheap next to the check.
    if row_check(table, rows.cast(table.arrow_schema)).passed:
        return rows, {}
    verdicts = {i: row_check(table, _rows(table, [unit]).cast(table.arrow_schema)) for i, unit in enumerate(units)}
    return rows, {i: verdict.description for i, verdict in verdicts.items() if not verdict.passed}


def _group_token(table: Table, epoch: int, keys: list[str]) -> str:
    digest = hashlib.blake2b("\n".join(keys).encode(), digest_size=16).hexdigest()
    return f"group:{table.name}:{epoch}:{digest}"


class _Load:
    """One incremental load of one table: open intents first, then the pending files in groups."""

    def __init__(self, store: ObjectStore, ch: ClickHouse, table: Table, days: list[date],
                 group_max_bytes: int) -> None:
        self.store, self.ch, self.table, self.days = store, ch, table, days
        self.group_max_bytes = group_max_bytes
        self.result = LoadResult()
        self.loaded = loaded_keys(ch, table, days)
        self.epoch, self.intents = read_intents(ch, table, days)

    def in_days(self, key: str) -> bool:
        return any(f"/date={day.isoformat()}/" in key for day in self.days)

    def run(self, listed: list[str]) -> LoadResult:
        self.result.listed = listed
        in_lake = set(listed)
        for intent in self.intents:
            # The manifest rows of a group are one insert: one loaded file of it means all of them are.
            if any(k not in self.loaded for k in intent.keys if self.in_days(k)):
                self._send_again(intent, [k for k in intent.keys if self.in_days(k) and k not in in_lake])
        claimed = {k for intent in self.intents for k in intent.keys}
        pending = sorted(set(listed) - self.loaded - claimed)
        self.result.pending_before = len(pending)
        # The next group is read and checked in a thread while this one is inserted (chdb, pyarrow and polars
        # release the GIL); claims and inserts stay here, in order, one at a time.
        groups = self._checked_groups(pending)
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="lake-group") as prepare:
                upcoming = prepare.submit(next, groups, None)
                while (group := upcoming.result()) is not None:
                    upcoming = prepare.submit(next, groups, None)
                    self._load_group(*group)
        finally:
            groups.close()
        return self.result

    def _checked_groups(self, pending: list[str]) -> Generator[tuple[list[_Unit], pa.Table]]:
        """The pending units that pass every lake check, in groups of up to ``group_max_bytes``, with their
        rows as one table."""
        group: list[_Unit] = []
        size = 0
        for unit in self._units(pending):
            group.append(unit)
            size += sum(f.rows.get_total_buffer_size() for f in unit if f.rows is not None)
            if size >= self.group_max_bytes:
                yield self._checked(group)
                group, size = [], 0
        if group:
            yield self._checked(group)

    def _checked(self, units: list[_Unit]) -> tuple[list[_Unit], pa.Table]:
        """The units whose rows pass the row rules, and those rows; the others go to ``held_back``."""
        rows, failing = _row_verdicts(self.table, units)
        for i, why in failing.items():
            self.result.held_back.update((f.key, why) for f in units[i])
        if failing:
            units = [unit for i, unit in enumerate(units) if i not in failing]
            rows = _rows(self.table, units)
        return units, rows

    def _units(self, pending: list[str]) -> Iterator[_Unit]:
        """The pending files' load units that pass the file checks, batch by batch; batches still being
        written go to ``incomplete``, files failing the lake layout check, with their whole batch, to
        ``held_back``."""
        by_batch: dict[str, list[str]] = {}
        for key in pending:
            by_batch.setdefault(batch_of(key), []).append(key)
        loaded_per_batch = Counter(batch_of(key) for key in self.loaded)
        files = _read_files(self.store, (key for keys in by_batch.values() for key in keys), self.table)
        for batch, keys in by_batch.items():
            batch_files = [next(files) for _ in keys]
            counted = [f for f in batch_files if f.batch_files is not None]
            for single in (f for f in batch_files if f.batch_files is None):
                if single.problem:
                    self.result.held_back[single.key] = single.problem
                else:
                    yield [single]
            if not counted:
                continue
            declared = max(f.batch_files or 0 for f in counted)
            # Files of this batch an earlier load already took (a batch's files load together, so only after
            # a partial load by an older version of the loader) count toward completeness too.
            already = loaded_per_batch[batch]
            if len(counted) + already < declared:
                self.result.incomplete[batch] = f"{len(counted) + already}/{declared}"
                continue
            # A blocking lake check holds back the whole batch: its rows load together or not at all.
            problem = next((f"{f.key}: {f.problem}" for f in counted if f.problem), "")
            if problem:
                self.result.held_back.update((f.key, problem) for f in counted)
                continue
            yield counted

    def _load_group(self, units: list[_Unit], rows: pa.Table) -> None:
        """Claim an epoch for these units, insert their rows, write their manifest rows."""
        while units:
            keys = [f.key for unit in units for f in unit]
            epoch = self.epoch + 1
            token = _group_token(self.table, epoch, keys)
            if claim_epoch(self.ch, self.table, epoch, token, keys):
                self.epoch = epoch
                self._insert(token, units, rows)
                return
            # Another load claimed this epoch first: the files it named are its own now (it, or the retry of
            # its intent, loads them); the rest form a new group under the next free epoch.
            self.epoch, intents = read_intents(self.ch, self.table, self.days)
            taken = {k for intent in intents for k in intent.keys}
            kept = [unit for unit in units if not any(f.key in taken for f in unit)]
            if len(kept) < len(units):
                units, rows = kept, _rows(self.table, kept)

    def _send_again(self, intent: Intent, missing: list[str]) -> None:
        """Send an open intent's group again, exactly as claimed, or hold all of it back saying why."""
        files = [] if missing else list(_read_files(self.store, intent.keys, self.table))
        units = _units_of(files)
        problem = (f"{missing[0]} is no longer in the lake" if missing else
                   next((f"{f.key}: {f.problem}" for f in files if f.problem), ""))
        rows, failing = (None, {}) if problem else _row_verdicts(self.table, units)
        if rows is None or failing:
            why = problem or "; ".join(failing.values())
            for key in intent.keys:
                if key not in self.loaded:
                    self.result.held_back[key] = (f"load intent {intent.epoch} can no longer be sent as "
                                                  f"claimed: {why}")
            return
        self._insert(intent.token, units, rows)

    def _insert(self, token: str, units: list[_Unit], rows: pa.Table) -> None:
        files = [f for unit in units for f in unit if f.rows is not None]
        self.ch.insert_arrow(self.table.qualified_name, rows, dedup_token=token)
        self.result.inserts += 1
        new = [f for f in files if f.key not in self.loaded]
        if new:
            counts = [f.rows.num_rows for f in new if f.rows is not None]
            write_manifest(self.ch, manifest_rows(self.table, [f.key for f in new], counts,
                                                  [f.checksum for f in new]))
        for f in files:
            assert f.rows is not None
            self.result.files += 1
            self.result.rows += f.rows.num_rows
            self.result.keys.append(f.key)
            self.result.rows_per_key[f.key] = f.rows.num_rows
        self.loaded.update(f.key for f in files)


def load_new_batches(store: ObjectStore, ch: ClickHouse, table: Table, lookback_days: int,
                     group_max_bytes: int = GROUP_MAX_BYTES) -> LoadResult:
    """Load every lake file of the last ``lookback_days`` date partitions not yet in the manifest, in inserts
    of about ``group_max_bytes`` of rows (whole batches each; 1: one batch per insert)."""
    days = lake_days(lookback_days)
    load = _Load(store, ch, table, days, group_max_bytes)
    return load.run(list_lake_keys(store, table, days))
