"""The checks of the Redis price cache, reported by the step that repairs it (``latest_prices``)."""

import dagster as dg

STALENESS_LIMIT_S = 60.0

LATEST_PRICES_CHECKS = [
    dg.AssetCheckSpec("coverage", asset="latest_prices",
                      description="every configured symbol of every enabled exchange has a cached price"),
    dg.AssetCheckSpec("staleness", asset="latest_prices",
                      description="no cached price older than the staleness limit"),
]


def coverage_result(asset_key: dg.AssetKey, expected: int, missing: list[str]) -> dg.AssetCheckResult:
    # WARN: a pair with no cached price yet is late (it has not traded since the cache was empty).
    return dg.AssetCheckResult(
        asset_key=asset_key, check_name="coverage", passed=not missing, severity=dg.AssetCheckSeverity.WARN,
        description=(f"all {expected} configured pairs have a cached price" if not missing
                     else f"{len(missing)} pair(s) without a cached price: " + ", ".join(missing[:5])),
        metadata={"missing": dg.MetadataValue.json(missing), "covered": expected - len(missing)})


def staleness_result(asset_key: dg.AssetKey, ages: dict[str, float]) -> dg.AssetCheckResult:
    """``ages``: seconds since each cached pair was updated."""
    stale = {k: v for k, v in ages.items() if v > STALENESS_LIMIT_S}
    return dg.AssetCheckResult(
        asset_key=asset_key, check_name="staleness", passed=not stale, severity=dg.AssetCheckSeverity.WARN,
        description=(f"every cached price is at most {STALENESS_LIMIT_S:.0f}s old" if not stale
                     else f"{len(stale)} cached price(s) older than {STALENESS_LIMIT_S:.0f}s: "
                     + ", ".join(list(stale)[:5])),
        metadata={"limit_s": STALENESS_LIMIT_S, "stale": dg.MetadataValue.json(stale),
                  "max_age_s": max(ages.values(), default=0.0)})
