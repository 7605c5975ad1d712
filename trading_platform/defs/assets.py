"""The data assets, grouped by where they live: lake (Parquet), warehouse (ClickHouse), cache (Redis).

``raw_trades`` and ``raw_quarantine`` are written by the long-running ingestion runs, which report a
materialization per flushed micro-batch. Everything downstream is declarative: one incremental load a
minute (never one run per micro-batch), each loading every lake batch not yet in the manifest.
"""


import time
from collections.abc import Iterator

import dagster as dg

from trading_platform.defs.resources import ClickHouseResource, FeedResource, LakeResource, RedisResource
from trading_platform.quality.reconciliation import duplicate_trades, reconcile_table
from trading_platform.schema import MARKET_TRADES, QUARANTINE
from trading_platform.storage.lake_loader import lake_days, list_lake_keys, load_new_batches
from trading_platform.storage.redis_cache import reseed_from_clickhouse

# At most one load a minute, and only when the lake got new batches since the last load. (on_cron
# would wait for an update *after* the tick, so the last batches of an ended run would never load.)
# An asset whose upstream is requested in the same tick joins that run: one run per minute in all.
LOAD_CADENCE = (
    dg.AutomationCondition.cron_tick_passed("* * * * *").since_last_handled()  # type: ignore[misc]
    & dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.in_progress()
).with_label("each minute, when upstream has new data")
STALENESS_LIMIT_S = 60.0
CLICKHOUSE_POOL = "clickhouse"  # chdb: one process per database folder; see dagster.yaml

RAW_TRADES = dg.AssetSpec(
    "raw_trades",
    group_name="lake",
    kinds={"parquet"},
    description="Normalized, validated trades as zstd Parquet micro-batches: "
    "raw/trades/exchange=…/symbol=…/date=…/{batch_id}.parquet. Written by the ingest_<exchange> runs.",
    metadata={"dagster/column_schema": dg.TableSchema(
        columns=[dg.TableColumn(c.name, str(c.arrow_type), description=c.description) for c in MARKET_TRADES.columns]
    )},
)
RAW_QUARANTINE = dg.AssetSpec(
    "raw_quarantine",
    group_name="lake",
    kinds={"parquet"},
    description="Frames and rows rejected by parsing or validation, with the reason and the raw text: "
    "raw/quarantine/exchange=…/date=…/{batch_id}.parquet.",
)


def _load(table_name: str, lake: LakeResource, clickhouse: ClickHouseResource, feed: FeedResource,
          context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult]:
    table = MARKET_TRADES if table_name == MARKET_TRADES.name else QUARANTINE
    time_column = "timestamp" if table is MARKET_TRADES else "received_at"
    store = lake.store()
    days = lake_days(feed.load_lookback_days)
    with clickhouse.open() as ch:
        result = load_new_batches(store, ch, table, feed.load_lookback_days)
        context.log.info(f"loaded {result.files} lake files, {result.rows} rows into {table.qualified_name}")
        reconciliation = reconcile_table(ch, table, time_column, days, list_lake_keys(store, table, days))
        check_results = [dg.AssetCheckResult(
            check_name="lake_reconciliation",
            passed=reconciliation.passed,
            description="rows per day in ClickHouse equal the rows the load manifest recorded from the lake",
            metadata={
                "manifest_rows": reconciliation.manifest_rows,
                "table_rows": reconciliation.table_rows,
                "lake_files": reconciliation.lake_files,
                "loaded_files": reconciliation.loaded_files,
                "mismatched_days": dg.MetadataValue.json(
                    {day: {"manifest": m, "table": t} for day, (m, t) in reconciliation.mismatched_days.items()}),
            },
        )]
        if table is MARKET_TRADES:
            duplicates = duplicate_trades(ch, table, days)
            check_results.append(dg.AssetCheckResult(
                check_name="no_duplicate_trades", passed=duplicates == 0,
                metadata={"duplicate_rows": duplicates, "days": dg.MetadataValue.json([d.isoformat() for d in days])},
            ))
        total = int(ch.query_arrow(f"SELECT count() AS n FROM {table.qualified_name}").column("n")[0].as_py())
    yield dg.MaterializeResult(
        metadata={
            "files_loaded": result.files,
            "rows_loaded": result.rows,
            "dagster/row_count": total,
            "table": table.qualified_name,
        },
        check_results=check_results,
    )


@dg.asset(
    deps=[RAW_TRADES],
    group_name="warehouse",
    kinds={"clickhouse"},
    pool=CLICKHOUSE_POOL,
    automation_condition=LOAD_CADENCE,
    check_specs=[
        dg.AssetCheckSpec("lake_reconciliation", asset="market_trades",
                          description="ClickHouse rows per day == rows loaded from the lake (manifest)"),
        dg.AssetCheckSpec("no_duplicate_trades", asset="market_trades",
                          description="no (exchange, symbol, trade_id) appears twice"),
    ],
    description="trading.market_trades: every lake trade batch loaded exactly once (insert dedup token = "
    "lake key, plus the trading.load_manifest table).",
)
def market_trades(context: dg.AssetExecutionContext, lake: LakeResource, clickhouse: ClickHouseResource,
                  feed: FeedResource) -> Iterator[dg.MaterializeResult]:
    yield from _load(MARKET_TRADES.name, lake, clickhouse, feed, context)


@dg.asset(
    deps=[RAW_QUARANTINE],
    group_name="warehouse",
    kinds={"clickhouse"},
    pool=CLICKHOUSE_POOL,
    automation_condition=LOAD_CADENCE,
    check_specs=[dg.AssetCheckSpec("lake_reconciliation", asset="quarantine",
                                   description="ClickHouse rows per day == rows loaded from the lake")],
    description="trading.quarantine: rejected frames with reason and raw text, queryable next to the trades.",
)
def quarantine(context: dg.AssetExecutionContext, lake: LakeResource, clickhouse: ClickHouseResource,
               feed: FeedResource) -> Iterator[dg.MaterializeResult]:
    yield from _load(QUARANTINE.name, lake, clickhouse, feed, context)


@dg.asset(
    deps=[market_trades],
    group_name="cache",
    kinds={"redis"},
    pool=CLICKHOUSE_POOL,
    automation_condition=LOAD_CADENCE,
    check_specs=[
        dg.AssetCheckSpec("coverage", asset="latest_prices",
                          description="every configured symbol of every enabled exchange has a cached price"),
        dg.AssetCheckSpec("staleness", asset="latest_prices",
                          description="no cached price older than the staleness limit"),
    ],
    description="Redis hashes tp:price:{exchange}:{symbol}. The ingestion runs keep them hot every second; "
    "this asset reseeds or repairs them from ClickHouse (e.g. after a Redis restart) without ever "
    "replacing a newer value.",
)
def latest_prices(context: dg.AssetExecutionContext, clickhouse: ClickHouseResource, redis: RedisResource,
                  feed: FeedResource) -> dg.MaterializeResult:
    cache = redis.cache()
    with clickhouse.open() as ch:
        reseeded = reseed_from_clickhouse(ch, cache)
    entries = {(e["exchange"], e["symbol"]): e for e in cache.read_all()}
    expected = [(name, s) for name, cfg in feed.exchanges().enabled.items() for s in cfg.symbols]
    missing = [f"{e}:{s}" for e, s in expected if (e, s) not in entries]
    now_us = time.time_ns() // 1000
    ages = {f"{e}:{s}": round((now_us - int(entries[(e, s)]["updated_us"])) / 1e6, 3)
            for e, s in expected if (e, s) in entries}
    stale = {k: v for k, v in ages.items() if v > STALENESS_LIMIT_S}
    context.log.info(f"reseeded {reseeded} keys from ClickHouse; {len(entries)} cached, {len(missing)} missing")
    return dg.MaterializeResult(
        metadata={"keys_reseeded_from_clickhouse": reseeded, "cached_symbols": len(entries),
                  "configured_symbols": len(expected)},
        check_results=[
            dg.AssetCheckResult(check_name="coverage", passed=not missing,
                                metadata={"missing": dg.MetadataValue.json(missing),
                                          "covered": len(expected) - len(missing)}),
            dg.AssetCheckResult(check_name="staleness", passed=not stale,
                                metadata={"limit_s": STALENESS_LIMIT_S, "stale": dg.MetadataValue.json(stale),
                                          "max_age_s": max(ages.values(), default=0.0)}),
        ],
    )

