"""Checks on the lake itself (the load assets carry their own checks in the same step)."""


from collections.abc import Iterator

import dagster as dg

from trading_platform.defs.assets import LOAD_CADENCE, RAW_TRADES
from trading_platform.defs.resources import FeedResource, LakeResource
from trading_platform.quality.reconciliation import check_lake_files
from trading_platform.schema import MARKET_TRADES
from trading_platform.storage.lake_loader import lake_days


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec("lake_schema", asset=RAW_TRADES.key, automation_condition=LOAD_CADENCE,
                          description="the newest file of every partition has the market_trades layout"),
        dg.AssetCheckSpec("freshness", asset=RAW_TRADES.key, automation_condition=LOAD_CADENCE,
                          description="the newest batch holds a trade received within 3 flush intervals"),
    ],
)
def raw_trades_checks(lake: LakeResource, feed: FeedResource) -> Iterator[dg.AssetCheckResult]:
    report = check_lake_files(lake.store(), MARKET_TRADES, lake_days(feed.load_lookback_days))
    yield dg.AssetCheckResult(
        asset_key=RAW_TRADES.key, check_name="lake_schema", passed=report.files_checked > 0 and not report.bad_files,
        metadata={"files_checked": report.files_checked, "bad_files": dg.MetadataValue.json(report.bad_files)},
    )
    limit = 3 * feed.batch_max_age_s + 5
    age = report.newest_file_age_s
    yield dg.AssetCheckResult(
        asset_key=RAW_TRADES.key, check_name="freshness", passed=age is not None and age <= limit,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"newest_trade_age_s": age if age is not None else -1.0, "limit_s": limit},
    )
