"""``trading.load_manifest``: one row per lake file loaded into ClickHouse, what makes loads exactly once."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime

import pyarrow as pa

from trading_platform.load.lake_files import batch_of
from trading_platform.schema import LOAD_MANIFEST, Table
from trading_platform.sql import quote_string, string_list
from trading_platform.storage.clickhouse import ClickHouse

ManifestRow = dict[str, object]


def loaded_keys(ch: ClickHouse, table: Table, days: Iterable[date]) -> set[str]:
    """The lake files of ``table`` in these date partitions that the manifest says are loaded."""
    patterns = " OR ".join(f"position(lake_key, {quote_string(f'date={day.isoformat()}/')}) > 0" for day in days)
    result = ch.query_arrow(
        f"SELECT DISTINCT lake_key FROM {LOAD_MANIFEST.sql_name} "
        f"WHERE table_name = {quote_string(table.name)} AND ({patterns or '1'})"
    )
    return set(result.column("lake_key").to_pylist())


def manifest_row(table: Table, key: str, rows: int, checksum: str) -> ManifestRow:
    return {"table_name": table.name, "lake_key": key, "batch_id": batch_of(key), "rows": rows,
            "checksum": checksum, "loaded_at": datetime.now(UTC)}


def write_manifest(ch: ClickHouse, rows: list[ManifestRow]) -> None:
    ch.insert_arrow(LOAD_MANIFEST.qualified_name, pa.Table.from_pylist(rows, schema=LOAD_MANIFEST.arrow_schema))


def forget_loaded(ch: ClickHouse, table: Table, keys: list[str]) -> None:
    """Drop these files' manifest rows (before they are loaded again), waiting for the mutation."""
    ch.command(f"DELETE FROM {LOAD_MANIFEST.sql_name} WHERE table_name = {quote_string(table.name)} "
               f"AND lake_key IN ({string_list(keys)}) SETTINGS mutations_sync = 2")
