"""The analytics domain's definitions: the candles per day (their automation runs in the load sensor)."""

import dagster as dg

from trading_platform.defs.analytics.assets import candles


def analytics_definitions() -> dg.Definitions:
    return dg.Definitions(assets=[candles])
