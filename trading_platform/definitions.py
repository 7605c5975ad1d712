"""The one ``Definitions`` object, built when Dagster loads the code location (not at import).

Each domain of ``defs/`` contributes its own definitions; the resources and the conventions every asset
shares (owner, freshness policy) are added here, once.
"""

from __future__ import annotations

from typing import cast

import dagster as dg

from trading_platform.config import load_exchanges
from trading_platform.defs.analytics.definitions import analytics_definitions
from trading_platform.defs.conventions import with_conventions
from trading_platform.defs.ingestion.definitions import ingestion_definitions
from trading_platform.defs.lake.definitions import lake_definitions
from trading_platform.defs.resources import build_resources
from trading_platform.defs.warehouse.definitions import warehouse_definitions
from trading_platform.exchanges.registry import exchange_class
from trading_platform.settings import Settings, load_settings


def build_definitions(settings: Settings) -> dg.Definitions:
    exchanges = load_exchanges(settings.exchanges_file)
    for name in exchanges.enabled:
        exchange_class(name)  # an enabled exchange without a module fails here, naming the key
    domains = dg.Definitions.merge(
        lake_definitions(),
        warehouse_definitions(list(exchanges.exchanges)),
        ingestion_definitions(list(exchanges.enabled)),
        analytics_definitions(),
    )
    return dg.Definitions(
        # The domains declare AssetSpecs and AssetsDefinitions only (no SourceAsset, nothing cacheable).
        assets=dg.map_asset_specs(with_conventions, cast(list[dg.AssetSpec | dg.AssetsDefinition], domains.assets)),
        asset_checks=domains.asset_checks,
        jobs=domains.jobs,
        sensors=domains.sensors,
        resources=build_resources(settings),
        # Load steps keep Dagster's default executor, one process per step: chdb releases its folder lock
        # only when the process that opened it exits, so a step run in a longer-lived process would keep the
        # folder from the next step of another run (seen as "Cannot lock file .../status").
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_settings())
