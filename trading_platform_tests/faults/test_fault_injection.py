"""Fault injection with exact accounting, all three exchanges at once in every scenario.

Ground truth is what the market EXECUTED (the replay server's trade history, kept whether or not a client
was connected), never what it delivered: a client that misses trades while disconnected fails here. Per
(exchange, symbol, trade id) the lake and ClickHouse must hold every trade executed between "ingestion is
up" and "stop requested", exactly once, with the market's price, quantity, side and time. Figures go to
``.tp_state/fault_report.json``.

The ingestion runners, the loads and the servers are real (replay feed, moto S3, the chdb ClickHouse HTTP
server, Valkey), and the faults are real: servers stopped, connections dropped or refused, bad frames,
REST answering 429.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pytest

from trading_platform.config import ExchangesFile
from trading_platform.dev.valkey import EmbeddedValkey
from trading_platform.exchanges.registry import exchange_for
from trading_platform.ingestion.runner import IngestionRunner
from trading_platform.load.lake_to_clickhouse import load_new_batches
from trading_platform.replay import Fault, FaultKind, ReplayServer, running_replay_server
from trading_platform.schema import MARKET_TRADES
from trading_platform.settings import PROJECT_ROOT, Settings
from trading_platform.storage.clickhouse import ClickHouse, ensure_schema, open_clickhouse
from trading_platform.storage.object_store import ObjectStore, open_object_store
from trading_platform.storage.redis_cache import PriceCache, connect
from trading_platform_tests.conftest import free_port
from trading_platform_tests.support import (
    EXCHANGES,
    Crash,
    DyingLoad,
    account,
    market_history,
    market_marks,
    read_dataset,
    replay_endpoints,
    wait_for,
)

# One test worker runs this module whole, in order (see SCENARIO_MODULES in conftest.py).
pytestmark = pytest.mark.slow

OUTAGE_S = 30.0
PARTITION_S = 10.0
REPORT = PROJECT_ROOT / ".tp_state" / "fault_report.json"


def record(scenario: str, **figures: object) -> None:
    """Add one scenario's figures to the report; test workers run side by side, so under a file lock."""
    import fcntl

    REPORT.parent.mkdir(parents=True, exist_ok=True)
    with (REPORT.parent / "fault_report.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
        report[scenario] = figures
        REPORT.write_text(json.dumps(report, indent=2) + "\n")


SYMBOLS_PER_EXCHANGE = 6  # every fault path per exchange, at a quarter of the CPU of all 60 pairs
PAIRS = 3 * SYMBOLS_PER_EXCHANGE


@pytest.fixture(scope="module")
def exchanges_config(exchanges_config: ExchangesFile) -> ExchangesFile:
    """The configured exchanges with their first few symbols (the end-to-end tests run all 60 pairs)."""
    smaller = exchanges_config.model_copy(deep=True)
    for config in smaller.exchanges.values():
        config.symbols = config.symbols[:SYMBOLS_PER_EXCHANGE]
    return smaller


@pytest.fixture
def replay(exchanges_config: ExchangesFile) -> Iterator[ReplayServer]:
    with running_replay_server(exchanges_config, rate_per_symbol=10.0, seed=21) as server:
        yield server


@dataclass
class Fleet:
    """One ingestion runner per exchange, all running at once against one replay server."""

    replay: ReplayServer
    runners: dict[str, IngestionRunner]
    threads: dict[str, threading.Thread]
    stop: threading.Event
    window_start: dict[str, dict[str, int]]  # first trade id each symbol must be stored from
    window_end: dict[str, dict[str, int]] = field(default_factory=dict)

    def connected(self) -> bool:
        return all(r._session is not None and r._session.stats.connected for r in self.runners.values())

    def settle(self, seconds: float = 3.0) -> None:
        """Every feed connected again, then a few live seconds: gaps left by a fault are seen and filled."""
        wait_for(self.connected, 60, "every feed to reconnect")
        time.sleep(seconds)
        wait_for(lambda: not any(r.exchange.trade_gaps.open_gaps() for r in self.runners.values()), 60,
                 "every trade gap to be filled")

    def finish(self) -> None:
        self.window_end = {exchange: market_marks(self.replay, exchange) for exchange in self.runners}
        self.stop.set()
        for thread in self.threads.values():
            thread.join(90)
            assert not thread.is_alive()


def start_fleet(tmp_path: Path, replay: ReplayServer, exchanges_config: ExchangesFile, store: ObjectStore,
                redis_url: str | None = None, **config: float) -> Fleet:
    # 3 s batches: a few hundred lake files per minute for 60 pairs, which the loads and moto keep up with.
    values: dict = {"batch_max_age_s": 3.0, "hot_tick_s": 0.25, "reconnect_initial_s": 0.2, "reconnect_max_s": 2.0}
    values.update(config)
    stop = threading.Event()
    runners, threads = {}, {}
    for name in EXCHANGES:
        exchange = exchange_for(exchanges_config.exchanges[name])
        url = exchange.use_endpoints(replay_endpoints(exchange.config, replay.host, replay.port))
        runners[name] = IngestionRunner(
            exchange, url, store, Settings(state_dir=tmp_path, **values),
            price_cache=(lambda: PriceCache(connect(redis_url))) if redis_url else None)
        threads[name] = threading.Thread(target=runners[name].run, args=(stop,), daemon=True, name=f"ingest-{name}")
        threads[name].start()
    wait_for(lambda: all(r.summary.batches >= 1 for r in runners.values()), 60, "a first batch of every exchange")
    start = {name: {native: last + 1 for native, last in market_marks(replay, name).items()} for name in EXCHANGES}
    return Fleet(replay, runners, threads, stop, start)


def clickhouse_trades(ch: ClickHouse, exchange: str) -> pa.Table:
    return ch.query_arrow("SELECT native_symbol, trade_id, price, quantity, side, timestamp "
                          f"FROM {MARKET_TRADES.qualified_name} WHERE exchange = '{exchange}'")


def check_accounting(scenario: str, fleet: Fleet, store: ObjectStore, ch: ClickHouse | None,
                     **extra: object) -> dict[str, dict[str, object]]:
    """Load, then the exact comparison per exchange: lost 0, duplicated 0, content equal, lake and ClickHouse."""
    if ch is not None:
        load_new_batches(store, ch, MARKET_TRADES, 1)
    lake = read_dataset(store, "trades")
    events = read_dataset(store, "book_events")
    figures: dict[str, dict[str, object]] = {}
    failures = []
    for exchange in EXCHANGES:
        history = market_history(fleet.replay, exchange)
        window = {native: (first, fleet.window_end[exchange][native])
                  for native, first in fleet.window_start[exchange].items()}
        in_lake = account(history, lake.filter(pa.compute.equal(lake.column("exchange"), exchange)), window)
        in_ch = account(history, clickhouse_trades(ch, exchange), window) if ch is not None else None
        kinds = events.filter(pa.compute.equal(events.column("exchange"), exchange)).column("kind").to_pylist()
        counters = fleet.runners[exchange].exchange.counters
        figures[exchange] = {
            "executed": in_lake.executed, "in_lake": in_lake.stored,
            "in_clickhouse": in_ch.stored if in_ch is not None else None,
            "unresolved_gap_rows": kinds.count("trade_gap_unresolved"), "trade_gaps": kinds.count("trade_gap"),
            "trades_backfilled": counters["trades_backfilled"],
            "duplicates_dropped": counters["duplicate_trades_dropped"],
            "reconnects": max(fleet.runners[exchange].summary.connects - 1, 0),
        }
        for where, result in (("lake", in_lake), ("ClickHouse", in_ch)):
            if result is not None and not result.exact:
                failures.append(f"{exchange} {where}: {result.summary()} lost e.g. {result.lost[:5]} "
                                f"mismatch e.g. {result.content_mismatch[:2]}")
            if result is not None and result.executed == 0:
                failures.append(f"{exchange} {where}: the window held no trade; the scenario proved nothing")
        assert kinds.count("trade_gap_unresolved") == 0, f"{exchange}: trade gaps left unresolved"
    record(scenario, **figures, **extra)
    assert not failures, "\n".join(failures)
    return figures


@pytest.fixture
def local_lake(tmp_path: Path) -> ObjectStore:
    return open_object_store((tmp_path / "lake").as_uri())


@pytest.fixture
def chdb(tmp_path: Path) -> Iterator[ClickHouse]:
    with open_clickhouse(f"chdb://{tmp_path / 'chdb'}") as ch:
        ensure_schema(ch)
        yield ch


BAD_FRAMES = (FaultKind.MALFORMED_JSON, FaultKind.WRONG_TYPE, FaultKind.UNKNOWN_SYMBOL, FaultKind.OVERSIZED,
              FaultKind.INVALID_UTF8)


def test_bad_frames_are_quarantined_unknown_ones_ignored_and_nothing_is_lost(
        tmp_path: Path, replay: ReplayServer, exchanges_config: ExchangesFile, local_lake: ObjectStore,
        chdb: ClickHouse) -> None:
    fleet = start_fleet(tmp_path, replay, exchanges_config, local_lake)
    for round_ in range(3):
        for kind in BAD_FRAMES:
            replay.inject(Fault(kind, variant="trade_id_string" if round_ % 2 else "price_object"))
        replay.inject(Fault(FaultKind.UNKNOWN_TYPE, count=2))
        time.sleep(0.5)
    fleet.settle(2)
    fleet.finish()
    sent = replay.faults.snapshot()
    quarantine = read_dataset(local_lake, "quarantine")
    events = read_dataset(local_lake, "book_events")
    for exchange, runner in fleet.runners.items():
        bad = sum(sent[exchange].get(kind.value, 0) for kind in BAD_FRAMES)
        assert bad == 15, sent[exchange]
        reasons = quarantine.filter(pa.compute.equal(quarantine.column("exchange"), exchange)).column("reason")
        assert runner.summary.quarantined == len(reasons) == bad, (exchange, reasons.to_pylist())
        assert {"malformed_json", "oversized", "unknown_symbol", "wrong_type", "invalid_utf8"} <= set(
            reasons.to_pylist()), exchange
        assert runner.summary.ignored_frames == sent[exchange]["unknown_type"] == 6, exchange
    # A bad frame still consumed its Coinbase sequence_num: no false gap, no needless book resync.
    coinbase_kinds = events.filter(pa.compute.equal(events.column("exchange"), "coinbase")).column("kind")
    assert "sequence_gap" not in coinbase_kinds.to_pylist()
    check_accounting("bad frames x15 per exchange (truncated, wrong types, unknown symbol, oversized, not UTF-8) "
                     "and 6 unknown-type frames", fleet, local_lake, chdb)


def test_disconnect_storm(tmp_path: Path, replay: ReplayServer, exchanges_config: ExchangesFile,
                          local_lake: ObjectStore, chdb: ClickHouse) -> None:
    fleet = start_fleet(tmp_path, replay, exchanges_config, local_lake)
    drops = 0
    for _ in range(8):
        time.sleep(2)
        replay.inject(Fault(FaultKind.DROP_CONNECTIONS))
        drops += 1
    fleet.settle()
    fleet.finish()
    for exchange, runner in fleet.runners.items():
        assert runner.summary.connects > drops, exchange
    check_accounting("disconnect storm (every connection reset every 2 s, 8 times)", fleet, local_lake, chdb,
                     drops=drops)


def test_network_partition_refuses_connections_for_ten_seconds(
        tmp_path: Path, replay: ReplayServer, exchanges_config: ExchangesFile, local_lake: ObjectStore,
        chdb: ClickHouse) -> None:
    fleet = start_fleet(tmp_path, replay, exchanges_config, local_lake)
    time.sleep(1)
    replay.inject(Fault(FaultKind.REFUSE_CONNECTIONS, seconds=PARTITION_S))  # WebSocket and REST alike
    replay.inject(Fault(FaultKind.DROP_CONNECTIONS))
    time.sleep(PARTITION_S)
    fleet.settle()
    fleet.finish()
    refused = replay.faults.snapshot()
    for exchange in EXCHANGES:
        assert refused[exchange].get("refuse_connections", 0) >= 2, (exchange, refused[exchange])
    check_accounting(f"network partition {PARTITION_S:.0f} s (connections refused)", fleet, local_lake, chdb,
                     refused_connects={ex: refused[ex].get("refuse_connections", 0) for ex in EXCHANGES})


def test_rest_answering_429_with_retry_after_is_honoured(tmp_path: Path, replay: ReplayServer,
                                                         exchanges_config: ExchangesFile, local_lake: ObjectStore,
                                                         chdb: ClickHouse) -> None:
    fleet = start_fleet(tmp_path, replay, exchanges_config, local_lake)
    replay.inject(Fault(FaultKind.REST_ERROR, seconds=10, status=429))
    # Offline for longer than a Coinbase trade snapshot covers (50 trades): every exchange needs REST.
    replay.inject(Fault(FaultKind.REFUSE_CONNECTIONS, seconds=6))
    replay.inject(Fault(FaultKind.DROP_CONNECTIONS))
    time.sleep(10)
    fleet.settle()
    fleet.finish()
    answered = replay.faults.snapshot()
    for exchange, runner in fleet.runners.items():
        assert runner.summary.rest_rate_limited >= 1, exchange
        # Honouring Retry-After: each request in flight meets the 429 about once per Retry-After, instead
        # of retrying in a loop (which would be hundreds of refusals in 10 s).
        assert answered[exchange]["rest_error"] <= 3 * (len(runner.exchange.symbols) + 1), answered[exchange]
        assert runner.summary.rest_paused_s > 0
    check_accounting("REST answering 429 with Retry-After for 10 s, after a 6 s outage", fleet,
                     local_lake, chdb, answered_429={ex: answered[ex]["rest_error"] for ex in EXCHANGES})


def _answers(port: int) -> bool:
    import urllib.request

    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1).read()
        return True
    except OSError:
        return False


def test_object_store_clickhouse_and_redis_each_down_30_s(tmp_path: Path, replay: ReplayServer,
                                                           exchanges_config: ExchangesFile, s3_endpoint: str) -> None:
    """The three stores go down for the same 30 s (their paths are independent: lake flushes, loads, the hot
    cache), each is seen failing, and after they return the lake, ClickHouse and Redis are whole again."""
    del s3_endpoint  # its fixture sets the AWS test credentials this scenario's own S3 server needs
    import boto3
    from moto.server import ThreadedMotoServer

    s3_port, ch_port = free_port(), free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
    moto.start()
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3_port}").create_bucket(Bucket="lake")
    store = open_object_store("s3://lake/raw-data", f"http://127.0.0.1:{s3_port}")

    def start_clickhouse() -> subprocess.Popen[bytes]:
        process = subprocess.Popen([sys.executable, "-m", "trading_platform_tests.storage.clickhouse_http_server",
                                    str(tmp_path / "ch-server"), "--port", str(ch_port), "--exit-on-stdin-eof"],
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   cwd=PROJECT_ROOT)
        wait_for(lambda: _answers(ch_port), 30, "the ClickHouse server")
        return process

    clickhouse = start_clickhouse()
    ch_url = f"http://127.0.0.1:{ch_port}"
    valkey = EmbeddedValkey(free_port(), tmp_path / "valkey")
    valkey.start()
    try:
        fleet = start_fleet(tmp_path, replay, exchanges_config, store, valkey.url)
        with open_clickhouse(ch_url) as ch:
            ensure_schema(ch)
            load_new_batches(store, ch, MARKET_TRADES, 1)
        wait_for(lambda: len(PriceCache(connect(valkey.url)).read_all()) == PAIRS, 20, "a full cache")

        moto.stop()  # moto keeps its buckets in this process: a restart on the same port brings them back
        clickhouse.kill()
        clickhouse.wait()
        valkey.stop()
        load_failures = 0
        deadline = time.monotonic() + OUTAGE_S
        while time.monotonic() < deadline:  # the load cadence keeps trying; each attempt fails clearly
            try:
                with open_clickhouse(ch_url) as ch:
                    load_new_batches(store, ch, MARKET_TRADES, 1)
            except Exception as error:
                load_failures += 1
                assert ch_url in str(error) or "Connection" in str(error) or "refused" in str(error)
            time.sleep(5)
        flush_errors = {name: len(r.summary.errors) for name, r in fleet.runners.items()}
        cache_errors = {name: r._hot_cache_errors for name, r in fleet.runners.items()}

        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
        moto.start()
        clickhouse = start_clickhouse()
        restarted = time.monotonic()
        valkey.start()  # empty: Valkey keeps nothing on disk here
        wait_for(lambda: len(PriceCache(connect(valkey.url)).read_all()) == PAIRS, 60, "the cache to be complete again")
        refill_s = round(time.monotonic() - restarted, 2)
        wait_for(lambda: not any(r.wal.checkpoint.pending for r in fleet.runners.values()), 90, "the backlog to flush")
        fleet.finish()

        assert all(flush_errors.values()), f"the object store outage was not noticed: {flush_errors}"
        assert all(cache_errors.values()), f"the Redis outage was not noticed: {cache_errors}"
        assert load_failures >= 3
        # The cache holds each pair's newest trade in the lake.
        newest: dict[tuple[str, str], int] = {}
        for row in read_dataset(store, "trades").select(["exchange", "symbol", "trade_id"]).to_pylist():
            key = (row["exchange"], row["symbol"])
            newest[key] = max(newest.get(key, 0), int(row["trade_id"]))
        cached = {(e["exchange"], e["symbol"]): int(e["trade_id"]) for e in PriceCache(connect(valkey.url)).read_all()}
        assert cached == newest
        with open_clickhouse(ch_url) as ch:
            check_accounting(f"object store, ClickHouse and Redis down {OUTAGE_S:.0f} s (Redis back empty)", fleet,
                             store, ch, flush_retries=flush_errors, hot_cache_errors=cache_errors,
                             failed_load_attempts=load_failures, cache_complete_after_restart_s=refill_s)
    finally:
        moto.stop()
        clickhouse.kill()
        valkey.stop()


def test_the_same_load_twice_at_once_and_after_a_half_done_load(tmp_path: Path, replay: ReplayServer,
                                                                 exchanges_config: ExchangesFile,
                                                                 local_lake: ObjectStore,
                                                                 chdb_http_server: object) -> None:
    url = chdb_http_server.url  # type: ignore[attr-defined]
    with open_clickhouse(url) as ch:
        ch.command("DROP DATABASE IF EXISTS trading SYNC")
        ensure_schema(ch)
    fleet = start_fleet(tmp_path, replay, exchanges_config, local_lake)
    time.sleep(3)
    fleet.finish()
    # a load that died half-way: half the batches inserted, the last of them without their manifest rows
    from trading_platform.load.lake_files import batch_of, lake_days, list_lake_keys

    keys = list_lake_keys(local_lake, MARKET_TRADES, lake_days(1))
    batches = len({batch_of(key) for key in keys})
    with open_clickhouse(url) as ch, pytest.raises(Crash):
        load_new_batches(local_lake, DyingLoad(ch, data_inserts=batches // 2), MARKET_TRADES, 1,  # type: ignore[arg-type]
                         group_max_bytes=1)  # one batch per insert, so that it dies half-way
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
        check_accounting("load retried after dying half-way, then run twice concurrently", fleet, local_lake, ch,
                         files=len(keys), batches=batches, batches_inserted_before_dying=batches // 2)


def test_an_outage_longer_than_the_rest_history_is_an_unresolved_gap_and_an_error_check(
        tmp_path: Path, exchanges_config: ExchangesFile, local_lake: ObjectStore, redis_url: str) -> None:
    import dagster as dg

    from trading_platform.defs.resources import build_resources
    from trading_platform.defs.warehouse.assets import warehouse_load
    from trading_platform_tests.conftest import CONFIG_FILE

    # The exchanges' REST history reaches back 20 trades per symbol; the outage lasts ~80.
    with running_replay_server(exchanges_config, rate_per_symbol=10.0, seed=8, rest_history_trades=20) as replay:
        fleet = start_fleet(tmp_path, replay, exchanges_config, local_lake)
        replay.inject(Fault(FaultKind.REFUSE_CONNECTIONS, seconds=8))
        replay.inject(Fault(FaultKind.DROP_CONNECTIONS))
        time.sleep(8)
        wait_for(fleet.connected, 60, "every feed to reconnect")
        time.sleep(3)
        wait_for(lambda: not any(r.exchange.trade_gaps.open_gaps() for r in fleet.runners.values()), 60,
                 "every gap to be filled or given up")
        fleet.finish()
        history = {exchange: market_history(replay, exchange) for exchange in EXCHANGES}
    events = read_dataset(local_lake, "book_events")
    lake = read_dataset(local_lake, "trades")
    lost_ranges: dict[str, list[tuple[str, int, int]]] = {}
    for row in events.to_pylist():
        if row["kind"] == "trade_gap_unresolved":
            first, last = row["detail"].split("trade ids ")[1].split(" ")[0].split("..")
            native = exchange_for(exchanges_config.exchanges[row["exchange"]]).native_symbol(row["symbol"])
            lost_ranges.setdefault(row["exchange"], []).append((native, int(first), int(last)))
    figures = {}
    for exchange in EXCHANGES:
        ranges = lost_ranges.get(exchange, [])
        assert ranges, f"{exchange}: an 8 s outage with 20 trades of REST history left no unresolved gap"
        lost = {(native, str(i)) for native, first, last in ranges for i in range(first, last + 1)}
        window = {native: (first, fleet.window_end[exchange][native])
                  for native, first in fleet.window_start[exchange].items()}
        result = account(history[exchange], lake.filter(pa.compute.equal(lake.column("exchange"), exchange)), window)
        # Exactly the recorded ranges are missing: everything else is there, once, with its content.
        assert set(result.lost) == {k for k in lost if window[k[0]][0] <= int(k[1]) <= window[k[0]][1]}, exchange
        assert not (result.duplicated or result.not_executed or result.content_mismatch), result.summary()
        figures[exchange] = {**result.summary(), "unresolved_gap_rows": len(ranges), "trades_lost": len(lost)}
    record("outage (8 s) longer than the REST history (20 trades per symbol)", **figures)

    # Everything else still loads, and the ERROR check names the ranges.
    url = f"chdb://{tmp_path / 'chdb'}"
    resources = build_resources(Settings(state_dir=tmp_path / "state", exchanges_file=CONFIG_FILE,
                                         storage_url=local_lake.url, clickhouse_url=url, redis_url=redis_url))
    result = dg.materialize([warehouse_load], selection=["market_trades", "book_events"], resources=resources,
                            raise_on_error=False)
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["lake_reconciliation"].passed and checks["no_duplicate_trades"].passed
    gaps_check = checks["trade_gaps_filled"]
    assert not gaps_check.passed and gaps_check.severity == dg.AssetCheckSeverity.ERROR
    recorded = {(ex, first, last) for ex, ranges in lost_ranges.items() for _, first, last in ranges}
    reported = {(e["exchange"], e["first_id"], e["last_id"]) for e in gaps_check.metadata["lost"].value}
    assert gaps_check.metadata["unresolved_ranges"].value == len(recorded)
    assert reported <= recorded and len(reported) == min(len(recorded), 50)  # the metadata lists the first 50
    assert "trades lost" in (gaps_check.description or "")
