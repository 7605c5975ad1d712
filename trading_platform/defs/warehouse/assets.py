"""The ClickHouse tables, each kept level with its lake dataset by one incremental load a minute (never one
run per micro-batch), which loads every lake batch not yet in the manifest, checks the tables, then
repairs the Redis cache (``latest_prices``) from them.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from trading_platform.defs.cache.assets import LATEST_PRICES, refresh_prices
from trading_platform.defs.cache.checks import LATEST_PRICES_CHECKS
from trading_platform.defs.lake.assets import RAW_BOOK_EVENTS, RAW_ORDERBOOK, RAW_QUARANTINE, RAW_TRADES
from trading_platform.defs.resources import ClickHouseResource, FeedResource, LakeResource, RedisResource
from trading_platform.defs.warehouse.checks import (
    ExtraChecks,
    book_checks,
    event_checks,
    reconciliation_result,
    trade_checks,
)
from trading_platform.defs.warehouse.sensors import LOAD_CADENCE
from trading_platform.load.lake_files import lake_days
from trading_platform.load.lake_to_clickhouse import load_new_batches
from trading_platform.schema import BOOK_EVENTS, MARKET_TRADES, ORDERBOOK_SNAPSHOTS, QUARANTINE, Table
from trading_platform.storage.clickhouse import ClickHouse
from trading_platform.storage.object_store import ObjectStore

CLICKHOUSE_POOL = "clickhouse"  # chdb: one process per database folder; see dagster.yaml


@dataclass(frozen=True)
class WarehouseTable:
    """One ClickHouse table the warehouse load keeps level with its lake dataset, and the checks it reports."""

    name: str
    table: Table
    upstream: dg.AssetSpec
    description: str
    checks: dict[str, str] = field(default_factory=dict)  # check name -> what it asserts (beyond reconciliation)
    extra: ExtraChecks | None = None

    def spec(self) -> dg.AssetSpec:
        return dg.AssetSpec(self.name, deps=[self.upstream], group_name="warehouse", kinds={"clickhouse"},
                            automation_condition=LOAD_CADENCE, description=self.description)

    def check_specs(self) -> list[dg.AssetCheckSpec]:
        checks = {"lake_reconciliation": "ClickHouse rows per day == rows loaded from the lake (manifest)",
                  **self.checks}
        return [dg.AssetCheckSpec(check, asset=self.name, description=text) for check, text in checks.items()]


WAREHOUSE_TABLES = (
    WarehouseTable(
        "market_trades", MARKET_TRADES, RAW_TRADES,
        "trading.market_trades: every lake trade batch loaded exactly once (many batches per insert, each "
        "group claimed in trading.load_intents with its dedup token before it is sent, plus the "
        "trading.load_manifest table).",
        {"no_duplicate_trades": "no (exchange, symbol, trade_id) appears twice"}, trade_checks),
    WarehouseTable(
        "orderbook_snapshots", ORDERBOOK_SNAPSHOTS, RAW_ORDERBOOK,
        "trading.orderbook_snapshots: top-N levels per book and second; best bid/ask, spread and mid are "
        "computed at query time (bids[1].1, asks[1].1).",
        {"no_crossed_books": "best bid below best ask in every snapshot"}, book_checks),
    WarehouseTable(
        "book_events", BOOK_EVENTS, RAW_BOOK_EVENTS,
        "trading.book_events: every sequence gap, checksum mismatch and resync, as data.",
        {"books_resynced": "each failure was followed by an in-sync snapshot",
         "trade_gaps_filled": "no trade-id range left unfilled (ERROR: trades the exchange executed are missing)"},
        event_checks),
    WarehouseTable(
        "quarantine", QUARANTINE, RAW_QUARANTINE,
        "trading.quarantine: rejected frames with reason and raw text, queryable next to the trades."),
)


def _load_table(context: dg.AssetExecutionContext, ch: ClickHouse, store: ObjectStore, target: WarehouseTable,
                lookback_days: int) -> dg.MaterializeResult[Any]:
    table = target.table
    days = lake_days(lookback_days)
    started = time.monotonic()
    result = load_new_batches(store, ch, table, lookback_days)
    seconds = time.monotonic() - started
    context.log.info(f"loaded {result.files} lake files, {result.rows} rows into {table.qualified_name} "
                     f"in {seconds:.1f}s")
    for key, why in result.held_back.items():
        context.log.warning(f"held back {key}: {why}")
    # The lake as the load listed it: one listing per load (on S3 each is a walk of the partitions).
    checks = [reconciliation_result(ch, table, result.listed, days, result.held_back, target.name)]
    if target.extra is not None:
        checks += target.extra(ch, days, target.name)
    total = int(ch.query_arrow(f"SELECT count() AS n FROM {table.sql_name}").column("n")[0].as_py())
    return dg.MaterializeResult(
        asset_key=target.name,
        metadata={"files_loaded": result.files, "rows_loaded": result.rows, "dagster/row_count": total,
                  "table": table.qualified_name, "load_seconds": round(seconds, 3),
                  "rows_per_s": round(result.rows / seconds, 1) if seconds > 0 else 0.0,
                  "held_back_files": len(result.held_back), "inserts": result.inserts,
                  # batches a flush was still writing when the load listed the lake: loaded next time
                  "incomplete_batches": len(result.incomplete),
                  # one series per exchange, so the UI plots each exchange's load over time
                  **{f"{exchange}.rows_loaded": rows for exchange, rows in result.rows_by_exchange().items()}},
        check_results=checks,
    )


# One step for the whole warehouse and cache: each Dagster step is a process of its own, and opening the
# embedded ClickHouse costs seconds, so a load that opens it once keeps a minute's load short (and the
# checks on the latest materializations settled for most of the minute). Subsettable: the automation and
# the UI's Materialize button load any subset; the assets, their lineage and their checks stay separate.
@dg.multi_asset(
    name="warehouse_load",
    specs=[*(t.spec() for t in WAREHOUSE_TABLES), LATEST_PRICES],
    check_specs=[*(c for t in WAREHOUSE_TABLES for c in t.check_specs()), *LATEST_PRICES_CHECKS],
    can_subset=True,
    pool=CLICKHOUSE_POOL,
    description="Load every lake batch not yet in the manifest into ClickHouse, check it, then repair the "
    "Redis cache from ClickHouse.",
)
def warehouse_load(context: dg.AssetExecutionContext, lake: LakeResource, clickhouse: ClickHouseResource,
                   redis: RedisResource, feed: FeedResource) -> Iterator[dg.MaterializeResult[Any]]:
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    store = lake.store()
    failed: dict[str, str] = {}
    with clickhouse.open() as ch:
        for target in WAREHOUSE_TABLES:
            if target.name not in selected:
                continue
            # One table's failure must not hold back the others' loads; the step still fails, naming it.
            try:
                yield _load_table(context, ch, store, target, lake.lookback_days)
            except Exception as error:  # reported below; the step fails
                context.log.error(f"loading {target.table.qualified_name} failed: {error!r}")
                failed[target.name] = repr(error)
        if LATEST_PRICES.key.to_user_string() in selected:
            expected = [(name, s) for name, cfg in feed.exchanges().enabled.items() for s in cfg.symbols]
            try:
                yield refresh_prices(context, ch, redis.cache(), expected)
            except Exception as error:  # reported below; the step fails
                context.log.error(f"refreshing latest_prices failed: {error!r}")
                failed[LATEST_PRICES.key.to_user_string()] = repr(error)
    if failed:
        raise dg.Failure(description="; ".join(f"{name}: {why}" for name, why in failed.items()),
                         metadata={"failed_assets": dg.MetadataValue.json(failed)})

