"""When the warehouse (and the cache after it) loads: a cadence on the assets, evaluated by one sensor."""

import dagster as dg

# At most one load a minute, and only when the lake got new batches since the last load was requested.
# (on_cron would wait for an update *after* the tick, so the last batches of an ended run would never load.)
# "Since requested", not "since handled": a batch flushed while a load runs lands after that load listed
# the lake, and the load's own materialization must not count as having seen it, or the final batches of
# a run that then stops would wait forever for another upstream update.
# An asset whose upstream is requested in the same tick joins that run: one run per minute in all.
_REQUESTED = dg.AutomationCondition.newly_requested()
# The raw datasets' blocking checks hold back what they fail at the level of the batch: the loader never
# loads a batch with a lake file that fails them (see the held_back metadata), while every other batch
# keeps loading.
LOAD_CADENCE: dg.AutomationCondition[dg.AssetKey] = (
    dg.AutomationCondition.cron_tick_passed("* * * * *").since(_REQUESTED)
    & dg.AutomationCondition.any_deps_updated().since(_REQUESTED)
    & ~dg.AutomationCondition.in_progress()
).with_label("each minute, when upstream has new data")

LOAD_AUTOMATION = dg.AutomationConditionSensorDefinition(
    "load_automation",
    target=dg.AssetSelection.all() | dg.AssetSelection.all_asset_checks(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    description="Evaluates the load cadence of the warehouse and cache assets and their checks.",
)
