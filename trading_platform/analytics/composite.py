"""Composite price per base currency, quote group and minute: every exchange's 1-minute candles of the
pairs in that group, volume-weighted (total quote volume / total volume). Which quote currencies count
as one is configuration (``composite_quotes`` in exchanges.yaml); any other quote is its own group."""

from __future__ import annotations

from datetime import date

from trading_platform.analytics.day_tables import day_literal, exact_sum, replace_day
from trading_platform.config import ExchangesFile
from trading_platform.schema import CANDLES_1M, COMPOSITE_1M
from trading_platform.sql import string_list
from trading_platform.storage.clickhouse import ClickHouse


def _quote_group(quote_column: str, exchanges: ExchangesFile) -> str:
    """SQL: the composite group of a quote currency, from the configured groups."""
    members = [(quote, group) for group, quotes in exchanges.composite_quotes.items() for quote in quotes]
    if not members:
        return quote_column
    return (f"transform({quote_column}, [{string_list(q for q, _ in members)}], "
            f"[{string_list(g for _, g in members)}], {quote_column})")


def recompute_composite_day(ch: ClickHouse, day: date, exchanges: ExchangesFile) -> int:
    """Recompute ``day``'s composite prices from its 1-minute candles and swap them in; returns rows.
    (An alias named like a column would replace the column in the other expressions: ``total_volume``.)"""
    select = f"""
        SELECT splitByChar('-', symbol)[1] AS base, {_quote_group("splitByChar('-', symbol)[2]", exchanges)} AS quote,
               bucket, {exact_sum('quote_volume')} / {exact_sum('volume')} AS price,
               {exact_sum('volume')} AS total_volume, sum(trade_count) AS trade_count,
               arraySort(groupArray(concat(exchange, ':', symbol))) AS sources
        FROM {CANDLES_1M.sql_name}
        WHERE toDate(bucket) = {day_literal(day)}
        GROUP BY base, quote, bucket"""
    return replace_day(ch, COMPOSITE_1M, day, select)
