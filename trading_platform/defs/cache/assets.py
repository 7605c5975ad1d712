"""``latest_prices``: the declarative side of the Redis hot cache. The ingestion runs keep it hot every
second; this asset reseeds or repairs it from ClickHouse (e.g. after a Redis restart). It is materialized
by the warehouse's one load step, right after the tables it reads."""

import time
from typing import Any

import dagster as dg

from trading_platform.defs.cache.checks import coverage_result, staleness_result
from trading_platform.defs.warehouse.sensors import LOAD_CADENCE
from trading_platform.load.cache_reseed import reseed_from_clickhouse
from trading_platform.storage.clickhouse import ClickHouse
from trading_platform.storage.redis_cache import PriceCache

LATEST_PRICES = dg.AssetSpec(
    "latest_prices",
    deps=["market_trades", "orderbook_snapshots"],
    group_name="cache",
    kinds={"redis"},
    automation_condition=LOAD_CADENCE,
    description="Redis hashes tp:price:{exchange}:{symbol}: last trade and top of book. The ingestion runs keep "
    "them hot every second; this asset reseeds or repairs them from ClickHouse (e.g. after a Redis restart) "
    "without ever replacing a newer value.",
)


def refresh_prices(context: dg.AssetExecutionContext, ch: ClickHouse, cache: PriceCache,
                   expected: list[tuple[str, str]]) -> dg.MaterializeResult[Any]:
    """Reseed the cache from ClickHouse, then check that every ``expected`` (exchange, symbol) is cached."""
    reseeded = reseed_from_clickhouse(ch, cache)
    entries = {(e["exchange"], e["symbol"]): e for e in cache.read_all()}
    missing = [f"{e}:{s}" for e, s in expected if "price" not in entries.get((e, s), {})]
    now_us = time.time_ns() // 1000
    ages = {f"{e}:{s}": round((now_us - int(entries[(e, s)]["updated_us"])) / 1e6, 3)
            for e, s in expected if "updated_us" in entries.get((e, s), {})}
    context.log.info(f"reseeded {reseeded} keys from ClickHouse; {len(entries)} cached, {len(missing)} missing")
    return dg.MaterializeResult(
        asset_key=LATEST_PRICES.key,
        metadata={"keys_reseeded_from_clickhouse": reseeded, "cached_symbols": len(entries),
                  "configured_symbols": len(expected)},
        check_results=[coverage_result(LATEST_PRICES.key, len(expected), missing),
                       staleness_result(LATEST_PRICES.key, ages)],
    )
