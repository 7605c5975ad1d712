"""The checks of the warehouse tables, reported by the load step with each table's materialization."""

from collections.abc import Callable
from datetime import date

import dagster as dg

from trading_platform.quality.reconciliation import (
    crossed_books,
    duplicate_trades,
    reconcile_table,
    unresolved_book_failures,
    unresolved_trade_gaps,
)
from trading_platform.schema import MARKET_TRADES, Table
from trading_platform.storage.clickhouse import ClickHouse

# (ClickHouse, days, asset the results belong to) -> results of that asset's own checks
ExtraChecks = Callable[[ClickHouse, list[date], str], list[dg.AssetCheckResult]]


def reconciliation_result(ch: ClickHouse, table: Table, store_keys: list[str], days: list[date],
                           held_back: dict[str, str], asset: str) -> dg.AssetCheckResult:
    reconciliation = reconcile_table(ch, table, table.time_column, days, store_keys)
    return dg.AssetCheckResult(
        asset_key=asset, check_name="lake_reconciliation",
        passed=reconciliation.passed and not held_back, severity=dg.AssetCheckSeverity.ERROR,
        description=("rows per day in ClickHouse equal the rows the load manifest recorded from the lake"
                     + (f"; {len(held_back)} lake file(s) held back by the lake checks: "
                        + "; ".join(f"{k}: {why}" for k, why in list(held_back.items())[:3]) if held_back else "")),
        metadata={
            "held_back_files": len(held_back),
            "held_back": dg.MetadataValue.json(dict(list(held_back.items())[:20])),
            "manifest_rows": reconciliation.manifest_rows,
            "table_rows": reconciliation.table_rows,
            "lake_files": reconciliation.lake_files,
            "loaded_files": reconciliation.loaded_files,
            "mismatched_days": dg.MetadataValue.json(
                {day: {"manifest": m, "table": t} for day, (m, t) in reconciliation.mismatched_days.items()}),
        },
    )


def trade_checks(ch: ClickHouse, days: list[date], asset: str) -> list[dg.AssetCheckResult]:
    duplicates = duplicate_trades(ch, MARKET_TRADES, days)
    return [dg.AssetCheckResult(
        asset_key=asset, check_name="no_duplicate_trades", passed=duplicates == 0, severity=dg.AssetCheckSeverity.ERROR,
        description=f"{duplicates} rows repeat an (exchange, symbol, trade_id) already stored" if duplicates
        else "every (exchange, symbol, trade_id) is stored once",
        metadata={"duplicate_rows": duplicates, "days": dg.MetadataValue.json([d.isoformat() for d in days])},
    )]


def book_checks(ch: ClickHouse, days: list[date], asset: str) -> list[dg.AssetCheckResult]:
    crossed = crossed_books(ch, days)
    return [dg.AssetCheckResult(
        asset_key=asset, check_name="no_crossed_books", passed=not crossed, severity=dg.AssetCheckSeverity.ERROR,
        description=("best bid < best ask in every snapshot (computed at query time: bids[1].1, asks[1].1)"
                     if not crossed else f"{sum(crossed.values())} crossed snapshots in {len(crossed)} book(s): "
                     + ", ".join(list(crossed)[:5])),
        metadata={"crossed_snapshots": dg.MetadataValue.json(crossed)},
    )]


def event_checks(ch: ClickHouse, days: list[date], asset: str) -> list[dg.AssetCheckResult]:
    report = unresolved_book_failures(ch, days)
    lost = unresolved_trade_gaps(ch, days)
    ranges = [f"{g.exchange} {g.symbol} trade ids {g.first_id}..{g.last_id} ({g.trades})" for g in lost]
    lost_trades = sum(g.trades for g in lost)
    return [
        dg.AssetCheckResult(
            asset_key=asset, check_name="books_resynced", passed=not report.unresolved,
            severity=dg.AssetCheckSeverity.WARN,
            description="every gap or checksum failure was followed by an in-sync snapshot of that book",
            metadata={"failures_by_exchange_kind": dg.MetadataValue.json(report.counts),
                      "unresolved": dg.MetadataValue.json(report.unresolved)},
        ),
        # ERROR: trades the exchange executed are missing from the lake and ClickHouse for good.
        dg.AssetCheckResult(
            asset_key=asset, check_name="trade_gaps_filled", passed=not lost, severity=dg.AssetCheckSeverity.ERROR,
            description=("every trade-id gap was filled from the exchange's REST history" if not lost else
                         f"{lost_trades} trades lost in {len(lost)} range(s): " + "; ".join(ranges[:5])),
            metadata={
                "unresolved_ranges": len(lost),
                "trades_lost": lost_trades,
                "lost": dg.MetadataValue.json([
                    {"exchange": g.exchange, "symbol": g.symbol, "first_id": g.first_id, "last_id": g.last_id,
                     "trades": g.trades, "detected_at": g.detected_at, "detail": g.detail} for g in lost[:50]]),
                "days": dg.MetadataValue.json([d.isoformat() for d in days]),
            },
        ),
    ]
