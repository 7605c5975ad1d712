"""What every asset shares, stamped on each spec in one place when the definitions are built: its owner
and its freshness policy (the domain modules declare neither)."""

from datetime import timedelta

import dagster as dg

OWNERS = ["team:market-data"]
# Raw batches land every minute while the feeds run (TP_BATCH_MAX_AGE_S); the warehouse and the cache load
# once a minute after them.
RAW_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(minutes=10), warn_window=timedelta(minutes=3))
LOAD_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(minutes=10),
                                                warn_window=timedelta(minutes=3))
# Candles follow the load they are computed after (a minute's cadence of their own).
ANALYTICS_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(minutes=15),
                                                     warn_window=timedelta(minutes=5))
# The daily compaction runs after midnight for the day that closed.
DAILY_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=50), warn_window=timedelta(hours=26))
FRESHNESS_BY_GROUP = {"lake": RAW_FRESHNESS, "warehouse": LOAD_FRESHNESS, "cache": LOAD_FRESHNESS,
                      "analytics": ANALYTICS_FRESHNESS, "maintenance": DAILY_FRESHNESS}


def with_conventions(spec: dg.AssetSpec) -> dg.AssetSpec:
    """``spec`` with the platform's owner and its group's freshness policy (a spec outside them fails here)."""
    if spec.group_name not in FRESHNESS_BY_GROUP:
        raise ValueError(f"asset {spec.key.to_user_string()} is in group {spec.group_name!r}, which has no "
                         f"freshness policy; groups: {sorted(FRESHNESS_BY_GROUP)}")
    return spec.replace_attributes(owners=OWNERS, freshness_policy=FRESHNESS_BY_GROUP[spec.group_name])
