"""The lake's own checks, one set per dataset, run on every batch where it is produced.

The ingestion run evaluates them on each flushed batch (and reports them to Dagster next to the batch's
materialization); the loader runs the same rules on each lake file before loading it and holds back a
file that fails, so a bad batch never reaches ClickHouse while everything else keeps loading.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from trading_platform.schema import BOOK_EVENTS, MARKET_TRADES, ORDERBOOK_SNAPSHOTS, QUARANTINE, Table

# A trade stamped more than this after it was received is a clock or parsing error, not latency.
FUTURE_TOLERANCE_US = 60_000_000
# WARN when more than this share of a batch's rows went to the quarantine: an exchange changed
# something, or a feed is sending garbage. A few bad frames in a busy batch are normal.
QUARANTINE_WARN_SHARE = 0.05
EXAMPLES = 5

LAKE_SCHEMA = "lake_schema"
VALID_ROWS = "valid_rows"
QUARANTINE_SHARE = "quarantine_share"
ERROR, WARN = "ERROR", "WARN"


@dataclass(frozen=True)
class CheckOutcome:
    """One check on one batch, in the terms a person acts on: what failed, where, and examples."""

    check: str
    passed: bool
    severity: str  # ERROR: the data is wrong; WARN: worth a look
    description: str
    metadata: dict[str, object] = field(default_factory=dict)


def _price_ok(column: str) -> pl.Expr:
    return pl.col(column).is_finite() & (pl.col(column) > 0)


def _non_empty(column: str) -> pl.Expr:
    return pl.col(column).is_not_null() & (pl.col(column).str.len_bytes() > 0)


def _levels_ok(side: str, ascending: bool) -> pl.Expr:
    prices = pl.col(side).list.eval(pl.element().struct.field("price"))
    quantities = pl.col(side).list.eval(pl.element().struct.field("quantity"))
    steps = prices.list.diff(null_behavior="drop")
    ordered = (steps.list.min() > 0) if ascending else (steps.list.max() < 0)
    return (ordered.fill_null(True) & (quantities.list.min() > 0).fill_null(True)
            & prices.list.eval(pl.element().is_finite() & (pl.element() > 0)).list.all())


# Each rule is a boolean expression that is true for a good row; its name says what it guards.
ROW_RULES: dict[str, dict[str, pl.Expr]] = {
    MARKET_TRADES.dataset: {
        "identified": _non_empty("exchange") & _non_empty("symbol") & _non_empty("trade_id"),
        "positive_price": _price_ok("price"),
        "positive_quantity": _price_ok("quantity"),
        "known_side": pl.col("side").is_in(["buy", "sell"]),
        "not_from_the_future": (pl.col("timestamp").dt.epoch("us")
                                <= pl.col("received_at").dt.epoch("us") + FUTURE_TOLERANCE_US),
        "unique_trade_id": ~pl.struct("exchange", "symbol", "trade_id").is_duplicated(),
    },
    ORDERBOOK_SNAPSHOTS.dataset: {
        "identified": _non_empty("exchange") & _non_empty("symbol"),
        "bids_descending": _levels_ok("bids", ascending=False),
        "asks_ascending": _levels_ok("asks", ascending=True),
        "uncrossed": (pl.col("bids").list.first().struct.field("price")
                      < pl.col("asks").list.first().struct.field("price")).fill_null(True),
    },
    BOOK_EVENTS.dataset: {
        "identified": _non_empty("exchange") & _non_empty("symbol"),
        "kind_given": _non_empty("kind"),
    },
    QUARANTINE.dataset: {
        "identified": _non_empty("exchange"),
        "reason_given": _non_empty("reason"),
    },
}
_EXAMPLE_COLUMNS = {
    MARKET_TRADES.dataset: ["exchange", "symbol", "trade_id", "price", "quantity", "side", "timestamp"],
    ORDERBOOK_SNAPSHOTS.dataset: ["exchange", "symbol", "timestamp", "sequence"],
    BOOK_EVENTS.dataset: ["exchange", "symbol", "kind", "detail"],
    QUARANTINE.dataset: ["exchange", "reason", "detail"],
}


def schema_problems(schema: pa.Schema, table: Table) -> list[str]:
    """What keeps a file with ``schema`` from being a ``table`` file: missing columns, wrong types."""
    problems = [f"missing column {f.name} ({f.type})" for f in table.arrow_schema if f.name not in schema.names]
    problems += [f"column {f.name} is {schema.field(f.name).type}, expected {f.type}"
                 for f in table.arrow_schema
                 if f.name in schema.names and not schema.field(f.name).type.equals(f.type)]
    return problems


def schema_check(table: Table, schemas: dict[str, pa.Schema]) -> CheckOutcome:
    """``schemas``: the schema of each file (or batch part) by its name."""
    bad = {name: "; ".join(problems) for name, schema in schemas.items()
           if (problems := schema_problems(schema, table))}
    return CheckOutcome(
        LAKE_SCHEMA, passed=not bad, severity=ERROR,
        description=(f"every file has the {table.name} layout" if not bad else
                     f"{len(bad)} of {len(schemas)} file(s) do not have the {table.name} layout"),
        metadata={"files_checked": len(schemas), "bad_files": len(bad),
                  "problems": dict(list(bad.items())[:EXAMPLES]),
                  "expected_columns": [f"{f.name} {f.type}" for f in table.arrow_schema]},
    )


def row_check(table: Table, rows: pa.Table) -> CheckOutcome:
    """Every rule of ``table`` on every row; failing rows counted per rule and per exchange:symbol."""
    frame = pl.from_arrow(rows)
    assert isinstance(frame, pl.DataFrame)
    rules = ROW_RULES[table.dataset]
    verdicts = frame.select(**{name: rule.fill_null(False) for name, rule in rules.items()})
    failed_by_rule = {name: count for name, count in
                      zip(verdicts.columns, verdicts.select(pl.all().not_().sum()).row(0), strict=True) if count}
    metadata: dict[str, object] = {"rows_checked": frame.height, "rules": sorted(rules),
                                   "failed_by_rule": failed_by_rule}
    if failed_by_rule:
        bad = frame.filter(~pl.all_horizontal(verdicts))
        where = (pl.concat_str("exchange", pl.lit(":"), "symbol") if "symbol" in bad.columns
                 else pl.col("exchange"))
        metadata["invalid_rows"] = bad.height
        metadata["by_exchange_symbol"] = dict(bad.group_by(where.alias("where")).len().sort("where").iter_rows())
        metadata["examples"] = bad.select(_EXAMPLE_COLUMNS[table.dataset]).head(EXAMPLES).with_columns(
            pl.col(pl.Datetime).dt.to_string("%Y-%m-%dT%H:%M:%S%.6fZ"),
            pl.col(pl.Float64).cast(pl.String)).to_dicts()  # NaN and inf are not JSON
    invalid = int(metadata.get("invalid_rows", 0))  # type: ignore[call-overload]
    return CheckOutcome(
        VALID_ROWS, passed=not failed_by_rule, severity=ERROR,
        description=(f"all {frame.height} rows pass {', '.join(sorted(rules))}" if not failed_by_rule else
                     f"{invalid} of {frame.height} rows break "
                     + ", ".join(f"{rule} ({n})" for rule, n in failed_by_rule.items())),
        metadata=metadata,
    )


def quarantine_share_check(accepted_rows: int, quarantined_rows: int,
                           threshold: float = QUARANTINE_WARN_SHARE) -> CheckOutcome:
    total = accepted_rows + quarantined_rows
    share = quarantined_rows / total if total else 0.0
    return CheckOutcome(
        QUARANTINE_SHARE, passed=share <= threshold, severity=WARN,
        description=f"{quarantined_rows} of {total} rows of the batch quarantined ({share:.1%}; "
                    f"warn above {threshold:.0%})",
        metadata={"quarantined_rows": quarantined_rows, "accepted_rows": accepted_rows,
                  "share": round(share, 6), "threshold": threshold},
    )


def batch_checks(tables: dict[Table, pa.Table],
                 parts: dict[Table, dict[str, pa.Schema]]) -> dict[str, list[CheckOutcome]]:
    """The checks of one flushed batch, per lake dataset, empty ones included (``parts``: each written file's
    schema; an empty dataset wrote none)."""
    outcomes: dict[str, list[CheckOutcome]] = {}
    for table, rows in tables.items():
        if table.dataset not in ROW_RULES:
            continue
        checks = [schema_check(table, parts.get(table, {})), row_check(table, rows)]
        if table is MARKET_TRADES:
            quarantined = next((r.num_rows for t, r in tables.items() if t is QUARANTINE), 0)
            checks.append(quarantine_share_check(rows.num_rows, quarantined))
        outcomes[table.dataset] = checks
    return outcomes
