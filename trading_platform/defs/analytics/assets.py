"""Candles (1m, 5m, 1h, 1d), the composite price and the indicators per UTC day: one partition per day, so any day or
range is recomputed or backfilled from the UI; today follows the trades as they load, and yesterday is
recomputed once more at 01:00 UTC (a trade loaded after midnight may still belong to it)."""

from datetime import date, timedelta
from typing import Any

import dagster as dg

from trading_platform.analytics.candles import INTERVALS, Mismatch, recompute_day, reconcile_day
from trading_platform.analytics.composite import recompute_composite_day
from trading_platform.analytics.indicators import INDICATOR_SETS, SampleCheck, check_sample, recompute_indicator_day
from trading_platform.defs.resources import ClickHouseResource, FeedResource, RedisResource
from trading_platform.defs.warehouse.assets import CLICKHOUSE_POOL
from trading_platform.defs.warehouse.jobs import REBUILD_START_DATE
from trading_platform.load.cache_reseed import cache_latest_analytics
from trading_platform.schema import CANDLES_1M, COMPOSITE_1M
from trading_platform.storage.clickhouse import ClickHouse

SAMPLE_TOLERANCE = 1e-9  # two float computations of the same windows agree far closer than this
CANDLE_DAYS = dg.DailyPartitionsDefinition(start_date=REBUILD_START_DATE, end_offset=1)  # today included

_REQUESTED = dg.AutomationCondition.newly_requested()
# Today's partition: at most once a minute, after the trades loaded.
_TODAY = (
    dg.AutomationCondition.in_latest_time_window()
    & dg.AutomationCondition.cron_tick_passed("* * * * *").since(_REQUESTED)
    & dg.AutomationCondition.any_deps_updated().since(_REQUESTED)
)
# Yesterday's partition once more at 01:00 UTC: trades loaded after midnight may still belong to it.
_YESTERDAY_ONCE = (
    dg.AutomationCondition.in_latest_time_window(timedelta(days=2))
    & ~dg.AutomationCondition.in_latest_time_window()
    & dg.AutomationCondition.cron_tick_passed("0 1 * * *")
)
CANDLE_CADENCE: dg.AutomationCondition[dg.AssetKey] = (
    (_TODAY | _YESTERDAY_ONCE) & ~dg.AutomationCondition.in_progress()
).with_label("today after each load (at most once a minute); yesterday once more at 01:00 UTC")

_DESCRIPTIONS = {
    "candles_1m": "trading.candles_1m: OHLCV, VWAP, trade count and buy/sell volume per minute, from "
                  "trading.market_trades; a day is recomputed whole and swapped in (late trades never "
                  "double count).",
    "candles_5m": "trading.candles_5m: from the 1-minute candles of the day.",
    "candles_1h": "trading.candles_1h: from the 1-minute candles of the day.",
    "candles_1d": "trading.candles_1d: from the 1-minute candles of the day.",
    "indicators_1m": "trading.indicators_1m: SMA 20, EMA 20, RSI 14, Bollinger bands and 60-candle realized "
                     "volatility per exchange and symbol over the 1-minute candles (polars, with a warm-up).",
    "indicators_1h": "trading.indicators_1h: the same indicators over the 1-hour candles.",
    "composite_1m": "trading.composite_1m: volume-weighted price per base currency, quote group and minute "
                    "across exchanges; which quotes count as one is exchanges.yaml's composite_quotes.",
}


def _spec(name: str) -> dg.AssetSpec:
    upstreams = {CANDLES_1M.name: "market_trades", **{s.indicators.name: s.candles.name for s in INDICATOR_SETS}}
    upstream = upstreams.get(name, CANDLES_1M.name)  # the coarser candles and the composite derive from 1m
    return dg.AssetSpec(name, deps=[upstream], group_name="analytics", kinds={"clickhouse"},
                        partitions_def=CANDLE_DAYS, automation_condition=CANDLE_CADENCE,
                        description=_DESCRIPTIONS[name])


ANALYTICS_TABLES = [*(i.table for i in INTERVALS), COMPOSITE_1M, *(s.indicators for s in INDICATOR_SETS)]
ANALYTICS_SPECS = [_spec(table.name) for table in ANALYTICS_TABLES]
CANDLES_RECONCILED = dg.AssetCheckSpec(
    "candles_reconcile_with_trades", asset=CANDLES_1M.name, blocking=False,
    description="Per exchange and symbol, every interval's trade count and volume equal the day's trades")
INDICATOR_CHECKS = {
    s.indicators.name: dg.AssetCheckSpec(
        "sample_recomputed", asset=s.indicators.name, blocking=False,
        description="SMA, Bollinger bands and realized volatility of the day's busiest symbol, recomputed "
                    "with ClickHouse window functions, equal the stored values")
    for s in INDICATOR_SETS}


@dg.multi_asset(name="analytics_day", specs=ANALYTICS_SPECS,
                check_specs=[CANDLES_RECONCILED, *INDICATOR_CHECKS.values()], pool=CLICKHOUSE_POOL,
                partitions_def=CANDLE_DAYS,
                # A backfill of a range is one run: one ClickHouse open, the days in order (indicators of a
                # day read the candles of the days before it).
                backfill_policy=dg.BackfillPolicy.single_run(),
                description="Recompute each UTC day's candles of every interval, its composite prices and its "
                            "indicators, and swap them in.")
def analytics_day(context: dg.AssetExecutionContext, clickhouse: ClickHouseResource, feed: FeedResource,
                  redis: RedisResource) -> Any:
    days = sorted(date.fromisoformat(key) for key in context.partition_keys)
    rows = dict.fromkeys((table.name for table in ANALYTICS_TABLES), 0)
    mismatches: list[Mismatch] = []
    samples: dict[str, list[SampleCheck]] = {s.indicators.name: [] for s in INDICATOR_SETS}
    exchanges = feed.exchanges()
    with clickhouse.open() as ch:
        for day in days:
            counts = recompute_day(ch, day)
            counts[COMPOSITE_1M.name] = recompute_composite_day(ch, day, exchanges)
            for indicator_set in INDICATOR_SETS:
                name = indicator_set.indicators.name
                counts[name] = recompute_indicator_day(ch, day, indicator_set)
                sample = check_sample(ch, day, indicator_set)
                samples[name] += [sample] if sample is not None else []
            mismatches += reconcile_day(ch, day)
            context.log.info(f"analytics of {day}: {counts}")
            rows = {name: rows[name] + counts[name] for name in rows}
        cached = _cache_newest(context, ch, redis, days[-1])
    for table in ANALYTICS_TABLES:
        yield dg.MaterializeResult(asset_key=table.name, metadata={"dagster/row_count": rows[table.name],
                                                                   "table": table.qualified_name,
                                                                   "redis_entries_written": cached})
    day_texts = [day.isoformat() for day in days]
    yield dg.AssetCheckResult(
        check_name=CANDLES_RECONCILED.name, asset_key=CANDLES_1M.name, passed=not mismatches,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(f"{len(mismatches)} (day, table, exchange, symbol) differ from the trades" if mismatches
                     else "every interval sums to the day's trades"),
        metadata={"days": dg.MetadataValue.json(day_texts),
                  "mismatches": dg.MetadataValue.json([m.__dict__ for m in mismatches[:20]])},
    )
    for name, checked in samples.items():
        worst = max(checked, key=lambda c: c.worst_relative_error, default=None)
        yield dg.AssetCheckResult(
            check_name="sample_recomputed", asset_key=name, severity=dg.AssetCheckSeverity.ERROR,
            passed=worst is None or worst.worst_relative_error < SAMPLE_TOLERANCE,
            description=("no candles in the days computed" if worst is None else
                         f"{len(checked)} day(s), {sum(c.compared for c in checked)} candles compared; worst: "
                         f"{worst.exchange} {worst.symbol}, relative error {worst.worst_relative_error:.2e}"),
            metadata={"days": dg.MetadataValue.json(day_texts), "tolerance": SAMPLE_TOLERANCE,
                      "samples": dg.MetadataValue.json([c.__dict__ for c in checked])},
        )


def _cache_newest(context: dg.AssetExecutionContext, ch: ClickHouse, redis: RedisResource, day: date) -> int:
    """The newest candles and indicators of the newest day computed, into Redis. Redis down never fails the
    analytics (ClickHouse holds them): it is logged, and the next run writes them again."""
    try:
        return cache_latest_analytics(ch, redis.cache(), day)
    except Exception as error:  # the cache is a copy; say so, do not fail the day's analytics
        context.log.warning(f"caching the newest candles and indicators in Redis failed ({error!r}); "
                            "the next analytics run writes them again")
        return -1
