"""Analytics tables are recomputed one UTC day at a time and swapped in whole (one partition per day).

Recomputing a whole day, never adding to it, is what makes late trades, re-loaded batches and rebuilt
days give exactly what a clean load gives; ``REPLACE PARTITION`` makes the swap one step for readers.
"""

from __future__ import annotations

from datetime import date

import pyarrow as pa

from trading_platform.schema import DATABASE, Table
from trading_platform.sql import qualified_name, quote_string
from trading_platform.storage.clickhouse import ClickHouse

# Sums are taken in decimal, rounded to this many places (finer than any exchange's price or quantity
# step): floating-point addition depends on the order of the rows, and a rebuilt day or a late batch
# stores its rows in another order than a clean load did.
SUM_DECIMALS = 12


def exact_sum(expression: str) -> str:
    """SQL: the sum of ``expression`` over the group, the same whatever the order of the rows."""
    return f"toFloat64(sum(toDecimal128({expression}, {SUM_DECIMALS})))"


def day_literal(day: date) -> str:
    return quote_string(day.isoformat())


def replace_day(ch: ClickHouse, table: Table, day: date, select: str) -> int:
    """Swap ``table``'s partition of ``day`` for the rows of ``select`` (its columns in ``table``'s order);
    returns how many rows the day now has."""
    staging = _staging(ch, table)
    ch.command(f"INSERT INTO {staging} ({', '.join(table.column_names)}) {select}")
    return _swap(ch, table, day, staging)


def _staging(ch: ClickHouse, table: Table) -> str:
    """An empty staging table with ``table``'s structure and partitioning (its quoted name)."""
    staging = qualified_name(DATABASE, _staging_name(table))
    ch.command(f"CREATE TABLE IF NOT EXISTS {staging} AS {table.sql_name}")
    ch.command(f"TRUNCATE TABLE {staging}")
    return staging


def _swap(ch: ClickHouse, table: Table, day: date, staging: str) -> int:
    rows = int(ch.query_arrow(f"SELECT count() AS n FROM {staging}").column("n")[0].as_py())
    if rows:
        ch.command(f"ALTER TABLE {table.sql_name} REPLACE PARTITION {day_literal(day)} FROM {staging}")
    else:  # nothing that day (any more): REPLACE refuses an empty source, DROP says what is meant
        ch.command(f"ALTER TABLE {table.sql_name} DROP PARTITION {day_literal(day)}")
    return rows


def replace_day_rows(ch: ClickHouse, table: Table, day: date, rows: pa.Table) -> int:
    """Swap ``table``'s partition of ``day`` for ``rows`` (computed outside ClickHouse)."""
    staging = _staging(ch, table)
    ch.insert_arrow(f"{DATABASE}.{_staging_name(table)}", rows)
    return _swap(ch, table, day, staging)


def _staging_name(table: Table) -> str:
    return f"{table.name}_staging"
