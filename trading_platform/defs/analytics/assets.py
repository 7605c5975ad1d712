"""Candles (1m, 5m, 1h, 1d) and the composite price per UTC day: one partition per day, so any day or
range is recomputed or backfilled from the UI; the latest two days follow the trades as they load (a
trade loaded after midnight may still belong to yesterday)."""

from datetime import date, timedelta
from typing import Any

import dagster as dg

from trading_platform.analytics.candles import INTERVALS, recompute_day, reconcile_day
from trading_platform.analytics.composite import recompute_composite_day
from trading_platform.defs.resources import ClickHouseResource, FeedResource
from trading_platform.defs.warehouse.assets import CLICKHOUSE_POOL
from trading_platform.defs.warehouse.jobs import REBUILD_START_DATE
from trading_platform.schema import CANDLES_1M, COMPOSITE_1M

CANDLE_DAYS = dg.DailyPartitionsDefinition(start_date=REBUILD_START_DATE, end_offset=1)  # today included

_REQUESTED = dg.AutomationCondition.newly_requested()
# At most once a minute, after the trades loaded, for today and yesterday only; older days by backfill.
CANDLE_CADENCE: dg.AutomationCondition[dg.AssetKey] = (
    dg.AutomationCondition.in_latest_time_window(timedelta(days=2))
    & dg.AutomationCondition.cron_tick_passed("* * * * *").since(_REQUESTED)
    & dg.AutomationCondition.any_deps_updated().since(_REQUESTED)
    & ~dg.AutomationCondition.in_progress()
).with_label("each minute after trades load, today and yesterday")

_DESCRIPTIONS = {
    "candles_1m": "trading.candles_1m: OHLCV, VWAP, trade count and buy/sell volume per minute, from "
                  "trading.market_trades; a day is recomputed whole and swapped in (late trades never "
                  "double count).",
    "candles_5m": "trading.candles_5m: from the 1-minute candles of the day.",
    "candles_1h": "trading.candles_1h: from the 1-minute candles of the day.",
    "candles_1d": "trading.candles_1d: from the 1-minute candles of the day.",
    "composite_1m": "trading.composite_1m: volume-weighted price per base currency, quote group and minute "
                    "across exchanges; which quotes count as one is exchanges.yaml's composite_quotes.",
}


def _spec(name: str) -> dg.AssetSpec:
    upstream = "market_trades" if name == CANDLES_1M.name else CANDLES_1M.name  # the rest derive from 1m
    return dg.AssetSpec(name, deps=[upstream], group_name="analytics", kinds={"clickhouse"},
                        partitions_def=CANDLE_DAYS, automation_condition=CANDLE_CADENCE,
                        description=_DESCRIPTIONS[name])


CANDLE_SPECS = [_spec(interval.table.name) for interval in INTERVALS] + [_spec(COMPOSITE_1M.name)]
CANDLES_RECONCILED = dg.AssetCheckSpec(
    "candles_reconcile_with_trades", asset=CANDLES_1M.name, blocking=False,
    description="Per exchange and symbol, every interval's trade count and volume equal the day's trades")


@dg.multi_asset(name="candles", specs=CANDLE_SPECS, check_specs=[CANDLES_RECONCILED], pool=CLICKHOUSE_POOL,
                partitions_def=CANDLE_DAYS,
                description="Recompute one UTC day's candles of every interval and its composite prices, and "
                            "swap them in.")
def candles(context: dg.AssetExecutionContext, clickhouse: ClickHouseResource, feed: FeedResource) -> Any:
    day = date.fromisoformat(context.partition_key)
    with clickhouse.open() as ch:
        rows = recompute_day(ch, day)
        rows[COMPOSITE_1M.name] = recompute_composite_day(ch, day, feed.exchanges())
        mismatches = reconcile_day(ch, day)
    context.log.info(f"candles of {day}: {rows}")
    for table in [*(interval.table for interval in INTERVALS), COMPOSITE_1M]:
        yield dg.MaterializeResult(asset_key=table.name, metadata={"dagster/row_count": rows[table.name],
                                                                   "table": table.qualified_name})
    yield dg.AssetCheckResult(
        check_name=CANDLES_RECONCILED.name, asset_key=CANDLES_1M.name, passed=not mismatches,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(f"{len(mismatches)} (table, exchange, symbol) differ from the trades" if mismatches
                     else "every interval sums to the day's trades"),
        metadata={"day": day.isoformat(),
                  "mismatches": dg.MetadataValue.json([m.__dict__ for m in mismatches[:20]])},
    )
