"""The lake domain's definitions: the raw datasets and their checks, and the daily compaction."""

import dagster as dg

from trading_platform.defs.lake.assets import LAKE_SPECS
from trading_platform.defs.lake.checks import RAW_ASSET_CHECKS
from trading_platform.defs.lake.compaction import lake_compaction


def lake_definitions() -> dg.Definitions:
    return dg.Definitions(assets=[*LAKE_SPECS, lake_compaction], asset_checks=RAW_ASSET_CHECKS)
