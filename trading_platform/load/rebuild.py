"""Rebuild: replace one exchange-day in ClickHouse by what the lake holds (the ``rebuild_from_lake`` job)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from trading_platform.load.lake_files import list_lake_keys, read_parquet
from trading_platform.load.manifest import ManifestRow, forget_loaded, manifest_row, write_manifest
from trading_platform.schema import Table
from trading_platform.sql import quote_identifier, quote_string
from trading_platform.storage.clickhouse import ClickHouse
from trading_platform.storage.object_store import ObjectStore


@dataclass
class RebuildResult:
    day: date
    exchange: str
    files: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows after the rebuild


def _exchange_day(table: Table, exchange: str, day: date) -> str:
    """The WHERE condition of one exchange-day of ``table``."""
    return (f"exchange = {quote_string(exchange)} "
            f"AND toDate({quote_identifier(table.time_column)}) = {quote_string(day.isoformat())}")


def day_fingerprint(ch: ClickHouse, table: Table, exchange: str, day: date) -> tuple[int, int]:
    """(rows, order-independent content hash) of one exchange-day, to prove a rebuild changed nothing."""
    columns = ", ".join(quote_identifier(c) for c in table.column_names if c not in ("batch_id", "received_at"))
    result = ch.query_arrow(
        f"SELECT count() AS n, sum(cityHash64({columns})) AS h FROM {table.sql_name} "
        f"WHERE {_exchange_day(table, exchange, day)}"
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
        ch.command(f"DELETE FROM {table.sql_name} WHERE {_exchange_day(table, exchange, day)} "
                   "SETTINGS mutations_sync = 2")
        if keys:
            forget_loaded(ch, table, keys)
        manifest: list[ManifestRow] = []
        for key in keys:
            rows, checksum = read_parquet(store, key, table)
            ch.insert_arrow(table.qualified_name, rows, dedup_token=f"{key}@{attempt_token}")
            manifest.append(manifest_row(table, key, rows.num_rows, checksum))
        if manifest:
            write_manifest(ch, manifest)
        result.files += len(keys)
        result.rows[table.name] = day_fingerprint(ch, table, exchange, day)[0]
    return result
