"""The raw lake datasets (Parquet): external assets, written by the long-running ingestion runs, which
report a materialization per flushed micro-batch in their exchange's partition."""

import dagster as dg

from trading_platform.defs.lake.partitions import EXCHANGE_PARTITIONS
from trading_platform.schema import BOOK_EVENTS, MARKET_TRADES, ORDERBOOK_SNAPSHOTS, QUARANTINE, Table


def _raw_spec(name: str, table: Table, what: str) -> dg.AssetSpec:
    partitions = "/".join(f"{key}=…" for key in table.lake_partitions)
    return dg.AssetSpec(
        name,
        group_name="lake",
        kinds={"parquet"},
        partitions_def=EXCHANGE_PARTITIONS,
        description=f"{what}, as zstd Parquet micro-batches: raw/{table.dataset}/{partitions}/{{batch_id}}.parquet. "
        "Written by the ingest_<exchange> runs, which report this asset's checks with every batch.",
        metadata={"dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(c.name, c.clickhouse_type, description=c.description) for c in table.columns]
        )},
    )


RAW_TRADES = _raw_spec("raw_trades", MARKET_TRADES, "Normalized, validated trades")
RAW_ORDERBOOK = _raw_spec("raw_orderbook", ORDERBOOK_SNAPSHOTS, "Top-N order-book snapshots of in-sync books")
RAW_BOOK_EVENTS = _raw_spec("raw_book_events", BOOK_EVENTS, "Sequence gaps, checksum mismatches and resyncs")
RAW_QUARANTINE = _raw_spec("raw_quarantine", QUARANTINE, "Rejected frames and rows with reason and raw text")

# lake dataset -> (its asset, its table): how the ingestion runs and the checks find one from the other
RAW_SPECS: dict[str, tuple[dg.AssetSpec, Table]] = {
    MARKET_TRADES.dataset: (RAW_TRADES, MARKET_TRADES),
    ORDERBOOK_SNAPSHOTS.dataset: (RAW_ORDERBOOK, ORDERBOOK_SNAPSHOTS),
    BOOK_EVENTS.dataset: (RAW_BOOK_EVENTS, BOOK_EVENTS),
    QUARANTINE.dataset: (RAW_QUARANTINE, QUARANTINE),
}
LAKE_SPECS = [spec for spec, _ in RAW_SPECS.values()]
