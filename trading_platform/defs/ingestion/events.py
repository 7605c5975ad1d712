"""A flushed batch as the Dagster events the ingestion run reports: one materialization per lake dataset
(with the figures the UI plots) and the batch's lake checks, each pointing at its materialization."""

from datetime import UTC, datetime

import dagster as dg

# Not re-exported at the top level; the type of AssetCheckEvaluation.target_materialization_data.
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from trading_platform.defs.lake.assets import RAW_BOOK_EVENTS, RAW_ORDERBOOK, RAW_QUARANTINE, RAW_SPECS, RAW_TRADES
from trading_platform.defs.lake.checks import check_evaluation
from trading_platform.ingestion.runner import FlushReport
from trading_platform.schema import BOOK_EVENTS, ORDERBOOK_SNAPSHOTS, QUARANTINE


def _to_iso(us: int | None) -> str | None:
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat() if us is not None else None


def flush_materializations(report: FlushReport) -> list[dg.AssetMaterialization]:
    """One materialization per lake dataset and batch, in the exchange's partition."""
    written = report.written
    common: dict[str, dg.RawMetadataValue] = {
        "exchange": report.exchange,
        "batch_id": written.batch_id,
        "wal_offsets": f"{report.wal_first}..{report.wal_last}",
        "recovered_from_wal": report.recovered,
    }
    events = [dg.AssetMaterialization(
        asset_key=RAW_TRADES.key, partition=report.exchange,
        description=f"{report.exchange}: {written.trade_rows} trades in batch {written.batch_id}",
        metadata={
            **common,
            "dagster/row_count": written.trade_rows,
            "files": len([k for k in written.keys if k.startswith("raw/trades/")]),
            "symbols": dg.MetadataValue.json(written.symbols),
            "first_trade_time": _to_iso(written.first_trade_us) or "",
            "last_trade_time": _to_iso(written.last_trade_us) or "",
            "max_receive_lag_ms": written.max_receive_lag_ms if written.max_receive_lag_ms is not None else 0.0,
            "quarantined_rows": written.quarantined_rows,
            "flush_seconds": report.flush_seconds,
            "connects": report.connects,
            "disconnects": report.disconnects,
            "last_connection_error": report.last_error or "",
            "redis_hot_cache_errors": report.hot_cache_errors,
            "ignored_frames": report.ignored_frames,
            "trade_gaps_open": report.trade_gaps_open,
            "trade_gaps": report.counters.get("trade_gaps", 0),
            "trades_backfilled": report.counters.get("trades_backfilled", 0),
            "trade_gaps_unresolved": report.counters.get("trade_gaps_unresolved", 0),
            "duplicate_trades_dropped": report.counters.get("duplicate_trades_dropped", 0),
            "rest_rate_limited": report.rest_rate_limited,
            "rest_paused_s": report.rest_paused_s,
            **_health(report),
        },
    )]
    extra: tuple[tuple[dg.AssetSpec, str, str, dict[str, dg.RawMetadataValue]], ...] = (
        (RAW_ORDERBOOK, ORDERBOOK_SNAPSHOTS.dataset, "order-book snapshots", {}),
        (RAW_BOOK_EVENTS, BOOK_EVENTS.dataset, "book integrity events",
         {"by_kind": dg.MetadataValue.json(written.book_events_by_kind)}),
        (RAW_QUARANTINE, QUARANTINE.dataset, "frames quarantined",
         {"by_reason": dg.MetadataValue.json(written.quarantined_by_reason)}),
    )
    # Every dataset every batch, empty ones too: "this batch had no book events" is news (and the UI then
    # shows each dataset's checks against its latest batch instead of "not evaluated").
    for spec, dataset, what, metadata in extra:
        rows = written.rows.get(dataset, 0)
        events.append(dg.AssetMaterialization(
            asset_key=spec.key, partition=report.exchange, description=f"{report.exchange}: {rows} {what}",
            metadata={**common, "dagster/row_count": rows, **metadata},
        ))
    return events


def _health(report: FlushReport) -> dict[str, float | int]:
    """The figures Dagster plots over time, one series per exchange (the key names the exchange)."""
    lag = report.written.receive_lag_ms
    figures: dict[str, float | int] = {
        "messages_per_s": report.messages_per_s,
        "receive_lag_p50_ms": lag.get("p50", 0.0),
        "receive_lag_p99_ms": lag.get("p99", 0.0),
        "reconnects": max(report.connects - 1, 0),
        "trade_gaps_opened": report.counters.get("trade_gaps", 0),
        "trade_gaps_filled": report.counters.get("trade_gaps_filled", 0),
        "trade_gaps_open": report.trade_gaps_open,
        "quarantined_rows": report.written.quarantined_rows,
    }
    return {f"{report.exchange}.{name}": value for name, value in figures.items()}


def flush_check_evaluations(instance: dg.DagsterInstance, run_id: str,
                       report: FlushReport) -> list[dg.AssetCheckEvaluation]:
    """The batch's lake checks, each pointing at the materialization this run just reported for it."""
    evaluations = []
    for dataset, outcomes in report.written.checks.items():
        spec, _ = RAW_SPECS[dataset]
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=spec.key, asset_partitions=[report.exchange]), limit=1).records
        mine = next((r for r in records if r.event_log_entry.run_id == run_id), None)
        target = AssetCheckEvaluationTargetMaterializationData(
            storage_id=mine.storage_id, run_id=run_id, timestamp=mine.timestamp) if mine else None
        for outcome in outcomes:
            evaluations.append(check_evaluation(spec.key, outcome, target, partition=report.exchange))
    return evaluations
