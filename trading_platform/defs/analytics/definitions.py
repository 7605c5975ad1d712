"""The analytics domain's definitions: candles, composite prices and indicators per day (their automation
runs in the load sensor)."""

import dagster as dg

from trading_platform.defs.analytics.assets import analytics_day


def analytics_definitions() -> dg.Definitions:
    return dg.Definitions(assets=[analytics_day])
