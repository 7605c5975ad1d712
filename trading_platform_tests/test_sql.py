"""SQL quoting: names and values reach ClickHouse as data, whatever characters they hold."""

from __future__ import annotations

from datetime import date

import pytest

from trading_platform.schema import MARKET_TRADES
from trading_platform.sql import date_list, qualified_name, quote_identifier, quote_string, quote_table_name
from trading_platform.storage.clickhouse import ClickHouse

AWKWARD = ["plain", "o'brien", "back\\slash", "tick`tock", "'; DROP TABLE trading.market_trades; --", "\\'"]


def test_identifiers_are_back_quoted_with_their_quotes_and_backslashes_escaped() -> None:
    assert quote_identifier("market_trades") == "`market_trades`"
    assert quote_identifier("a`b\\c") == "`a\\`b\\\\c`"


def test_a_qualified_name_is_quoted_part_by_part() -> None:
    assert qualified_name("trading", "market_trades") == "`trading`.`market_trades`"
    assert quote_table_name("trading.market_trades") == "`trading`.`market_trades`"
    assert quote_table_name("market_trades") == "`market_trades`"
    assert MARKET_TRADES.sql_name == "`trading`.`market_trades`"


def test_string_literals_escape_quotes_and_backslashes() -> None:
    assert quote_string("o'brien") == "'o\\'brien'"
    assert quote_string("a\\b") == "'a\\\\b'"
    assert date_list([date(2026, 1, 2), date(2026, 1, 1)]) == "'2026-01-02', '2026-01-01'"


@pytest.mark.parametrize("text", AWKWARD)
def test_clickhouse_reads_back_exactly_what_was_quoted(clickhouse: ClickHouse, text: str) -> None:
    row = clickhouse.query_arrow(f"SELECT {quote_string(text)} AS {quote_identifier(text)}").to_pylist()[0]
    assert row == {text: text}
