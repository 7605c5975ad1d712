"""``trading.load_manifest`` (one row per lake file loaded into ClickHouse) and ``trading.load_intents`` (one row
per grouped insert, claimed before it is sent): together they make loads exactly once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pyarrow as pa

from trading_platform.load.lake_files import batch_of
from trading_platform.schema import LOAD_INTENTS, LOAD_MANIFEST, Table
from trading_platform.sql import quote_string, string_list
from trading_platform.storage.clickhouse import ClickHouse

ManifestRow = dict[str, object]


def _in_days(days: Iterable[date], key: str = "lake_key") -> str:
    """SQL condition: the lake key ``key`` lies in one of these date partitions."""
    patterns = " OR ".join(f"position({key}, {quote_string(f'date={day.isoformat()}/')}) > 0" for day in days)
    return f"({patterns or '1'})"


def loaded_keys(ch: ClickHouse, table: Table, days: Iterable[date]) -> set[str]:
    """The lake files of ``table`` in these date partitions that the manifest says are loaded."""
    result = ch.query_arrow(
        f"SELECT DISTINCT lake_key FROM {LOAD_MANIFEST.sql_name} "
        f"WHERE table_name = {quote_string(table.name)} AND {_in_days(days)}"
    )
    return set(result.column("lake_key").to_pylist())


def manifest_rows(table: Table, keys: list[str], rows: list[int], checksums: list[str]) -> pa.Table:
    """Manifest rows of these loaded files, built column-wise (a group holds thousands of files)."""
    now = datetime.now(UTC)
    return pa.table({
        "table_name": [table.name] * len(keys), "lake_key": keys, "batch_id": [batch_of(key) for key in keys],
        "rows": pa.array(rows, pa.uint64()), "checksum": checksums,
        "loaded_at": pa.array([now] * len(keys), LOAD_MANIFEST.arrow_schema.field("loaded_at").type),
    }, schema=LOAD_MANIFEST.arrow_schema)


def manifest_row(table: Table, key: str, rows: int, checksum: str) -> ManifestRow:
    return {"table_name": table.name, "lake_key": key, "batch_id": batch_of(key), "rows": rows,
            "checksum": checksum, "loaded_at": datetime.now(UTC)}


def write_manifest(ch: ClickHouse, rows: list[ManifestRow] | pa.Table) -> None:
    if isinstance(rows, list):
        rows = pa.Table.from_pylist(rows, schema=LOAD_MANIFEST.arrow_schema)
    ch.insert_arrow(LOAD_MANIFEST.qualified_name, rows)


def forget_loaded(ch: ClickHouse, table: Table, keys: list[str]) -> None:
    """Drop these files' manifest rows (before they are loaded again), waiting for the mutation."""
    ch.command(f"DELETE FROM {LOAD_MANIFEST.sql_name} WHERE table_name = {quote_string(table.name)} "
               f"AND lake_key IN ({string_list(keys)}) SETTINGS mutations_sync = 2")


@dataclass(frozen=True)
class Intent:
    """A grouped insert as claimed: its epoch, its dedup token and its files (in insert order)."""

    epoch: int
    token: str
    keys: tuple[str, ...]


def read_intents(ch: ClickHouse, table: Table, days: Iterable[date]) -> tuple[int, list[Intent]]:
    """(the table's highest claimed epoch, the intents holding a file of these date partitions)."""
    days = list(days)
    name = quote_string(table.name)
    latest = ch.query_arrow(f"SELECT max(epoch) AS e FROM {LOAD_INTENTS.sql_name} WHERE table_name = {name}")
    # A file of day D is written on D or later and claimed after that: older intents (a day of margin for
    # the loaders' clocks) need no look at their files.
    since = f"toDateTime64({quote_string(min(days).isoformat())}, 6, 'UTC') - INTERVAL 1 DAY" if days else "0"
    found = ch.query_arrow(
        f"SELECT epoch, token, lake_keys FROM {LOAD_INTENTS.sql_name} WHERE table_name = {name} "
        f"AND created_at >= {since} AND arrayExists(k -> {_in_days(days, 'k')}, lake_keys) ORDER BY epoch"
    ).to_pylist()
    return (int(latest.column("e")[0].as_py() or 0),
            [Intent(int(row["epoch"]), str(row["token"]), tuple(row["lake_keys"])) for row in found])


def claim_epoch(ch: ClickHouse, table: Table, epoch: int, token: str, keys: list[str]) -> bool:
    """Claim ``epoch`` for this group; False when another load claimed it first.

    Every claimant of one epoch inserts under the same dedup token, so ClickHouse keeps only the first
    row whatever it says; reading the epoch back tells each claimant whether that row is its own."""
    ch.insert_arrow(LOAD_INTENTS.qualified_name, pa.table({
        "table_name": [table.name], "epoch": pa.array([epoch], pa.uint64()), "token": [token],
        "lake_keys": pa.array([keys], pa.list_(pa.string())),
        "created_at": pa.array([datetime.now(UTC)], LOAD_INTENTS.arrow_schema.field("created_at").type),
    }, schema=LOAD_INTENTS.arrow_schema), dedup_token=f"{table.name}:{epoch}")
    winner = ch.query_arrow(f"SELECT token FROM {LOAD_INTENTS.sql_name} WHERE table_name = "
                            f"{quote_string(table.name)} AND epoch = {epoch}").column("token").to_pylist()
    return bool(winner == [token])
