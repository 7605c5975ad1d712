"""The warehouse domain's definitions: the load step (tables and cache), its automation, the rebuild and
re-normalize jobs."""

import dagster as dg

from trading_platform.defs.warehouse.assets import warehouse_load
from trading_platform.defs.warehouse.jobs import build_rebuild_job, build_renormalize_job
from trading_platform.defs.warehouse.sensors import LOAD_AUTOMATION


def warehouse_definitions(exchanges: list[str]) -> dg.Definitions:
    """``exchanges``: every exchange of the config, enabled or not (an old day of any of them can be rebuilt)."""
    jobs = [build_rebuild_job(exchanges), build_renormalize_job(exchanges)]
    return dg.Definitions(assets=[warehouse_load], jobs=jobs, sensors=[LOAD_AUTOMATION])
