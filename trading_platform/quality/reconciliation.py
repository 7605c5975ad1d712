"""Checks that compare the lake, the load manifest, ClickHouse and Redis. Each returns plain facts."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq

from trading_platform.exchanges.trade_gaps import TRADE_GAP, TRADE_GAP_FILLED, TRADE_GAP_UNRESOLVED
from trading_platform.load.lake_files import list_lake_keys
from trading_platform.schema import BOOK_EVENTS, LOAD_MANIFEST, ORDERBOOK_SNAPSHOTS, Table
from trading_platform.sql import date_list, quote_identifier, quote_string, string_list
from trading_platform.storage.clickhouse import ClickHouse
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
    day_list = date_list(days)
    day_of_row = f"toDate({quote_identifier(time_column)})"
    manifest = ch.query_arrow(
        f"SELECT extract(lake_key, 'date=([0-9-]+)/') AS day, sum(rows) AS rows, count() AS files FROM "
        f"(SELECT lake_key, any(rows) AS rows FROM {LOAD_MANIFEST.sql_name} "
        f" WHERE table_name = {quote_string(table.name)} GROUP BY lake_key) WHERE day IN ({day_list}) GROUP BY day"
    ).to_pylist()
    actual = ch.query_arrow(
        f"SELECT toString({day_of_row}) AS day, count() AS rows FROM {table.sql_name} "
        f"WHERE {day_of_row} IN ({day_list}) GROUP BY day"
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
    result = ch.query_arrow(
        f"SELECT count() - uniqExact(exchange, symbol, trade_id) AS duplicates FROM {table.sql_name} "
        f"WHERE toDate(timestamp) IN ({date_list(days)})"
    )
    return int(result.column("duplicates")[0].as_py())


def newest_lake_files(store: ObjectStore, table: Table, days: list[date],
                      exchange: str | None = None) -> dict[str, tuple[pa.Schema, pa.Table]]:
    """The newest file of every lake partition of ``table`` (of one exchange, if given), by key.

    Batch ids sort by WAL offset, so the last key of a partition is its newest file.
    """
    newest: dict[str, str] = {}
    for key in list_lake_keys(store, table, days):
        if exchange is None or f"/exchange={exchange}/" in key:
            newest[key.rsplit("/", 1)[0]] = key
    files = {}
    for key in newest.values():
        data = store.get(key)
        files[key] = (pq.read_schema(io.BytesIO(data)), pq.read_table(io.BytesIO(data)))
    return files


def crossed_books(ch: ClickHouse, days: list[date]) -> dict[str, int]:
    """Snapshots whose best bid is at or above the best ask, per exchange:symbol."""
    rows = ch.query_arrow(
        f"SELECT concat(exchange, ':', symbol) AS book, count() AS n FROM {ORDERBOOK_SNAPSHOTS.sql_name} "
        f"WHERE toDate(timestamp) IN ({date_list(days)}) AND bids[1].1 >= asks[1].1 GROUP BY book"
    ).to_pylist()
    return {r["book"]: int(r["n"]) for r in rows}


# Trade-continuity rows live in book_events too, but they say nothing about a book's sync state.
_TRADE_GAP_KINDS = string_list((TRADE_GAP, TRADE_GAP_FILLED, TRADE_GAP_UNRESOLVED))


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
    rows = ch.query_arrow(
        "SELECT exchange, symbol, toString(timestamp) AS at, detail, "
        "toInt64OrZero(extract(detail, 'trade ids ([0-9]+)\\.\\.')) AS first_id, "
        "toInt64OrZero(extract(detail, 'trade ids [0-9]+\\.\\.([0-9]+)')) AS last_id "
        f"FROM {BOOK_EVENTS.sql_name} WHERE kind = {quote_string(TRADE_GAP_UNRESOLVED)} "
        f"AND toDate(timestamp) IN ({date_list(days)}) "
        "ORDER BY exchange, symbol, first_id"
    ).to_pylist()
    return [LostTrades(r["exchange"], r["symbol"], int(r["first_id"]), int(r["last_id"]), r["at"], r["detail"])
            for r in rows]


@dataclass
class BookIntegrity:
    counts: dict[str, int]  # "exchange:kind" -> events
    unresolved: list[str]  # exchange:symbol whose last failure has no in-sync snapshot after it


def unresolved_book_failures(ch: ClickHouse, days: list[date]) -> BookIntegrity:
    day_list = date_list(days)
    counts = ch.query_arrow(
        f"SELECT concat(exchange, ':', kind) AS key, count() AS n FROM {BOOK_EVENTS.sql_name} "
        f"WHERE toDate(timestamp) IN ({day_list}) GROUP BY key"
    ).to_pylist()
    unresolved = ch.query_arrow(
        "SELECT concat(f.exchange, ':', f.symbol) AS book FROM "
        f"(SELECT exchange, symbol, max(timestamp) AS failed_at FROM {BOOK_EVENTS.sql_name} "
        f" WHERE kind NOT IN ('resync', {_TRADE_GAP_KINDS}) AND toDate(timestamp) IN ({day_list}) "
        " GROUP BY exchange, symbol) AS f "
        f"LEFT JOIN (SELECT exchange, symbol, max(received_at) AS last_snapshot FROM {ORDERBOOK_SNAPSHOTS.sql_name} "
        f" WHERE toDate(timestamp) IN ({day_list}) GROUP BY exchange, symbol) AS s "
        "ON f.exchange = s.exchange AND f.symbol = s.symbol "
        "WHERE s.last_snapshot IS NULL OR s.last_snapshot < f.failed_at OR s.last_snapshot = toDateTime64(0, 6) "
        "ORDER BY book"
    ).to_pylist()
    return BookIntegrity({r["key"]: int(r["n"]) for r in counts}, [r["book"] for r in unresolved])
