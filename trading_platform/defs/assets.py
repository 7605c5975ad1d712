"""The data assets, grouped by where they live: lake (Parquet), warehouse (ClickHouse), cache (Redis).

The ``raw_*`` lake assets are written by the long-running ingestion runs, which report a
materialization per flushed micro-batch. Everything downstream is declarative: one incremental load a
minute (never one run per micro-batch), each loading every lake batch not yet in the manifest.
"""

import time
from collections.abc import Callable, Iterator

import dagster as dg

from trading_platform.defs.resources import ClickHouseResource, FeedResource, LakeResource, RedisResource
from trading_platform.quality.reconciliation import (
    crossed_books,
    duplicate_trades,
    reconcile_table,
    unresolved_book_failures,
    unresolved_trade_gaps,
)
from trading_platform.schema import BOOK_EVENTS, MARKET_TRADES, ORDERBOOK_SNAPSHOTS, QUARANTINE, Table
from trading_platform.storage.clickhouse import ClickHouse
from trading_platform.storage.lake_loader import lake_days, list_lake_keys, load_new_batches
from trading_platform.storage.redis_cache import reseed_from_clickhouse

# At most one load a minute, and only when the lake got new batches since the last load was requested.
# (on_cron would wait for an update *after* the tick, so the last batches of an ended run would never load.)
# "Since requested", not "since handled": a batch flushed while a load runs lands after that load listed
# the lake, and the load's own materialization must not count as having seen it, or the final batches of
# a run that then stops would wait forever for another upstream update.
# An asset whose upstream is requested in the same tick joins that run: one run per minute in all.
_REQUESTED = dg.AutomationCondition.newly_requested()
LOAD_CADENCE: dg.AutomationCondition = (  # assets and checks alike
    dg.AutomationCondition.cron_tick_passed("* * * * *").since(_REQUESTED)
    & dg.AutomationCondition.any_deps_updated().since(_REQUESTED)
    & ~dg.AutomationCondition.in_progress()
).with_label("each minute, when upstream has new data")
STALENESS_LIMIT_S = 60.0
CLICKHOUSE_POOL = "clickhouse"  # chdb: one process per database folder; see dagster.yaml


def _raw_spec(name: str, table: Table, what: str) -> dg.AssetSpec:
    partitions = "/".join(f"{key}=…" for key in table.lake_partitions)
    return dg.AssetSpec(
        name,
        group_name="lake",
        kinds={"parquet"},
        description=f"{what}, as zstd Parquet micro-batches: raw/{table.dataset}/{partitions}/{{batch_id}}.parquet. "
        "Written by the ingest_<exchange> runs.",
        metadata={"dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(c.name, c.clickhouse_type, description=c.description) for c in table.columns]
        )},
    )


RAW_TRADES = _raw_spec("raw_trades", MARKET_TRADES, "Normalized, validated trades")
RAW_ORDERBOOK = _raw_spec("raw_orderbook", ORDERBOOK_SNAPSHOTS, "Top-N order-book snapshots of in-sync books")
RAW_BOOK_EVENTS = _raw_spec("raw_book_events", BOOK_EVENTS, "Sequence gaps, checksum mismatches and resyncs")
RAW_QUARANTINE = _raw_spec("raw_quarantine", QUARANTINE, "Rejected frames and rows with reason and raw text")

ExtraChecks = Callable[[ClickHouse, list], list[dg.AssetCheckResult]]


def _reconciliation_result(ch: ClickHouse, table: Table, store_keys: list[str], days: list) -> dg.AssetCheckResult:
    reconciliation = reconcile_table(ch, table, table.time_column, days, store_keys)
    return dg.AssetCheckResult(
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
    )


def _trade_checks(ch: ClickHouse, days: list) -> list[dg.AssetCheckResult]:
    duplicates = duplicate_trades(ch, MARKET_TRADES, days)
    return [dg.AssetCheckResult(
        check_name="no_duplicate_trades", passed=duplicates == 0,
        metadata={"duplicate_rows": duplicates, "days": dg.MetadataValue.json([d.isoformat() for d in days])},
    )]


def _book_checks(ch: ClickHouse, days: list) -> list[dg.AssetCheckResult]:
    crossed = crossed_books(ch, days)
    return [dg.AssetCheckResult(
        check_name="no_crossed_books", passed=not crossed,
        description="best bid < best ask in every snapshot (computed at query time: bids[1].1, asks[1].1)",
        metadata={"crossed_snapshots": dg.MetadataValue.json(crossed)},
    )]


def _event_checks(ch: ClickHouse, days: list) -> list[dg.AssetCheckResult]:
    report = unresolved_book_failures(ch, days)
    lost = unresolved_trade_gaps(ch, days)
    ranges = [f"{g.exchange} {g.symbol} trade ids {g.first_id}..{g.last_id} ({g.trades})" for g in lost]
    lost_trades = sum(g.trades for g in lost)
    return [
        dg.AssetCheckResult(
            check_name="books_resynced", passed=not report.unresolved, severity=dg.AssetCheckSeverity.WARN,
            description="every gap or checksum failure was followed by an in-sync snapshot of that book",
            metadata={"failures_by_exchange_kind": dg.MetadataValue.json(report.counts),
                      "unresolved": dg.MetadataValue.json(report.unresolved)},
        ),
        # ERROR: trades the exchange executed are missing from the lake and ClickHouse for good.
        dg.AssetCheckResult(
            check_name="trade_gaps_filled", passed=not lost, severity=dg.AssetCheckSeverity.ERROR,
            description=("every trade-id gap was filled from the exchange's REST history" if not lost else
                         f"{lost_trades} trades lost in {len(lost)} range(s): " + "; ".join(ranges[:5])),
            metadata={
                "unresolved_ranges": len(lost),
                "trades_lost": lost_trades,
                "lost": dg.MetadataValue.json([
                    {"exchange": g.exchange, "symbol": g.symbol, "first_id": g.first_id, "last_id": g.last_id,
                     "trades": g.trades, "detected_at": g.detected_at, "detail": g.detail} for g in lost[:50]]),
                "days": dg.MetadataValue.json([d.isoformat() for d in days]),
            },
        ),
    ]


def build_load_asset(name: str, table: Table, upstream: dg.AssetSpec, description: str,
                     extra_checks: dict[str, str], extra: ExtraChecks | None = None) -> dg.AssetsDefinition:
    check_specs = [dg.AssetCheckSpec("lake_reconciliation", asset=name,
                                     description="ClickHouse rows per day == rows loaded from the lake (manifest)")]
    check_specs += [dg.AssetCheckSpec(check, asset=name, description=text) for check, text in extra_checks.items()]

    @dg.asset(name=name, deps=[upstream], group_name="warehouse", kinds={"clickhouse"}, pool=CLICKHOUSE_POOL,
              automation_condition=LOAD_CADENCE, check_specs=check_specs, description=description)
    def load(context: dg.AssetExecutionContext, lake: LakeResource, clickhouse: ClickHouseResource,
             feed: FeedResource) -> Iterator[dg.MaterializeResult]:
        store = lake.store()
        days = lake_days(feed.load_lookback_days)
        with clickhouse.open() as ch:
            result = load_new_batches(store, ch, table, feed.load_lookback_days)
            context.log.info(f"loaded {result.files} lake files, {result.rows} rows into {table.qualified_name}")
            checks = [_reconciliation_result(ch, table, list_lake_keys(store, table, days), days)]
            if extra is not None:
                checks += extra(ch, days)
            total = int(ch.query_arrow(f"SELECT count() AS n FROM {table.qualified_name}").column("n")[0].as_py())
        yield dg.MaterializeResult(
            metadata={"files_loaded": result.files, "rows_loaded": result.rows, "dagster/row_count": total,
                      "table": table.qualified_name},
            check_results=checks,
        )

    return load


market_trades = build_load_asset(
    "market_trades", MARKET_TRADES, RAW_TRADES,
    "trading.market_trades: every lake trade batch loaded exactly once (insert dedup token = lake key, "
    "plus the trading.load_manifest table).",
    {"no_duplicate_trades": "no (exchange, symbol, trade_id) appears twice"}, _trade_checks)
orderbook_snapshots = build_load_asset(
    "orderbook_snapshots", ORDERBOOK_SNAPSHOTS, RAW_ORDERBOOK,
    "trading.orderbook_snapshots: top-N levels per book and second; best bid/ask, spread and mid are computed "
    "at query time (bids[1].1, asks[1].1).",
    {"no_crossed_books": "best bid below best ask in every snapshot"}, _book_checks)
book_events = build_load_asset(
    "book_events", BOOK_EVENTS, RAW_BOOK_EVENTS,
    "trading.book_events: every sequence gap, checksum mismatch and resync, as data.",
    {"books_resynced": "each failure was followed by an in-sync snapshot",
     "trade_gaps_filled": "no trade-id range left unfilled (ERROR: trades the exchange executed are missing)"},
    _event_checks)
quarantine = build_load_asset(
    "quarantine", QUARANTINE, RAW_QUARANTINE,
    "trading.quarantine: rejected frames with reason and raw text, queryable next to the trades.", {})


@dg.asset(
    deps=[market_trades, orderbook_snapshots],
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
    description="Redis hashes tp:price:{exchange}:{symbol}: last trade and top of book. The ingestion runs keep "
    "them hot every second; this asset reseeds or repairs them from ClickHouse (e.g. after a Redis restart) "
    "without ever replacing a newer value.",
)
def latest_prices(context: dg.AssetExecutionContext, clickhouse: ClickHouseResource, redis: RedisResource,
                  feed: FeedResource) -> dg.MaterializeResult:
    cache = redis.cache()
    with clickhouse.open() as ch:
        reseeded = reseed_from_clickhouse(ch, cache)
    entries = {(e["exchange"], e["symbol"]): e for e in cache.read_all()}
    expected = [(name, s) for name, cfg in feed.exchanges().enabled.items() for s in cfg.symbols]
    missing = [f"{e}:{s}" for e, s in expected if "price" not in entries.get((e, s), {})]
    now_us = time.time_ns() // 1000
    ages = {f"{e}:{s}": round((now_us - int(entries[(e, s)]["updated_us"])) / 1e6, 3)
            for e, s in expected if "updated_us" in entries.get((e, s), {})}
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


LAKE_SPECS = [RAW_TRADES, RAW_ORDERBOOK, RAW_BOOK_EVENTS, RAW_QUARANTINE]
WAREHOUSE_ASSETS = [market_trades, orderbook_snapshots, book_events, quarantine, latest_prices]
