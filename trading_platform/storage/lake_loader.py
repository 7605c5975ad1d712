"""Lake -> ClickHouse, exactly once: each Parquet file is one insert whose dedup token is its key,
and a manifest row records it. A retry after a crash between the two re-sends the insert, which
ClickHouse drops as a duplicate token, then writes the missing manifest row.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from trading_platform.schema import LOAD_MANIFEST, Table
from trading_platform.storage.clickhouse import ClickHouse
from trading_platform.storage.object_store import ObjectStore

MANIFEST_EVERY = 200  # files between manifest writes, so a long load keeps its progress


@dataclass
class LoadResult:
    files: int = 0
    rows: int = 0
    keys: list[str] = field(default_factory=list)
    pending_before: int = 0


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


def loaded_keys(ch: ClickHouse, table: Table, days: Iterable[date]) -> set[str]:
    patterns = " OR ".join(f"position(lake_key, 'date={day.isoformat()}/') > 0" for day in days)
    result = ch.query_arrow(
        f"SELECT DISTINCT lake_key FROM {LOAD_MANIFEST.qualified_name} "
        f"WHERE table_name = '{table.name}' AND ({patterns or '1'})"
    )
    return set(result.column("lake_key").to_pylist())


def read_parquet(store: ObjectStore, key: str, table: Table) -> tuple[pa.Table, str]:
    data = store.get(key)
    return pq.read_table(io.BytesIO(data)).select(table.column_names).cast(table.arrow_schema), (
        hashlib.blake2b(data, digest_size=16).hexdigest())


def load_keys(store: ObjectStore, ch: ClickHouse, table: Table, keys: list[str]) -> LoadResult:
    result = LoadResult()
    manifest: list[dict[str, object]] = []
    for key in keys:
        rows, checksum = read_parquet(store, key, table)
        ch.insert_arrow(table.qualified_name, rows, dedup_token=key)
        batch_id = key.rsplit("/", 1)[-1].removesuffix(".parquet")
        manifest.append({"table_name": table.name, "lake_key": key, "batch_id": batch_id,
                         "rows": rows.num_rows, "checksum": checksum, "loaded_at": datetime.now(UTC)})
        result.files += 1
        result.rows += rows.num_rows
        result.keys.append(key)
        if len(manifest) >= MANIFEST_EVERY:
            _write_manifest(ch, manifest)
            manifest = []
    if manifest:
        _write_manifest(ch, manifest)
    return result


def _write_manifest(ch: ClickHouse, rows: list[dict[str, object]]) -> None:
    ch.insert_arrow(LOAD_MANIFEST.qualified_name, pa.Table.from_pylist(rows, schema=LOAD_MANIFEST.arrow_schema))


def load_new_batches(store: ObjectStore, ch: ClickHouse, table: Table, lookback_days: int) -> LoadResult:
    """Load every lake file of the last ``lookback_days`` date partitions not yet in the manifest."""
    days = lake_days(lookback_days)
    pending = sorted(set(list_lake_keys(store, table, days)) - loaded_keys(ch, table, days))
    result = load_keys(store, ch, table, pending)
    result.pending_before = len(pending)
    return result


@dataclass
class RebuildResult:
    day: date
    exchange: str
    files: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows after the rebuild


def day_fingerprint(ch: ClickHouse, table: Table, exchange: str, day: date) -> tuple[int, int]:
    """(rows, order-independent content hash) of one exchange-day, to prove a rebuild changed nothing."""
    columns = ", ".join(c for c in table.column_names if c not in ("batch_id", "received_at"))
    result = ch.query_arrow(
        f"SELECT count() AS n, sum(cityHash64({columns})) AS h FROM {table.qualified_name} "
        f"WHERE exchange = '{exchange}' AND toDate({table.time_column}) = '{day.isoformat()}'"
    ).to_pylist()[0]
    return int(result["n"]), int(result["h"] or 0)


def rebuild_day(store: ObjectStore, ch: ClickHouse, tables: Iterable[Table], exchange: str, day: date,
                attempt_token: str) -> RebuildResult:
    """Replace one exchange-day in ClickHouse by what the lake holds; safe to retry from the start.

    Deleting first makes a retry after a crash half-way start clean. The inserts carry a token unique
    to this attempt, because ClickHouse would silently drop a re-insert under the original token.
    """
    result = RebuildResult(day, exchange)
    for table in tables:
        keys = [k for k in list_lake_keys(store, table, [day]) if f"/exchange={exchange}/" in k]
        ch.command(f"DELETE FROM {table.qualified_name} WHERE exchange = '{exchange}' "
                   f"AND toDate({table.time_column}) = '{day.isoformat()}' SETTINGS mutations_sync = 2")
        if keys:
            key_list = ", ".join(f"'{k}'" for k in keys)
            ch.command(f"DELETE FROM {LOAD_MANIFEST.qualified_name} WHERE table_name = '{table.name}' "
                       f"AND lake_key IN ({key_list}) SETTINGS mutations_sync = 2")
        manifest: list[dict[str, object]] = []
        for key in keys:
            rows, checksum = read_parquet(store, key, table)
            ch.insert_arrow(table.qualified_name, rows, dedup_token=f"{key}@{attempt_token}")
            manifest.append({"table_name": table.name, "lake_key": key,
                             "batch_id": key.rsplit("/", 1)[-1].removesuffix(".parquet"), "rows": rows.num_rows,
                             "checksum": checksum, "loaded_at": datetime.now(UTC)})
        if manifest:
            _write_manifest(ch, manifest)
        result.files += len(keys)
        result.rows[table.name] = day_fingerprint(ch, table, exchange, day)[0]
    return result
