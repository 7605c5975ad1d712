"""Compaction of the lake, one closed UTC day at a time: a daily-partitioned asset, run shortly after
midnight for the day that just closed (any other day is a backfill from the UI)."""

from datetime import date
from typing import Any

import dagster as dg

from trading_platform.defs.resources import ClickHouseResource, LakeResource
from trading_platform.defs.warehouse.assets import CLICKHOUSE_POOL
from trading_platform.defs.warehouse.jobs import REBUILD_START_DATE
from trading_platform.load.compaction import compact_day
from trading_platform.load.lake_files import list_lake_keys
from trading_platform.schema import LAKE_TABLES

CLOSED_DAYS = dg.DailyPartitionsDefinition(start_date=REBUILD_START_DATE)  # today is still being written

COMPACTION_COMPLETE = dg.AssetCheckSpec(
    "compaction_complete", asset="lake_compaction", blocking=False,
    description="Every partition of the day with more than one file was compacted (none left waiting for a load "
                "or changed since it was loaded)")


@dg.asset(
    name="lake_compaction", group_name="maintenance", kinds={"parquet"}, partitions_def=CLOSED_DAYS,
    deps=["market_trades", "orderbook_snapshots", "book_events", "quarantine"], pool=CLICKHOUSE_POOL,
    check_specs=[COMPACTION_COMPLETE], automation_condition=dg.AutomationCondition.on_cron("30 0 * * *"),
    description="Merge a closed day's small lake files into one sorted file per (dataset, exchange, symbol), "
                "verified before the small files go; readers never see missing or doubled rows and ClickHouse "
                "stays exactly once (the load manifest follows the compacted files).")
def lake_compaction(context: dg.AssetExecutionContext, lake: LakeResource,
                    clickhouse: ClickHouseResource) -> Any:
    day = date.fromisoformat(context.partition_key)
    store = lake.store()
    before = {t.dataset: len(list_lake_keys(store, t, [day])) for t in LAKE_TABLES}
    skipped: dict[str, str] = {}
    replaced = rows = 0
    with clickhouse.open() as ch:
        for table in LAKE_TABLES:
            result = compact_day(store, ch, table, day)
            replaced += result.files_replaced
            rows += result.rows
            skipped.update(result.skipped)
    after = {t.dataset: len(list_lake_keys(store, t, [day])) for t in LAKE_TABLES}
    context.log.info(f"compacted {day}: files per dataset {before} -> {after}")
    yield dg.MaterializeResult(metadata={
        "files_before": sum(before.values()), "files_after": sum(after.values()), "files_replaced": replaced,
        "rows_compacted": rows, "files_by_dataset": dg.MetadataValue.json({d: [before[d], after[d]] for d in before}),
    })
    yield dg.AssetCheckResult(
        check_name=COMPACTION_COMPLETE.name, passed=not skipped, severity=dg.AssetCheckSeverity.WARN,
        description=(f"{len(skipped)} partition(s) left as they were: " + "; ".join(list(skipped.values())[:3])
                     if skipped else f"{day}: every partition compacted"),
        metadata={"skipped": dg.MetadataValue.json(dict(list(skipped.items())[:20]))},
    )
