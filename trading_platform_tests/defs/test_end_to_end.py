"""End to end, as a user runs it: `dagster dev` with the replay feed, driven through the webserver's
GraphQL API. The supervisor sensor starts the ingestion run, the UI's terminate drains it, the load
automation fills ClickHouse, and the lake, ClickHouse and Redis agree with what the exchange sent.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
import redis
from dagster_graphql import DagsterGraphQLClient

from trading_platform.config import ExchangesFile
from trading_platform.replay import ReplayServer, running_replay_server
from trading_platform.settings import PROJECT_ROOT
from trading_platform.storage.clickhouse import open_clickhouse
from trading_platform.storage.object_store import LocalObjectStore
from trading_platform.storage.redis_cache import PriceCache, connect
from trading_platform_tests.conftest import free_port
from trading_platform_tests.support import lake_trade_ids, read_dataset, wait_for

pytestmark = pytest.mark.slow

SENSOR_QUERY = """
query Sensor($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) { __typename ... on Sensor { id sensorState { status } } }
}"""
STOP_SENSOR = """mutation Stop($id: String!) { stopSensor(id: $id) { __typename } }"""
START_SENSOR = """
mutation Start($selector: SensorSelector!) { startSensor(sensorSelector: $selector) { __typename } }"""
SUPERVISOR = {"repositoryLocationName": "trading_platform", "repositoryName": "__repository__",
              "sensorName": "supervise_binance"}
RUNS_QUERY = """
query Runs($job: String!) {
  runsOrError(filter: {pipelineName: $job}) { ... on Runs { results { runId status tags { key value } } } }
}"""


@dataclass
class Platform:
    client: DagsterGraphQLClient
    replay: ReplayServer
    state_dir: Path
    dagster_home: Path
    redis_url: str
    log: Path

    @property
    def clickhouse_url(self) -> str:
        return f"chdb://{self.state_dir / 'chdb'}"

    def graphql(self, query: str, **variables: object) -> dict:
        return self.client._execute(query, variables)  # the public client has no sensor calls

    def runs(self, job: str) -> list[dict]:
        return self.graphql(RUNS_QUERY, job=job)["runsOrError"]["results"]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, exchanges_config: ExchangesFile,
             redis_server: str) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("platform")
    redis.Redis.from_url(redis_server).flushdb()
    home = root / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    with running_replay_server(exchanges_config, rate_per_symbol=10.0, seed=5) as replay:
        port = free_port()
        env = dict(os.environ, DAGSTER_HOME=str(home), TP_STATE_DIR=str(root / "state"),
                   TP_REPLAY_PORT=str(replay.port), TP_REDIS_URL=redis_server, TP_BATCH_MAX_AGE_S="2",
                   TP_HOT_TICK_S="0.5", TP_HEARTBEAT_S="2", TP_SUPERVISOR_DEAD_AFTER_S="12")
        log = root / "dagster.log"
        with log.open("w") as output:
            process = subprocess.Popen(
                [str(Path(sys.executable).parent / "dagster"), "dev", "-w", "workspace.yaml",
                 "-h", "127.0.0.1", "-p", str(port)],
                cwd=PROJECT_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            )
        client = DagsterGraphQLClient("127.0.0.1", port_number=port, timeout=30)
        platform = Platform(client, replay, root / "state", home, redis_server, log)

        def webserver_up() -> bool:
            try:
                platform.runs("ingest_binance")
                return True
            except Exception:
                return process.poll() is not None  # fail fast below if dagster dev died
        try:
            wait_for(webserver_up, 120, "the Dagster webserver", interval_s=1)
            assert process.poll() is None, log.read_text()[-5000:]
            yield platform
        finally:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _lake_rows(state_dir: Path) -> int:
    store = LocalObjectStore(state_dir / "lake")
    return sum(pq.read_metadata(io.BytesIO(store.get(k))).num_rows
               for k in store.list_keys("raw/trades/") if k.endswith(".parquet"))


def _clickhouse_rows(url: str) -> int:
    with open_clickhouse(url, lock_timeout_s=60) as ch:
        try:
            return int(ch.query_arrow("SELECT count() AS n FROM trading.market_trades").column("n")[0].as_py())
        except Exception:
            return -1  # not created yet


def _latest_check(home: Path, asset: str, check: str) -> dg.AssetCheckEvaluation | None:
    """The newest finished evaluation of a check (a planned, still running one is skipped)."""
    instance = dg.DagsterInstance.from_config(str(home))
    records = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey(asset), check), limit=5)
    for record in records:
        event = record.event.dagster_event if record.event else None
        data = event.event_specific_data if event else None
        if isinstance(data, dg.AssetCheckEvaluation):
            return data
    return None


EXCHANGES = ("binance", "coinbase", "kraken")


def _supervisor(exchange: str) -> dict[str, str]:
    return {**SUPERVISOR, "sensorName": f"supervise_{exchange}"}


def test_replay_to_lake_to_clickhouse_to_redis_through_dagster(platform: Platform) -> None:
    # The supervisor sensors start one ingestion run per exchange by themselves.
    runs = {}
    for exchange in EXCHANGES:
        run = wait_for(lambda ex=exchange: next((r for r in platform.runs(f"ingest_{ex}") if r["status"] == "STARTED"),
                                                None), 120, f"the supervisor to start ingest_{exchange}", interval_s=1)
        assert {"key": "tp/relaunch_reason", "value": "first start"} in run["tags"]
        runs[exchange] = run
    lake = LocalObjectStore(platform.state_dir / "lake")
    wait_for(lambda: len({(r["exchange"], r["symbol"]) for r in read_dataset(lake, "orderbook").to_pylist()}) == 60,
             90, "book snapshots of all 60 pairs", interval_s=2)

    # Stop supervision (so nothing relaunches), then terminate as the UI's button does: it must drain.
    for exchange in EXCHANGES:
        sensor = platform.graphql(SENSOR_QUERY, selector=_supervisor(exchange))["sensorOrError"]
        assert sensor["sensorState"]["status"] == "RUNNING"
        platform.graphql(STOP_SENSOR, id=sensor["id"])
    time.sleep(1.5)  # mid-batch
    for run in runs.values():
        platform.client.terminate_run(run["runId"])
    for run in runs.values():
        status = wait_for(lambda r=run: (st := platform.client.get_run_status(r["runId"])).value in
                          ("SUCCESS", "FAILURE", "CANCELED") and st, 60, "the terminated runs to end", interval_s=1)
        assert status in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.SUCCESS)

    # Every trade the exchanges sent is in the lake exactly once.
    sent = set().union(*(platform.replay.ledger.trades(exchange) for exchange in EXCHANGES))
    ids = lake_trade_ids(lake)
    assert len(ids) == len(set(ids))
    assert set(ids) == sent

    # The load automation (no clicks) brings ClickHouse to the same rows.
    lake_rows = len(ids)
    wait_for(lambda: _clickhouse_rows(platform.clickhouse_url) == lake_rows, 180,
             f"ClickHouse to hold the lake's {lake_rows} rows", interval_s=3)
    with open_clickhouse(platform.clickhouse_url, lock_timeout_s=60) as ch:
        per_pair = ch.query_arrow("SELECT exchange, native_symbol, count() AS n, uniqExact(trade_id) AS u "
                                  "FROM trading.market_trades GROUP BY exchange, native_symbol").to_pylist()
    wait_for(lambda: _books_loaded(platform.clickhouse_url) == 60, 120, "books of all 60 pairs in ClickHouse",
             interval_s=3)
    assert len(per_pair) == 60
    expected = {(ex, symbol): n for ex in EXCHANGES for symbol, n in platform.replay.ledger.counts(ex).items()}
    assert {(r["exchange"], r["native_symbol"]): r["n"] for r in per_pair} == expected
    assert all(r["n"] == r["u"] for r in per_pair)
    with open_clickhouse(platform.clickhouse_url, lock_timeout_s=60) as ch:
        touch = ch.query_arrow(
            "SELECT exchange, symbol, argMax(bids[1].1, timestamp) AS bid, argMax(asks[1].1, timestamp) AS ask, "
            "ask - bid AS spread, (ask + bid) / 2 AS mid FROM trading.orderbook_snapshots "
            "GROUP BY exchange, symbol").to_pylist()
    assert len(touch) == 60 and all(r["spread"] > 0 and r["bid"] < r["mid"] < r["ask"] for r in touch)

    # Redis holds the last trade and the top of book of each pair.
    cached = {(e["exchange"], e["symbol"]): e for e in PriceCache(connect(platform.redis_url)).read_all()}
    assert len(cached) == 60
    assert all("best_bid" in e and "best_ask" in e and "price" in e for e in cached.values())
    binance = {symbol.replace("-", ""): e for (ex, symbol), e in cached.items() if ex == "binance"}
    for native, entry in binance.items():
        assert entry["trade_id"] == str(platform.replay.ledger.ranges("binance", native)[-1][1])

    # The checks users read in the UI passed on the loaded data.
    def reconciled() -> bool:
        evaluation = _latest_check(platform.dagster_home, "market_trades", "lake_reconciliation")
        return bool(evaluation and evaluation.passed
                    and evaluation.metadata["table_rows"].value == lake_rows)
    wait_for(reconciled, 120, "a passing lake_reconciliation check over all rows", interval_s=3)
    for asset, check in (("market_trades", "no_duplicate_trades"), ("orderbook_snapshots", "no_crossed_books")):
        evaluation = _latest_check(platform.dagster_home, asset, check)
        assert evaluation is not None and evaluation.passed, (asset, check)
    coverage = wait_for(lambda: _latest_check(platform.dagster_home, "latest_prices", "coverage"), 120,
                        "the latest_prices coverage check", interval_s=3)
    assert coverage.passed


def _books_loaded(url: str) -> int:
    with open_clickhouse(url, lock_timeout_s=60) as ch:
        try:
            return int(ch.query_arrow("SELECT uniqExact(exchange, symbol) AS n FROM trading.orderbook_snapshots")
                       .column("n")[0].as_py())
        except Exception:
            return -1


def _run_pid(home: Path, run_id: str) -> int:
    """The process executing the run, from the run's own "Executing steps in process (pid: N)" event."""
    import re

    instance = dg.DagsterInstance.from_config(str(home))
    for entry in instance.all_logs(run_id):
        match = re.search(r"in process \(pid: (\d+)\)", entry.message or "")
        if match:
            return int(match.group(1))
    raise AssertionError(f"no pid in the logs of run {run_id}")


def test_a_killed_run_is_declared_dead_and_replaced_with_nothing_lost(platform: Platform) -> None:
    from trading_platform.ingestion.wal import WriteAheadLog

    previous = {r["runId"] for r in platform.runs("ingest_binance")}
    sent_before = {ex: platform.replay.ledger.trades(ex) for ex in ("coinbase", "kraken")}
    platform.graphql(START_SENSOR, selector=SUPERVISOR)
    victim = wait_for(lambda: next((r for r in platform.runs("ingest_binance")
                                    if r["runId"] not in previous and r["status"] == "STARTED"), None),
                      120, "the supervisor to start a run", interval_s=1)
    lake = LocalObjectStore(platform.state_dir / "lake")
    rows_before = len(lake_trade_ids(lake))
    wait_for(lambda: len(lake_trade_ids(lake)) > rows_before, 60, "the run to flush", interval_s=1)
    time.sleep(1.2)  # mid-batch
    os.kill(_run_pid(platform.dagster_home, victim["runId"]), signal.SIGKILL)

    # The supervisor notices the silence, fails the run, and starts a replacement that recovers the WAL.
    replacement = wait_for(lambda: next((r for r in platform.runs("ingest_binance")
                                         if r["runId"] not in previous | {victim["runId"]}
                                         and r["status"] == "STARTED"), None),
                           180, "a replacement run", interval_s=1)
    assert platform.client.get_run_status(victim["runId"]) == dg.DagsterRunStatus.FAILURE
    tags = {t["key"]: t["value"] for t in replacement["tags"]}
    assert victim["runId"][:8] in tags["tp/relaunch_reason"]
    time.sleep(4)
    sensor = platform.graphql(SENSOR_QUERY, selector=SUPERVISOR)["sensorOrError"]
    platform.graphql(STOP_SENSOR, id=sensor["id"])
    platform.client.terminate_run(replacement["runId"])
    wait_for(lambda: platform.client.get_run_status(replacement["runId"]).value in ("SUCCESS", "CANCELED", "FAILURE"),
             60, "the replacement to drain", interval_s=1)

    ids = [key for key in lake_trade_ids(lake) if key not in sent_before["coinbase"] | sent_before["kraken"]]
    sent = platform.replay.ledger.trades("binance")
    assert len(ids) == len(set(ids)), "the recovery duplicated trades"
    assert set(ids) <= sent
    wal = WriteAheadLog(platform.state_dir / "wal" / "binance")
    try:
        assert not wal.checkpoint.pending, "batches left unflushed"
    finally:
        wal.close()
    from trading_platform_tests.faults.test_fault_injection import record

    gaps = [e for e in read_dataset(lake, "book_events").to_pylist() if e["kind"] == "trade_gap"]
    record("kill -9 of the ingestion run mid-batch, supervised restart", trades_sent=len(sent), in_lake=len(ids),
           trade_gaps_backfilled=len(gaps))
    # Frames the killed process never read, and trades while no run was connected, came back through
    # the trade-gap backfill: exactly what the exchange sent.
    assert set(ids) == sent

