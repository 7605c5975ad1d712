"""Quoting for the ClickHouse SQL the platform builds: identifiers, qualified table names and literals.

The ClickHouse interface takes whole statements (chdb has no bound parameters for our use), so every name
and value reaches a statement through one of these, never through raw interpolation: a table, column or
exchange name that ever holds a quote or a backslash then stays data, not SQL.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date


def quote_identifier(name: str) -> str:
    """A back-quoted ClickHouse identifier (database, table or column name)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def qualified_name(database: str, table: str) -> str:
    """``database``.``table``, each part quoted."""
    return f"{quote_identifier(database)}.{quote_identifier(table)}"


def quote_table_name(name: str) -> str:
    """A ``database.table`` (or bare ``table``) name as the adapters receive it, quoted part by part.

    Split at the first dot: the schema's database and table names hold none of their own.
    """
    database, dot, table = name.partition(".")
    return qualified_name(database, table) if dot else quote_identifier(name)


def quote_string(value: str) -> str:
    """A ClickHouse string literal (only ``\\`` and ``'`` need escaping)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def string_list(values: Iterable[str]) -> str:
    """Comma-separated string literals, for ``IN (...)``."""
    return ", ".join(quote_string(value) for value in values)


def date_list(days: Iterable[date]) -> str:
    """Comma-separated ``'YYYY-MM-DD'`` literals, for ``toDate(column) IN (...)``."""
    return string_list(day.isoformat() for day in days)
