"""Checks on the lake itself, evaluated where the data is produced.

Every ingestion run reports these checks with each flushed batch (next to the batch's materialization),
so the UI shows them against the latest materialization. The same checks can be launched by hand from
the UI; they then look at the newest file of every lake partition. The ERROR checks are blocking: while
the latest batch of a raw dataset fails one, the automatic ClickHouse load of that dataset waits, and the
loader never loads a file that fails them (it is listed as held back until someone fixes it).
"""

import warnings
from collections.abc import Iterator

import dagster as dg
import pyarrow as pa

# Not re-exported at the top level; the type of AssetCheckEvaluation.target_materialization_data.
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from trading_platform.defs.lake.assets import RAW_SPECS
from trading_platform.defs.lake.partitions import EXCHANGE_PARTITIONS
from trading_platform.defs.resources import LakeResource
from trading_platform.load.lake_files import lake_days
from trading_platform.quality.batch_checks import (
    LAKE_SCHEMA,
    QUARANTINE_SHARE,
    VALID_ROWS,
    WARN,
    CheckOutcome,
    quarantine_share_check,
    row_check,
    schema_check,
    schema_problems,
)
from trading_platform.quality.reconciliation import newest_lake_files
from trading_platform.schema import BOOK_EVENTS, MARKET_TRADES, ORDERBOOK_SNAPSHOTS, QUARANTINE, Table

# (check, description, blocking) per raw dataset; ERROR checks block the load, WARN ones do not.
RAW_CHECKS: dict[str, list[tuple[str, str, bool]]] = {
    table.dataset: [
        (LAKE_SCHEMA, f"ERROR: every file of the batch has the {table.name} layout (columns and types)", True),
        (VALID_ROWS, "ERROR: every row passes the dataset's rules (the failing rules, counts per "
                     "exchange:symbol and example rows are in the metadata)", True),
    ] for table in (MARKET_TRADES, ORDERBOOK_SNAPSHOTS, BOOK_EVENTS, QUARANTINE)
}
RAW_CHECKS[MARKET_TRADES.dataset].append(
    (QUARANTINE_SHARE, "WARN: at most 5% of the batch's rows went to the quarantine", False))


def check_evaluation(asset_key: dg.AssetKey, outcome: CheckOutcome,
                     target: AssetCheckEvaluationTargetMaterializationData | None = None,
                     partition: str | None = None) -> dg.AssetCheckEvaluation:
    """``outcome`` as the event Dagster stores and the UI shows (``target``: the materialization checked)."""
    blocking = next(b for name, _, b in RAW_CHECKS[_dataset(asset_key)] if name == outcome.check)
    return dg.AssetCheckEvaluation(
        asset_key=asset_key, check_name=outcome.check, passed=outcome.passed,
        severity=dg.AssetCheckSeverity.WARN if outcome.severity == WARN else dg.AssetCheckSeverity.ERROR,
        description=outcome.description, blocking=blocking,
        metadata={k: v if isinstance(v, int | float | str) else dg.MetadataValue.json(v)  # type: ignore[arg-type]
                  for k, v in outcome.metadata.items()},
        target_materialization_data=target, partition=partition,
    )


def _dataset(asset_key: dg.AssetKey) -> str:
    return next(dataset for dataset, (spec, _) in RAW_SPECS.items() if spec.key == asset_key)


def _build_raw_checks(spec: dg.AssetSpec, table: Table) -> dg.AssetChecksDefinition:
    # Partitioned checks are a Dagster preview; without them the UI shows only the newest-started run's
    # evaluations (one execution row per check and run), so two of three exchanges read "not evaluated".
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Specifying a partitions_def on an AssetCheckSpec", dg.PreviewWarning)
        specs = [dg.AssetCheckSpec(name, asset=spec.key, description=text, blocking=blocking,
                                   partitions_def=EXCHANGE_PARTITIONS)
                 for name, text, blocking in RAW_CHECKS[table.dataset]]

    @dg.multi_asset_check(name=f"{spec.key.to_python_identifier()}_checks", specs=specs, can_subset=True,
                          description=f"{spec.key.to_user_string()} checks over the newest file of every "
                                      "lake partition (the ingestion runs report them with every batch)")
    def raw_checks(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> Iterator[dg.AssetCheckResult]:
        exchange = context.partition_key  # the check runs per exchange, as the ingestion runs report it
        days = lake_days(lake.lookback_days)
        files = newest_lake_files(lake.store(), table, days, exchange)
        outcomes = [schema_check(table, {key: schema for key, (schema, _) in files.items()})]
        readable = [rows.select(table.column_names).cast(table.arrow_schema) for schema, rows in files.values()
                    if not schema_problems(schema, table)]
        rows = pa.concat_tables(readable) if readable else table.arrow_schema.empty_table()
        outcomes.append(row_check(table, rows))
        if table is MARKET_TRADES:
            quarantined = newest_lake_files(lake.store(), QUARANTINE, days, exchange)
            outcomes.append(quarantine_share_check(rows.num_rows, sum(r.num_rows for _, r in quarantined.values())))
        selected = {key.name for key in context.selected_asset_check_keys}
        for outcome in outcomes:
            if outcome.check in selected:
                evaluation = check_evaluation(spec.key, outcome)
                yield dg.AssetCheckResult(
                    check_name=evaluation.check_name, passed=evaluation.passed, severity=evaluation.severity,
                    description=evaluation.description, metadata=evaluation.metadata)

    return raw_checks


RAW_ASSET_CHECKS = [_build_raw_checks(spec, table) for spec, table in RAW_SPECS.values()]
