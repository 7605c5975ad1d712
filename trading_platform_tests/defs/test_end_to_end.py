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
from trading_platform_tests.support import lake_trade_ids, wait_for

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


def test_replay_to_lake_to_clickhouse_to_redis_through_dagster(platform: Platform) -> None:
    # The supervisor sensor starts the ingestion run by itself.
    run = wait_for(lambda: next((r for r in platform.runs("ingest_binance") if r["status"] == "STARTED"), None),
                   120, "the supervisor to start ingest_binance", interval_s=1)
    assert {"key": "tp/relaunch_reason", "value": "first start"} in run["tags"]
    wait_for(lambda: _lake_rows(platform.state_dir) > 0, 60, "a first lake batch", interval_s=1)

    # Stop supervision (so nothing relaunches), then terminate as the UI's button does: it must drain.
    sensor = platform.graphql(SENSOR_QUERY, selector=SUPERVISOR)["sensorOrError"]
    assert sensor["sensorState"]["status"] == "RUNNING"
    platform.graphql(STOP_SENSOR, id=sensor["id"])
    time.sleep(3)  # mid-batch
    platform.client.terminate_run(run["runId"])
    status = wait_for(lambda: (s := platform.client.get_run_status(run["runId"])).value in
                      ("SUCCESS", "FAILURE", "CANCELED") and s, 60, "the terminated run to end", interval_s=1)
    assert status == dg.DagsterRunStatus.CANCELED or status == dg.DagsterRunStatus.SUCCESS

    # Every trade the exchange sent is in the lake exactly once.
    ids = lake_trade_ids(LocalObjectStore(platform.state_dir / "lake"))
    assert len(ids) == len(set(ids))
    assert set(ids) == platform.replay.ledger.trades("binance")

    # The load automation (no clicks) brings ClickHouse to the same rows.
    lake_rows = len(ids)
    wait_for(lambda: _clickhouse_rows(platform.clickhouse_url) == lake_rows, 180,
             f"ClickHouse to hold the lake's {lake_rows} rows", interval_s=3)
    with open_clickhouse(platform.clickhouse_url, lock_timeout_s=60) as ch:
        per_symbol = ch.query_arrow("SELECT native_symbol, count() AS n, uniqExact(trade_id) AS u "
                                    "FROM trading.market_trades GROUP BY native_symbol").to_pylist()
    assert len(per_symbol) == 20
    sent = platform.replay.ledger.counts("binance")
    assert {r["native_symbol"]: r["n"] for r in per_symbol} == sent
    assert all(r["n"] == r["u"] for r in per_symbol)

    # Redis holds the last trade of each symbol.
    cached = {e["symbol"].replace("-", ""): e for e in PriceCache(connect(platform.redis_url)).read_all()}
    assert len(cached) == 20
    for native in sent:
        assert cached[native]["trade_id"] == str(platform.replay.ledger.ranges("binance", native)[-1][1])

    # The checks users read in the UI passed on the loaded data.
    def reconciled() -> bool:
        evaluation = _latest_check(platform.dagster_home, "market_trades", "lake_reconciliation")
        return bool(evaluation and evaluation.passed
                    and evaluation.metadata["table_rows"].value == lake_rows)
    wait_for(reconciled, 120, "a passing lake_reconciliation check over all rows", interval_s=3)
    duplicates = _latest_check(platform.dagster_home, "market_trades", "no_duplicate_trades")
    assert duplicates is not None and duplicates.passed
    coverage = wait_for(lambda: _latest_check(platform.dagster_home, "latest_prices", "coverage"), 120,
                        "the latest_prices coverage check", interval_s=3)
    assert coverage.passed


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

    ids = lake_trade_ids(lake)
    sent = platform.replay.ledger.trades("binance")
    assert len(ids) == len(set(ids)), "the recovery duplicated trades"
    assert set(ids) <= sent
    wal = WriteAheadLog(platform.state_dir / "wal" / "binance")
    try:
        assert not wal.checkpoint.pending, "batches left unflushed"
    finally:
        wal.close()
    # Frames the kernel had accepted for the killed process but it never read are the only loss.
    lost = len(sent - set(ids))
    from trading_platform_tests.faults.test_fault_injection import record

    record("kill -9 of the ingestion run mid-batch, supervised restart", trades_sent=len(sent), in_lake=len(ids),
           lost_in_kernel_buffer_of_killed_process=lost)
