"""The one ``Definitions`` object, built when Dagster loads the code location (not at import)."""

from __future__ import annotations

import dagster as dg

from trading_platform.config import load_exchanges
from trading_platform.defs.assets import LAKE_SPECS, WAREHOUSE_ASSETS
from trading_platform.defs.checks import raw_trades_checks
from trading_platform.defs.ingestion import build_ingestion_job, build_supervisor
from trading_platform.defs.rebuild import build_rebuild_job
from trading_platform.defs.resources import build_resources
from trading_platform.exchanges.registry import exchange_class
from trading_platform.settings import Settings, load_settings


def build_definitions(settings: Settings) -> dg.Definitions:
    exchanges = load_exchanges(settings.exchanges_file)
    for name in exchanges.enabled:
        exchange_class(name)  # an enabled exchange without a module fails here, naming the key
    jobs = [build_ingestion_job(name) for name in exchanges.enabled]
    rebuild = build_rebuild_job(list(exchanges.exchanges))
    sensors: list[dg.SensorDefinition] = [build_supervisor(job, name)
                                          for job, name in zip(jobs, exchanges.enabled, strict=True)]
    sensors.append(dg.AutomationConditionSensorDefinition(
        "load_automation",
        target=dg.AssetSelection.all() | dg.AssetSelection.all_asset_checks(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=15,
        description="Evaluates the load cadence of the warehouse and cache assets and their checks.",
    ))
    return dg.Definitions(
        assets=[*LAKE_SPECS, *WAREHOUSE_ASSETS],
        asset_checks=[raw_trades_checks],
        jobs=[*jobs, rebuild],
        sensors=sensors,
        resources=build_resources(settings),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_settings())
