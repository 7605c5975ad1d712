"""Every check users read as a validation report: passes on good data, fails on the bad case with the
severity chosen for it and metadata that names what is wrong. Real lake folder, chdb and Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from trading_platform.config import ExchangesFile, load_exchanges
from trading_platform.definitions import build_definitions
from trading_platform.defs.lake.assets import LAKE_SPECS
from trading_platform.defs.lake.checks import RAW_ASSET_CHECKS
from trading_platform.defs.resources import build_resources
from trading_platform.defs.warehouse.assets import warehouse_load
from trading_platform.ingestion.lake_writer import to_parquet_bytes, write_batch
from trading_platform.replay import ReplayServer, running_replay_server
from trading_platform.schema import BOOK_EVENTS, MARKET_TRADES, ORDERBOOK_SNAPSHOTS, QUARANTINE, Table
from trading_platform.settings import Settings
from trading_platform.storage.object_store import LocalObjectStore
from trading_platform.storage.redis_cache import LatestBook, LatestTrade, PriceCache, connect
from trading_platform_tests.conftest import CONFIG_FILE
from trading_platform_tests.quality.test_batch_checks import books, trades

ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN


@pytest.fixture
def lake(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "lake")


@pytest.fixture
def resources(tmp_path: Path, lake: LocalObjectStore, redis_url: str) -> dict[str, dg.ConfigurableResource]:
    return build_resources(Settings(state_dir=tmp_path / "state", exchanges_file=CONFIG_FILE, storage_url=lake.url,
                                    clickhouse_url=f"chdb://{tmp_path}/ch", redis_url=redis_url))


def now_trades(first_id: int, n: int = 3, **columns: list) -> pa.Table:
    now = datetime.now(UTC)
    return trades(n, trade_id=[str(first_id + i) for i in range(n)], timestamp=[now] * n,
                  received_at=[now] * n, **columns)


def evaluate(assets: list[str], resources: dict) -> dict[str, dg.AssetCheckEvaluation]:
    """Materialize these warehouse assets (a subset of the one load step), as the UI's Materialize does."""
    result = dg.materialize([warehouse_load], selection=assets, resources=resources)
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def put_file(lake: LocalObjectStore, table: Table, key_batch: str, rows: pa.Table) -> str:
    """A lake file written outside the ingestion path (another writer, an old version, a hand fix)."""
    rows = rows.append_column("batch_id", pa.array([key_batch] * rows.num_rows))
    key = table.lake_key(key_batch, "binance", datetime.now(UTC).date(), "BTC-USDT")
    lake.put(key, to_parquet_bytes(rows.cast(table.arrow_schema)))
    return key


def test_trade_checks_pass_on_good_batches(lake: LocalObjectStore, resources: dict) -> None:
    write_batch(lake, "binance", "binance-1", {MARKET_TRADES: now_trades(1)})
    write_batch(lake, "binance", "binance-2", {MARKET_TRADES: now_trades(4)})
    checks = evaluate(["market_trades"], resources)
    assert checks["lake_reconciliation"].passed and checks["no_duplicate_trades"].passed
    assert checks["lake_reconciliation"].metadata["table_rows"].value == 6


def test_a_trade_stored_by_two_batches_fails_no_duplicate_trades(lake: LocalObjectStore, resources: dict) -> None:
    write_batch(lake, "binance", "binance-1", {MARKET_TRADES: now_trades(1)})
    write_batch(lake, "binance", "binance-2", {MARKET_TRADES: now_trades(3)})  # trade 3 again
    check = evaluate(["market_trades"], resources)["no_duplicate_trades"]
    assert not check.passed and check.severity == ERROR
    assert check.metadata["duplicate_rows"].value == 1


def test_a_file_failing_the_lake_checks_is_held_back_until_fixed(lake: LocalObjectStore, resources: dict) -> None:
    write_batch(lake, "binance", "binance-1", {MARKET_TRADES: now_trades(1)})
    bad = put_file(lake, MARKET_TRADES, "binance-2", now_trades(4, price=[1.0, -5.0, 1.0]))
    check = evaluate(["market_trades"], resources)["lake_reconciliation"]
    assert not check.passed and check.severity == ERROR
    assert check.metadata["held_back_files"].value == 1
    assert "positive_price" in check.metadata["held_back"].value[bad]
    assert check.metadata["table_rows"].value == 3  # everything else loaded

    put_file(lake, MARKET_TRADES, "binance-2", now_trades(4))  # the writer's fix replaces the file
    check = evaluate(["market_trades"], resources)["lake_reconciliation"]
    assert check.passed and check.metadata["table_rows"].value == 6


def test_a_crossed_book_in_clickhouse_fails_no_crossed_books(tmp_path: Path, lake: LocalObjectStore,
                                                             resources: dict) -> None:
    snapshots = books([[(10.0, 1.0)]], [[(11.0, 1.0)]])
    now = datetime.now(UTC)
    snapshots = snapshots.set_column(3, "timestamp", pa.array([now], snapshots.schema.field("timestamp").type))
    write_batch(lake, "kraken", "kraken-1", {ORDERBOOK_SNAPSHOTS: snapshots})
    assert evaluate(["orderbook_snapshots"], resources)["no_crossed_books"].passed

    # The loader never loads a crossed book; one that reaches the table some other way is still caught.
    crossed = books([[(12.0, 1.0)]], [[(11.0, 1.0)]]).set_column(3, "timestamp", snapshots.column("timestamp"))
    crossed = crossed.append_column("batch_id", pa.array(["elsewhere"]))
    with resources["clickhouse"].open() as ch:
        ch.insert_arrow(ORDERBOOK_SNAPSHOTS.qualified_name, crossed.cast(ORDERBOOK_SNAPSHOTS.arrow_schema))
    check = evaluate(["orderbook_snapshots"], resources)["no_crossed_books"]
    assert not check.passed and check.severity == ERROR
    assert check.metadata["crossed_snapshots"].value == {"kraken:S0-USD": 1}


def _event(kind: str, symbol: str = "BTC-USDT", at: datetime | None = None) -> pa.Table:
    schema = pa.schema([f for f in BOOK_EVENTS.arrow_schema if f.name != "batch_id"])
    return pa.Table.from_pydict({"exchange": ["binance"], "symbol": [symbol], "timestamp": [at or datetime.now(UTC)],
                                 "kind": [kind], "detail": ["expected 5 got 9"]}, schema=schema)


def test_a_book_failure_without_a_later_snapshot_warns_books_resynced(lake: LocalObjectStore,
                                                                      resources: dict) -> None:
    write_batch(lake, "binance", "binance-1", {BOOK_EVENTS: _event("sequence_gap")})
    evaluate(["orderbook_snapshots"], resources)  # creates the (empty) snapshot table
    check = evaluate(["book_events"], resources)["books_resynced"]
    assert not check.passed and check.severity == WARN
    assert check.metadata["unresolved"].value == ["binance:BTC-USDT"]


def test_a_book_failure_followed_by_an_in_sync_snapshot_passes_books_resynced(lake: LocalObjectStore,
                                                                             resources: dict) -> None:
    failed_at = datetime.now(UTC) - timedelta(seconds=5)
    write_batch(lake, "kraken", "kraken-1", {BOOK_EVENTS: _event("checksum_mismatch", "S0-USD", failed_at)
                .set_column(0, "exchange", pa.array(["kraken"]))})
    resynced = books([[(10.0, 1.0)]], [[(11.0, 1.0)]])
    now = pa.array([datetime.now(UTC)], resynced.schema.field("timestamp").type)
    write_batch(lake, "kraken", "kraken-2", {ORDERBOOK_SNAPSHOTS: resynced.set_column(3, "timestamp", now)
                .set_column(4, "received_at", now)})
    evaluate(["orderbook_snapshots"], resources)
    check = evaluate(["book_events"], resources)["books_resynced"]
    assert check.passed, check.description
    assert check.metadata["unresolved"].value == []


def test_rows_missing_from_clickhouse_fail_lake_reconciliation_naming_the_day(lake: LocalObjectStore,
                                                                              resources: dict) -> None:
    write_batch(lake, "binance", "binance-1", {MARKET_TRADES: now_trades(1)})
    assert evaluate(["market_trades"], resources)["lake_reconciliation"].passed
    with resources["clickhouse"].open() as ch:  # someone deletes a loaded row by hand
        ch.command(f"DELETE FROM {MARKET_TRADES.qualified_name} WHERE trade_id = '2'")
    check = evaluate(["market_trades"], resources)["lake_reconciliation"]
    assert not check.passed and check.severity == ERROR
    day = datetime.now(UTC).date().isoformat()
    assert check.metadata["mismatched_days"].value == {day: {"manifest": 3, "table": 2}}


def test_an_unfilled_trade_gap_fails_trade_gaps_filled_naming_the_range(lake: LocalObjectStore,
                                                                        resources: dict) -> None:
    write_batch(lake, "binance", "binance-1", {BOOK_EVENTS: _event("trade_gap_filled")})
    assert evaluate(["book_events"], resources)["trade_gaps_filled"].passed
    lost = _event("trade_gap_unresolved").set_column(
        4, "detail", pa.array(["trade ids 101..130 (30 trades) lost: REST history ends at 131"]))
    write_batch(lake, "binance", "binance-2", {BOOK_EVENTS: lost})
    check = evaluate(["book_events"], resources)["trade_gaps_filled"]
    assert not check.passed and check.severity == ERROR
    assert check.metadata["trades_lost"].value == 30
    assert check.metadata["lost"].value[0] | {"detected_at": None, "detail": None} == {
        "exchange": "binance", "symbol": "BTC-USDT", "first_id": 101, "last_id": 130, "trades": 30,
        "detected_at": None, "detail": None}
    assert "binance BTC-USDT trade ids 101..130" in (check.description or "")


def _cache_every_pair(redis_url: str, updated_age_s: float = 0.0, skip: int = 0) -> list[str]:
    cache = PriceCache(connect(redis_url))
    pairs = [(name, symbol) for name, cfg in load_exchanges(CONFIG_FILE).enabled.items() for symbol in cfg.symbols]
    now_us = time.time_ns() // 1000
    cache.write([LatestTrade(e, s, 1.0, 1.0, "buy", "1", now_us) for e, s in pairs[skip:]], publish=False)
    cache.write_books([LatestBook(e, s, 0.9, 1.0, 1.1, 1.0, now_us) for e, s in pairs[skip:]])
    if updated_age_s:
        for e, s in pairs[skip:skip + 2]:
            cache.client.hset(f"tp:price:{e}:{s}", "updated_us", now_us - int(updated_age_s * 1e6))
    return [f"{e}:{s}" for e, s in pairs]


def test_cache_checks_pass_when_every_pair_is_cached_and_fresh(resources: dict, redis_url: str) -> None:
    _cache_every_pair(redis_url)
    checks = evaluate(["market_trades", "orderbook_snapshots", "latest_prices"], resources)
    assert checks["coverage"].passed and checks["staleness"].passed


def test_a_pair_missing_from_the_cache_warns_coverage(resources: dict, redis_url: str) -> None:
    pairs = _cache_every_pair(redis_url, skip=1)
    check = evaluate(["market_trades", "orderbook_snapshots", "latest_prices"], resources)["coverage"]
    assert not check.passed and check.severity == WARN
    assert check.metadata["missing"].value == [pairs[0]]


def test_an_old_cached_price_warns_staleness_with_the_limit(resources: dict, redis_url: str) -> None:
    pairs = _cache_every_pair(redis_url, updated_age_s=600)
    check = evaluate(["market_trades", "orderbook_snapshots", "latest_prices"], resources)["staleness"]
    assert not check.passed and check.severity == WARN
    assert set(check.metadata["stale"].value) == set(pairs[:2]) and check.metadata["limit_s"].value == 60.0


def _run_raw_checks(resources: dict) -> dict[str, dg.AssetCheckEvaluation]:
    job = dg.define_asset_job("raw_checks", selection=dg.AssetSelection.checks(*RAW_ASSET_CHECKS))
    defs = dg.Definitions(assets=LAKE_SPECS, asset_checks=RAW_ASSET_CHECKS, jobs=[job], resources=resources)
    # Per exchange, as the ingestion runs report them; a failing blocking ERROR check fails the run.
    result = defs.resolve_job_def("raw_checks").execute_in_process(tags={"dagster/partition": "binance"},
                                                                   raise_on_error=False)
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e for e in result.get_asset_check_evaluations()}


def test_raw_checks_launched_by_hand_pass_on_the_lake_as_written(lake: LocalObjectStore, resources: dict) -> None:
    write_batch(lake, "binance", "binance-1", {MARKET_TRADES: now_trades(1)})
    checks = _run_raw_checks(resources)
    assert {k for k, e in checks.items() if not e.passed} == set()
    assert set(checks) >= {"raw_trades:lake_schema", "raw_trades:valid_rows", "raw_trades:quarantine_share",
                           "raw_orderbook:lake_schema", "raw_book_events:valid_rows", "raw_quarantine:lake_schema"}


def test_raw_checks_launched_by_hand_fail_on_a_foreign_file(lake: LocalObjectStore, resources: dict) -> None:
    rows = now_trades(1).rename_columns(["exchange", "symbol", "native_symbol", "trade_id", "price", "qty",
                                         "side", "timestamp", "received_at"])
    key = MARKET_TRADES.lake_key("binance-9", "binance", datetime.now(UTC).date(), "BTC-USDT")
    lake.put(key, to_parquet_bytes(rows))
    checks = _run_raw_checks(resources)
    schema = checks["raw_trades:lake_schema"]
    assert not schema.passed and schema.severity == ERROR
    assert "missing column quantity" in schema.metadata["problems"].value[key]


def test_raw_checks_launched_by_hand_fail_on_invalid_rows_naming_the_rule(lake: LocalObjectStore,
                                                                          resources: dict) -> None:
    put_file(lake, MARKET_TRADES, "binance-9", now_trades(1, price=[1.0, -5.0, 1.0]))
    checks = _run_raw_checks(resources)
    valid = checks["raw_trades:valid_rows"]
    assert not valid.passed and valid.severity == ERROR and valid.blocking
    assert valid.metadata["invalid_rows"].value == 1
    assert valid.metadata["failed_by_rule"].value["positive_price"] == 1
    assert valid.metadata["by_exchange_symbol"].value == {"binance:BTC-USDT": 1}
    assert checks["raw_trades:lake_schema"].passed


def test_a_batch_mostly_quarantined_warns_quarantine_share_when_launched_by_hand(lake: LocalObjectStore,
                                                                                 resources: dict) -> None:
    quarantined = pa.Table.from_pydict(
        {"exchange": ["binance"] * 4, "received_at": [datetime.now(UTC)] * 4, "reason": ["malformed_json"] * 4,
         "detail": ["x"] * 4, "raw": ["{"] * 4},
        schema=pa.schema([f for f in QUARANTINE.arrow_schema if f.name != "batch_id"]))
    write_batch(lake, "binance", "binance-1", {MARKET_TRADES: now_trades(1), QUARANTINE: quarantined})
    share = _run_raw_checks(resources)["raw_trades:quarantine_share"]
    assert not share.passed and share.severity == WARN and not share.blocking


@pytest.fixture
def replay(exchanges_config: ExchangesFile) -> Iterator[ReplayServer]:
    with running_replay_server(exchanges_config, rate_per_symbol=20.0, seed=11) as server:
        yield server


@pytest.mark.slow  # an ingestion run through Dagster: ~6 s: make test runs it, make test-fast does not
def test_an_ingestion_run_reports_the_lake_checks_of_every_batch_against_its_materialization(
        tmp_path: Path, replay: ReplayServer, redis_url: str) -> None:
    settings = Settings(state_dir=tmp_path / "state", exchanges_file=CONFIG_FILE, replay_port=replay.port,
                        redis_url=redis_url, batch_max_age_s=1.0)
    job = build_definitions(settings).resolve_job_def("ingest_binance")
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance, run_config={"ops": {"ingest_binance_feed": {"config": {"run_window_s": 4.0}}}})
        assert result.success
        materializations = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_trades"), asset_partitions=["binance"]), limit=100).records
        evaluations = [e for e in result.get_asset_check_evaluations() if e.asset_key == dg.AssetKey("raw_trades")]
    assert len(materializations) >= 2
    by_target: dict[int, set[str]] = {}
    for evaluation in evaluations:
        assert evaluation.passed, (evaluation.check_name, evaluation.description)
        target = evaluation.target_materialization_data
        assert target is not None and target.run_id == result.run_id and evaluation.partition == "binance"
        by_target.setdefault(target.storage_id, set()).add(evaluation.check_name)
    # Each batch's materialization has its own three checks: the UI shows them against the latest one.
    assert by_target == {m.storage_id: {"lake_schema", "valid_rows", "quarantine_share"} for m in materializations}
    blocking = {e.check_name for e in evaluations if e.blocking}
    assert blocking == {"lake_schema", "valid_rows"}
