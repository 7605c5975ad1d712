"""Rebuild any day of one exchange in ClickHouse from the lake, or re-normalize it from the raw-frame archive:
partitioned jobs, so a date range is one backfill from the UI (Jobs -> rebuild_from_lake -> Backfill)."""

from datetime import date

import dagster as dg

from trading_platform.defs.resources import ClickHouseResource, FeedResource, IngestionResource, LakeResource
from trading_platform.defs.warehouse.assets import CLICKHOUSE_POOL
from trading_platform.ingestion.renormalize import renormalize_day
from trading_platform.load.rebuild import day_fingerprint, rebuild_day
from trading_platform.schema import BOOK_EVENTS, MARKET_TRADES, ORDERBOOK_SNAPSHOTS, QUARANTINE

REBUILD_START_DATE = "2025-01-01"
REBUILT_TABLES = (MARKET_TRADES, ORDERBOOK_SNAPSHOTS, BOOK_EVENTS, QUARANTINE)


def build_rebuild_job(exchanges: list[str]) -> dg.JobDefinition:
    partitions = dg.MultiPartitionsDefinition({
        "date": dg.DailyPartitionsDefinition(start_date=REBUILD_START_DATE, end_offset=1),
        "exchange": dg.StaticPartitionsDefinition(sorted(exchanges)),
    })

    @dg.op(pool=CLICKHOUSE_POOL, description="Delete the exchange-day in ClickHouse and load it again from the lake.")
    def rebuild_exchange_day(context: dg.OpExecutionContext, lake: LakeResource,
                             clickhouse: ClickHouseResource) -> None:
        key = context.partition_key
        assert isinstance(key, dg.MultiPartitionKey)
        day, exchange = date.fromisoformat(key.keys_by_dimension["date"]), key.keys_by_dimension["exchange"]
        with clickhouse.open() as ch:
            before = {t.name: day_fingerprint(ch, t, exchange, day) for t in REBUILT_TABLES}
            result = rebuild_day(lake.store(), ch, REBUILT_TABLES, exchange, day,
                                 attempt_token=f"{context.run_id}-{context.retry_number}")
            after = {t.name: day_fingerprint(ch, t, exchange, day) for t in REBUILT_TABLES}
        context.log.info(f"rebuilt {exchange} {day}: {result.files} lake files")
        context.add_output_metadata({
            "lake_files": result.files,
            "rows_after": dg.MetadataValue.json({name: rows for name, (rows, _) in after.items()}),
            "rows_before": dg.MetadataValue.json({name: rows for name, (rows, _) in before.items()}),
            "unchanged": dg.MetadataValue.json({name: before[name] == after[name] for name in after}),
        })

    @dg.job(name="rebuild_from_lake", partitions_def=partitions,
            description="Re-load one exchange-day from the Parquet lake into ClickHouse, idempotently.")
    def rebuild_job() -> None:
        rebuild_exchange_day()

    return rebuild_job


def build_renormalize_job(exchanges: list[str]) -> dg.JobDefinition:
    """Re-normalize one exchange-day's trades from the raw-frame archive with the code deployed now, then
    rebuild the ClickHouse days whose lake files it rewrote (the analytics follow by their automation or a
    backfill)."""
    partitions = dg.MultiPartitionsDefinition({
        "date": dg.DailyPartitionsDefinition(start_date=REBUILD_START_DATE, end_offset=1),
        "exchange": dg.StaticPartitionsDefinition(sorted(exchanges)),
    })

    @dg.op(pool=CLICKHOUSE_POOL, description="Decode the archived frames of the exchange-day again into the "
                                              "lake's trade files, then reload the days they cover.")
    def renormalize_exchange_day(context: dg.OpExecutionContext, lake: LakeResource, clickhouse: ClickHouseResource,
                                 feed: FeedResource, ingestion: IngestionResource) -> None:
        key = context.partition_key
        assert isinstance(key, dg.MultiPartitionKey)
        day, exchange = date.fromisoformat(key.keys_by_dimension["date"]), key.keys_by_dimension["exchange"]
        store = lake.store()
        result = renormalize_day(store, store, feed.exchanges().exchanges[exchange], day, ingestion.spike_threshold)
        if not result.batches:
            raise dg.Failure(f"no archived frames of {exchange} on {day} under raw/frames/: nothing to re-normalize")
        touched = sorted({date.fromisoformat(k.split("/date=", 1)[1][:10]) for k in result.keys})
        with clickhouse.open() as ch:
            for touched_day in touched:
                rebuild_day(store, ch, [MARKET_TRADES], exchange, touched_day,
                            attempt_token=f"{context.run_id}-{context.retry_number}")
        context.log.info(f"re-normalized {result.batches} archived batches of {exchange} {day}: {result.rows}")
        context.add_output_metadata({"batches": result.batches, "trade_rows": result.rows.get("trades", 0),
                                     "lake_files": len(result.keys),
                                     "days_reloaded": dg.MetadataValue.json([d.isoformat() for d in touched])})

    @dg.job(name="renormalize_from_archive", partitions_def=partitions,
            description="Decode an exchange-day's archived raw frames again (e.g. after a parsing fix) into the "
                        "lake's trade files, and reload them into ClickHouse.")
    def renormalize_job() -> None:
        renormalize_exchange_day()

    return renormalize_job
