"""Fault injection with exact accounting: the replay server's ledger of every trade it sent against the
trade ids in the lake and in ClickHouse, after each fault. Figures go to .tp_state/fault_report.json.

These run the ingestion runner and the loads against real servers (replay feed, moto S3, the chdb
ClickHouse HTTP server, Valkey) and break those servers for real: stop them, drop connections,
restart them empty.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from trading_platform.config import ExchangesFile
from trading_platform.exchanges.binance import Binance
from trading_platform.ingestion.runner import IngestionRunner, RunnerConfig
from trading_platform.replay import Fault, FaultKind, ReplayServer, running_replay_server
from trading_platform.schema import MARKET_TRADES
from trading_platform.settings import PROJECT_ROOT
from trading_platform.storage.clickhouse import ClickHouse, ensure_schema, open_clickhouse
from trading_platform.storage.lake_loader import load_new_batches
from trading_platform.storage.object_store import ObjectStore, open_object_store
from trading_platform.storage.redis_cache import EmbeddedValkey, PriceCache, connect
from trading_platform_tests.conftest import free_port
from trading_platform_tests.support import lake_trade_ids, read_dataset, replay_endpoints, wait_for

pytestmark = pytest.mark.slow

OUTAGE_S = 30.0
REPORT = PROJECT_ROOT / ".tp_state" / "fault_report.json"


def record(scenario: str, **figures: object) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    report[scenario] = figures
    REPORT.write_text(json.dumps(report, indent=2) + "\n")


@pytest.fixture
def replay(exchanges_config: ExchangesFile) -> Iterator[ReplayServer]:
    with running_replay_server(exchanges_config, rate_per_symbol=10.0, seed=21) as server:
        yield server


@pytest.fixture
def binance(exchanges_config: ExchangesFile) -> Binance:
    return Binance(exchanges_config.exchanges["binance"])


@dataclass
class Ingestion:
    runner: IngestionRunner
    stop: threading.Event
    thread: threading.Thread

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(90)
        assert not self.thread.is_alive()


def start_ingestion(tmp_path: Path, replay: ReplayServer, binance: Binance, store: ObjectStore,
                    redis_url: str | None = None) -> Ingestion:
    url = binance.connect_url(replay_endpoints(binance.config, replay.host, replay.port))
    runner = IngestionRunner(binance, url, store, RunnerConfig(
        wal_dir=tmp_path / "wal", batch_max_age_s=1.0, hot_tick_s=0.25, reconnect_initial_s=0.2, reconnect_max_s=2.0),
        price_cache=(lambda: PriceCache(connect(redis_url))) if redis_url else None)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    wait_for(lambda: runner.summary.batches >= 1, 30, "a first flushed batch")
    return Ingestion(runner, stop, thread)


def clickhouse_ids(ch: ClickHouse) -> list[tuple[str, str]]:
    rows = ch.query_arrow("SELECT native_symbol, trade_id FROM trading.market_trades").to_pylist()
    return [(r["native_symbol"], r["trade_id"]) for r in rows]


def account(scenario: str, replay: ReplayServer, store: ObjectStore, ch: ClickHouse, **extra: object) -> None:
    """Load, then the exact comparison: sent == lake == ClickHouse, no duplicates anywhere."""
    load_new_batches(store, ch, MARKET_TRADES, 1)
    sent = replay.ledger.trades("binance")
    lake = lake_trade_ids(store)
    warehouse = clickhouse_ids(ch)
    record(scenario, trades_sent=len(sent), in_lake=len(lake), in_clickhouse=len(warehouse), **extra)
    assert len(lake) == len(set(lake)), "duplicate trades in the lake"
    assert len(warehouse) == len(set(warehouse)), "duplicate trades in ClickHouse"
    assert set(lake) == sent, f"lake differs from what was sent: {len(sent - set(lake))} missing"
    assert set(warehouse) == sent


@pytest.fixture
def local_lake(tmp_path: Path) -> ObjectStore:
    return open_object_store((tmp_path / "lake").as_uri())


@pytest.fixture
def chdb(tmp_path: Path) -> Iterator[ClickHouse]:
    with open_clickhouse(f"chdb://{tmp_path / 'chdb'}") as ch:
        ensure_schema(ch)
        yield ch


def test_bad_frames_mixed_into_the_stream(tmp_path: Path, replay: ReplayServer, binance: Binance,
                                          local_lake: ObjectStore, chdb: ClickHouse) -> None:
    ingestion = start_ingestion(tmp_path, replay, binance, local_lake)
    for round_ in range(5):
        replay.inject(Fault(FaultKind.MALFORMED_JSON, exchange="binance", count=3))
        replay.inject(Fault(FaultKind.WRONG_TYPE, exchange="binance",
                            variant="trade_id_string" if round_ % 2 else "price_object"))
        replay.inject(Fault(FaultKind.UNKNOWN_SYMBOL, exchange="binance"))
        replay.inject(Fault(FaultKind.OVERSIZED, exchange="binance"))
        time.sleep(0.5)
    time.sleep(1)
    ingestion.finish()
    assert ingestion.runner.summary.quarantined == 30
    reasons = read_dataset(local_lake, "quarantine").column("reason").to_pylist()
    assert sorted(set(reasons)) == ["malformed_json", "oversized", "unknown_symbol", "wrong_type"]
    account("bad frames (truncated JSON, wrong types, unknown symbol, 2 MiB oversized) x30", replay, local_lake,
            chdb, quarantined=ingestion.runner.summary.quarantined)


def test_object_store_unreachable(tmp_path: Path, replay: ReplayServer, binance: Binance, chdb: ClickHouse,
                                  s3_endpoint: str) -> None:
    del s3_endpoint  # its fixture sets the AWS test credentials this scenario's own S3 server needs
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    import boto3

    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="lake")
    store = open_object_store("s3://lake/raw-data", endpoint)
    ingestion = start_ingestion(tmp_path, replay, binance, store)
    # moto keeps its buckets in this process, so a restart on the same port brings the same data back.
    server.stop()
    time.sleep(OUTAGE_S)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_for(lambda: not ingestion.runner.wal.checkpoint.pending, 60, "the backlog to flush")
    errors = len(ingestion.runner.summary.errors)
    ingestion.finish()
    try:
        assert errors > 0, "the outage was not noticed"
        account(f"object store unreachable {OUTAGE_S:.0f}s", replay, store, chdb, flush_retries=errors)
    finally:
        server.stop()


def test_clickhouse_unreachable(tmp_path: Path, replay: ReplayServer, binance: Binance,
                                local_lake: ObjectStore) -> None:
    port = free_port()
    folder = tmp_path / "ch-server"

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen([sys.executable, "-m", "trading_platform.storage.clickhouse_http", str(folder),
                                    "--port", str(port), "--exit-on-stdin-eof"], stdin=subprocess.PIPE,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=PROJECT_ROOT)
        wait_for(lambda: _answers(port), 30, "the ClickHouse server")
        return process

    server = start()
    url = f"http://127.0.0.1:{port}"
    ingestion = start_ingestion(tmp_path, replay, binance, local_lake)
    with open_clickhouse(url) as ch:
        ensure_schema(ch)
        load_new_batches(local_lake, ch, MARKET_TRADES, 1)
    server.kill()
    server.wait()
    failures = 0
    deadline = time.monotonic() + OUTAGE_S
    while time.monotonic() < deadline:  # the load cadence keeps trying; each attempt fails clearly
        try:
            with open_clickhouse(url) as ch:
                load_new_batches(local_lake, ch, MARKET_TRADES, 1)
        except Exception as error:
            failures += 1
            assert url in str(error) or "Connection" in str(error) or "refused" in str(error)
        time.sleep(5)
    server = start()
    ingestion.finish()
    try:
        with open_clickhouse(url) as ch:
            account(f"ClickHouse unreachable {OUTAGE_S:.0f}s", replay, local_lake, ch, failed_load_attempts=failures)
    finally:
        server.kill()
    assert failures >= 3


def _answers(port: int) -> bool:
    import urllib.request

    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1).read()
        return True
    except OSError:
        return False


def test_redis_unreachable_then_restarted_empty(tmp_path: Path, replay: ReplayServer, binance: Binance,
                                                local_lake: ObjectStore, chdb: ClickHouse) -> None:
    valkey = EmbeddedValkey(free_port(), tmp_path / "valkey")
    valkey.start()
    ingestion = start_ingestion(tmp_path, replay, binance, local_lake, valkey.url)
    wait_for(lambda: len(PriceCache(connect(valkey.url)).read_all()) == 20, 20, "a full cache")
    valkey.stop()
    time.sleep(OUTAGE_S)
    assert ingestion.runner._hot_cache_errors > 0
    restarted = time.monotonic()
    valkey.start()  # empty: Valkey keeps nothing on disk here
    wait_for(lambda: len(PriceCache(connect(valkey.url)).read_all()) == 20, 60, "the cache to be complete again")
    refill_s = round(time.monotonic() - restarted, 2)
    ingestion.finish()
    try:
        cached = {e["symbol"]: e for e in PriceCache(connect(valkey.url)).read_all()}
        for symbol in binance.symbols:
            native = binance.native_symbol(symbol)
            assert cached[symbol]["trade_id"] == str(replay.ledger.ranges("binance", native)[-1][1])
        account(f"Redis unreachable {OUTAGE_S:.0f}s, then restarted empty", replay, local_lake, chdb,
                cache_complete_after_restart_s=refill_s)
    finally:
        valkey.stop()


def test_disconnect_storm(tmp_path: Path, replay: ReplayServer, binance: Binance, local_lake: ObjectStore,
                          chdb: ClickHouse) -> None:
    ingestion = start_ingestion(tmp_path, replay, binance, local_lake)
    deadline = time.monotonic() + 60
    drops = 0
    while time.monotonic() < deadline:
        time.sleep(3)
        replay.inject(Fault(FaultKind.DROP_CONNECTIONS, exchange="binance"))
        drops += 1
    wait_for(lambda: ingestion.runner._session is not None and ingestion.runner._session.stats.connected, 30,
             "a final reconnect")
    time.sleep(2)
    ingestion.finish()
    connects = ingestion.runner.summary.connects
    lake = lake_trade_ids(local_lake)
    sent = replay.ledger.trades("binance")
    assert connects >= drops
    account("disconnect storm (60 s, a drop every 3 s)", replay, local_lake, chdb, drops=drops,
            reconnects=connects - 1, trades_backfilled=ingestion.runner.exchange.counters["trades_backfilled"])
    del lake, sent


def test_the_same_load_twice_at_once_and_after_a_half_done_load(tmp_path: Path, replay: ReplayServer,
                                                                 binance: Binance, local_lake: ObjectStore,
                                                                 chdb_http_server: object) -> None:
    url = chdb_http_server.url  # type: ignore[attr-defined]
    with open_clickhouse(url) as ch:
        ch.command("DROP DATABASE IF EXISTS trading SYNC")
        ensure_schema(ch)
    ingestion = start_ingestion(tmp_path, replay, binance, local_lake)
    time.sleep(4)
    ingestion.finish()
    # a load that died half-way: some files inserted, no manifest rows
    from trading_platform.storage.lake_loader import lake_days, list_lake_keys, read_parquet

    keys = list_lake_keys(local_lake, MARKET_TRADES, lake_days(1))
    with open_clickhouse(url) as ch:
        for key in keys[: len(keys) // 2]:
            ch.insert_arrow(MARKET_TRADES.qualified_name, read_parquet(local_lake, key, MARKET_TRADES)[0],
                            dedup_token=key)
    errors: list[BaseException] = []

    def load() -> None:
        try:
            with open_clickhouse(url) as ch:
                load_new_batches(local_lake, ch, MARKET_TRADES, 1)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    with open_clickhouse(url) as ch:
        account("load retried after dying half-way, then run twice concurrently", replay, local_lake, ch,
                files=len(keys), preloaded_files=len(keys) // 2)

