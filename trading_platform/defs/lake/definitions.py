"""The lake domain's definitions: the raw datasets and their checks."""

import dagster as dg

from trading_platform.defs.lake.assets import LAKE_SPECS
from trading_platform.defs.lake.checks import RAW_ASSET_CHECKS


def lake_definitions() -> dg.Definitions:
    return dg.Definitions(assets=LAKE_SPECS, asset_checks=RAW_ASSET_CHECKS)
