"""Checks that compare the lake, the load manifest, ClickHouse and Redis. Each returns plain facts."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from datetime import date

import pyarrow.parquet as pq

from trading_platform.exchanges.trade_gaps import TRADE_GAP, TRADE_GAP_FILLED, TRADE_GAP_UNRESOLVED
from trading_platform.schema import LOAD_MANIFEST, Table
from trading_platform.storage.clickhouse import ClickHouse
from trading_platform.storage.lake_loader import list_lake_keys
from trading_platform.storage.object_store import ObjectStore


@dataclass
class Reconciliation:
    days: list[str]
    manifest_rows: int
    table_rows: int
    lake_files: int
    loaded_files: int
    mismatched_days: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.mismatched_days


def reconcile_table(ch: ClickHouse, table: Table, time_column: str, days: list[date],
                    lake_keys: list[str]) -> Reconciliation:
    """Per day: rows the manifest says were loaded == rows in the table (both restricted to the lake
    files of that day, so TTL-expired history does not count)."""
    day_list = ", ".join(f"'{d.isoformat()}'" for d in days)
    manifest = ch.query_arrow(
        f"SELECT extract(lake_key, 'date=([0-9-]+)/') AS day, sum(rows) AS rows, count() AS files FROM "
        f"(SELECT lake_key, any(rows) AS rows FROM {LOAD_MANIFEST.qualified_name} "
        f" WHERE table_name = '{table.name}' GROUP BY lake_key) WHERE day IN ({day_list}) GROUP BY day"
    ).to_pylist()
    actual = ch.query_arrow(
        f"SELECT toString(toDate({time_column})) AS day, count() AS rows FROM {table.qualified_name} "
        f"WHERE toDate({time_column}) IN ({day_list}) GROUP BY day"
    ).to_pylist()
    by_day_manifest = {r["day"]: int(r["rows"]) for r in manifest}
    by_day_table = {r["day"]: int(r["rows"]) for r in actual}
    mismatched = {
        day: (by_day_manifest.get(day, 0), by_day_table.get(day, 0))
        for day in set(by_day_manifest) | set(by_day_table)
        if by_day_manifest.get(day, 0) != by_day_table.get(day, 0)
    }
    return Reconciliation(
        days=[d.isoformat() for d in days],
        manifest_rows=sum(by_day_manifest.values()),
        table_rows=sum(by_day_table.values()),
        lake_files=len(lake_keys),
        loaded_files=sum(int(r["files"]) for r in manifest),
        mismatched_days=mismatched,
    )


def duplicate_trades(ch: ClickHouse, table: Table, days: list[date]) -> int:
    day_list = ", ".join(f"'{d.isoformat()}'" for d in days)
    result = ch.query_arrow(
        f"SELECT count() - uniqExact(exchange, symbol, trade_id) AS duplicates FROM {table.qualified_name} "
        f"WHERE toDate(timestamp) IN ({day_list})"
    )
    return int(result.column("duplicates")[0].as_py())


@dataclass
class LakeSchemaReport:
    files_checked: int
    bad_files: dict[str, str]
    newest_file_age_s: float | None


def check_lake_files(store: ObjectStore, table: Table, days: list[date], per_partition: int = 1) -> LakeSchemaReport:
    """Schema of the newest file(s) per partition against the table layout, and the newest batch age.

    Batch ids sort by WAL offset, so the last key of a partition is its newest file.
    """
    keys = list_lake_keys(store, table, days)
    newest: dict[str, list[str]] = {}
    for key in keys:
        newest.setdefault(key.rsplit("/", 1)[0], []).append(key)
    bad: dict[str, str] = {}
    checked = 0
    expected = table.arrow_schema
    for partition_keys in newest.values():
        for key in partition_keys[-per_partition:]:
            schema = pq.read_schema(io.BytesIO(store.get(key)))
            checked += 1
            missing = [f.name for f in expected if f.name not in schema.names]
            wrong = [f"{f.name}: {schema.field(f.name).type} != {f.type}" for f in expected
                     if f.name in schema.names and not schema.field(f.name).type.equals(f.type)]
            if missing or wrong:
                bad[key] = "; ".join(([f"missing {missing}"] if missing else []) + wrong)
    return LakeSchemaReport(checked, bad, _newest_age(store, keys))


def _newest_age(store: ObjectStore, keys: list[str]) -> float | None:
    """Age of the newest batch from its Parquet footer (row data), not object-store timestamps."""
    if not keys:
        return None
    by_batch = sorted(keys, key=lambda k: k.rsplit("/", 1)[-1])
    table = pq.read_table(io.BytesIO(store.get(by_batch[-1])), columns=["received_at"])
    newest_us = table.column("received_at").cast("int64").to_pylist()
    return round(time.time() - max(newest_us) / 1e6, 3) if newest_us else None


def crossed_books(ch: ClickHouse, days: list[date]) -> dict[str, int]:
    """Snapshots whose best bid is at or above the best ask, per exchange:symbol."""
    day_list = ", ".join(f"'{d.isoformat()}'" for d in days)
    rows = ch.query_arrow(
        "SELECT concat(exchange, ':', symbol) AS book, count() AS n FROM trading.orderbook_snapshots "
        f"WHERE toDate(timestamp) IN ({day_list}) AND bids[1].1 >= asks[1].1 GROUP BY book"
    ).to_pylist()
    return {r["book"]: int(r["n"]) for r in rows}


# Trade-continuity rows live in book_events too, but they say nothing about a book's sync state.
_TRADE_GAP_KINDS = ", ".join(f"'{kind}'" for kind in (TRADE_GAP, TRADE_GAP_FILLED, TRADE_GAP_UNRESOLVED))


@dataclass
class LostTrades:
    """A trade-id range the exchange executed that the platform could not get (an unresolved trade gap)."""

    exchange: str
    symbol: str
    first_id: int
    last_id: int
    detected_at: str
    detail: str

    @property
    def trades(self) -> int:
        return self.last_id - self.first_id + 1


def unresolved_trade_gaps(ch: ClickHouse, days: list[date]) -> list[LostTrades]:
    """Every ``trade_gap_unresolved`` row of these days, with the id range parsed from its detail."""
    day_list = ", ".join(f"'{d.isoformat()}'" for d in days)
    rows = ch.query_arrow(
        "SELECT exchange, symbol, toString(timestamp) AS at, detail, "
        "toInt64OrZero(extract(detail, 'trade ids ([0-9]+)\\.\\.')) AS first_id, "
        "toInt64OrZero(extract(detail, 'trade ids [0-9]+\\.\\.([0-9]+)')) AS last_id "
        f"FROM trading.book_events WHERE kind = '{TRADE_GAP_UNRESOLVED}' AND toDate(timestamp) IN ({day_list}) "
        "ORDER BY exchange, symbol, first_id"
    ).to_pylist()
    return [LostTrades(r["exchange"], r["symbol"], int(r["first_id"]), int(r["last_id"]), r["at"], r["detail"])
            for r in rows]


@dataclass
class BookIntegrity:
    counts: dict[str, int]  # "exchange:kind" -> events
    unresolved: list[str]  # exchange:symbol whose last failure has no in-sync snapshot after it


def unresolved_book_failures(ch: ClickHouse, days: list[date]) -> BookIntegrity:
    day_list = ", ".join(f"'{d.isoformat()}'" for d in days)
    counts = ch.query_arrow(
        "SELECT concat(exchange, ':', kind) AS key, count() AS n FROM trading.book_events "
        f"WHERE toDate(timestamp) IN ({day_list}) GROUP BY key"
    ).to_pylist()
    unresolved = ch.query_arrow(
        "SELECT concat(f.exchange, ':', f.symbol) AS book FROM "
        "(SELECT exchange, symbol, max(timestamp) AS failed_at FROM trading.book_events "
        f" WHERE kind NOT IN ('resync', {_TRADE_GAP_KINDS}) AND toDate(timestamp) IN ({day_list}) "
        " GROUP BY exchange, symbol) AS f "
        "LEFT JOIN (SELECT exchange, symbol, max(received_at) AS last_snapshot FROM trading.orderbook_snapshots "
        f" WHERE toDate(timestamp) IN ({day_list}) GROUP BY exchange, symbol) AS s "
        "ON f.exchange = s.exchange AND f.symbol = s.symbol "
        "WHERE s.last_snapshot IS NULL OR s.last_snapshot < f.failed_at OR s.last_snapshot = toDateTime64(0, 6) "
        "ORDER BY book"
    ).to_pylist()
    return BookIntegrity({r["key"]: int(r["n"]) for r in counts}, [r["book"] for r in unresolved])
