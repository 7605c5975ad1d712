"""End to end, as a user runs it: `dagster dev` with the replay feed, driven through the webserver's
GraphQL API. The supervisor sensor starts the ingestion run, the UI's terminate drains it, the load
automation fills ClickHouse, and the lake, ClickHouse and Redis agree with what the exchange sent.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import pyarrow as pa
import pyarrow.compute
import pytest
import redis
from dagster_graphql import DagsterGraphQLClient

if TYPE_CHECKING:
    from playwright.sync_api import Page

from trading_platform.config import ExchangesFile
from trading_platform.defs.warehouse.assets import CLICKHOUSE_POOL
from trading_platform.replay import ReplayServer, running_replay_server
from trading_platform.settings import PROJECT_ROOT
from trading_platform.storage.clickhouse import open_clickhouse
from trading_platform.storage.object_store import LocalObjectStore
from trading_platform.storage.redis_cache import PriceCache, connect
from trading_platform_tests.conftest import FAILED_CALL, free_port
from trading_platform_tests.support import (
    account,
    lake_trade_ids,
    market_history,
    market_marks,
    read_dataset,
    wait_for,
)

# One test worker runs this module whole, in order (see SCENARIO_MODULES in conftest.py).
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
ENDED = ("SUCCESS", "FAILURE", "CANCELED")  # a run's final statuses, as GraphQL spells them
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
    url: str = ""
    ui_up_at: float = 0.0  # when the webserver first answered

    @property
    def clickhouse_url(self) -> str:
        return f"chdb://{self.state_dir / 'chdb'}"

    @cached_property
    def instance(self) -> dg.DagsterInstance:
        """The instance ``dagster dev`` runs on, read directly (what GraphQL does not say: pools, run events)."""
        return dg.DagsterInstance.from_config(str(self.dagster_home))

    def failure_messages(self, run_id: str) -> list[str]:
        return [entry.message for entry in self.instance.all_logs(run_id)
                if entry.dagster_event is not None and entry.dagster_event.is_failure][-3:]

    def run_pids(self, run_id: str) -> set[int]:
        """The run's processes, from its own events: the run (executor parent) and its step subprocesses."""
        return {int(match.group(1)) for entry in self.instance.all_logs(run_id)
                if (match := re.search(r"process \(pid: (\d+)\)", entry.message or ""))}

    def pool_holders(self) -> set[str]:
        """The runs holding a slot of the ClickHouse pool."""
        pool = self.instance.event_log_storage.get_concurrency_info(CLICKHOUSE_POOL)
        return {slot.run_id for slot in pool.claimed_slots}

    def graphql(self, query: str, **variables: object) -> dict:
        return self.client._execute(query, variables)  # the public client has no sensor calls

    def runs(self, job: str) -> list[dict]:
        return self.graphql(RUNS_QUERY, job=job)["runsOrError"]["results"]

    def ended(self, run_id: str, timeout_s: float, what: str) -> dg.DagsterRunStatus:
        """The run's status once it has ended (succeeded, failed or canceled)."""
        return wait_for(lambda: (st := self.client.get_run_status(run_id)).value in ENDED and st, timeout_s, what,
                        interval_s=1)

    def load(self, assets: tuple[str, ...] | list[str]) -> str:
        """Materialize ``assets`` as the UI's Materialize button does; the run's id."""
        return self.client.submit_job_execution("__ASSET_JOB", asset_selection=[[a] for a in assets])

    def pause_load_automation(self, request: pytest.FixtureRequest) -> None:
        """Stop the load automation's sensor (a load already running finishes); resumed after the test."""
        automation = {**SUPERVISOR, "sensorName": "load_automation"}
        self.graphql(STOP_SENSOR, id=self.graphql(SENSOR_QUERY, selector=automation)["sensorOrError"]["id"])
        request.addfinalizer(lambda: self.graphql(START_SENSOR, selector=automation))

    def daemon_log(self) -> list[str]:
        """The lines ``dagster dev`` printed, without their colour codes."""
        return re.sub(r"\x1b\[[0-9;]*m", "", self.log.read_text()).splitlines()

    def diagnosis(self) -> str:
        """The state a failed wait needs explaining by: the newest runs, who holds or waits for the ClickHouse
        pool, and the daemon's latest warnings and errors."""
        instance = self.instance
        now = time.time()
        lines = ["runs (newest first): created s ago, status, job, id, tags"]
        for record in instance.get_run_records(limit=25):
            run = record.dagster_run
            tags = {k: v for k, v in run.tags.items() if k.startswith(("tp/", "dagster/partition"))}
            lines.append(f"  {now - record.create_timestamp.timestamp():6.0f} {run.status.value:9} {run.job_name} "
                         f"{run.run_id[:8]} {tags}")
        for key in instance.event_log_storage.get_concurrency_keys():
            info = instance.event_log_storage.get_concurrency_info(key)
            lines.append(f"pool {key}: limit {info.slot_count}, claimed by "
                         f"{[(c.run_id[:8], c.step_key) for c in info.claimed_slots]}, pending "
                         f"{[(c.run_id[:8], c.step_key) for c in info.pending_steps]}")
        daemon = [line for line in self.daemon_log()
                  if re.search(r"dagster\.daemon\.\w+ - (WARNING|ERROR)|blocked by", line)]
        lines += ["daemon warnings and errors (latest 15):", *(f"  {line[:300]}" for line in daemon[-15:])]
        return "\n".join(lines)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, exchanges_config: ExchangesFile,
             redis_server: str) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("platform")
    redis.Redis.from_url(redis_server).flushdb()
    home = root / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    # 60 pairs at 4 trades/s each: every path exercised, at a CPU cost that leaves the loads their share.
    with running_replay_server(exchanges_config, rate_per_symbol=4.0, seed=5) as replay:
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
        platform = Platform(client, replay, root / "state", home, redis_server, log, f"http://127.0.0.1:{port}")

        def webserver_up() -> bool:
            try:
                platform.runs("ingest_binance")
                return True
            except Exception:
                return process.poll() is not None  # fail fast below if dagster dev died
        try:
            wait_for(webserver_up, 120, "the Dagster webserver", interval_s=1)
            platform.ui_up_at = time.monotonic()
            assert process.poll() is None, log.read_text()[-5000:]
            yield platform
        finally:
            if "instance" in vars(platform):  # opened by a test (cached_property)
                platform.instance.dispose()
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(autouse=True)
def explain_a_failure(platform: Platform, request: pytest.FixtureRequest) -> Iterator[None]:
    """A failed test here prints what the platform was doing, for a failure on a host nobody can look at."""
    yield
    if request.node.stash.get(FAILED_CALL, False):
        print(platform.diagnosis(), file=sys.stderr)


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


CHECKS_QUERY = """
query Checks($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) { assetKey { path } assetChecksOrError { ... on AssetChecks { checks {
    name executionForLatestMaterialization { status } } } } }
}"""
UI_ASSETS = ("raw_trades", "market_trades", "latest_prices")
LOADED_ASSETS = ("market_trades", "orderbook_snapshots", "book_events", "quarantine", "latest_prices")
CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
# Headless on a closed network: no sandbox as root, no GPU, and none of Chromium's own background traffic.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "ui"


def _settled(page: Page) -> None:
    """Before a screenshot: the graph's live data has arrived (no node still says Loading...)."""
    page.wait_for_function("() => !document.body.innerText.includes('Loading...')", timeout=20_000)


def _check_status(platform: Platform, assets: tuple[str, ...]) -> dict[str, str | None]:
    """What the UI shows per check: the status of its execution for the asset's latest materialization."""
    nodes = platform.graphql(CHECKS_QUERY, keys=[{"path": [a]} for a in assets])["assetNodes"]
    return {f"{n['assetKey']['path'][0]}:{c['name']}": (c["executionForLatestMaterialization"] or {}).get("status")
            for n in nodes for c in n["assetChecksOrError"]["checks"]}


# Its own waits (checks passing within 3 min, then up to 90 s per asset's checks tab) are its budget, not the suite's
# 300 s default, which a slow host passes before the last tab is read.
@pytest.mark.timeout(600)
def test_the_ui_shows_the_lineage_and_every_check_passing(platform: Platform, request: pytest.FixtureRequest) -> None:
    """Within 3 minutes of the UI answering, every check of the lake, warehouse and cache assets users look at
    has passed on the asset's latest materialization, as the browser shows it. Screenshots: test-artifacts/ui."""
    # make test installs Debian's chromium (as root, with apt); without it this test fails and says so.
    assert CHROMIUM.exists(), f"no Chromium at {CHROMIUM}: install Debian's chromium package (apt-get install chromium)"
    from playwright.sync_api import sync_playwright

    budget_s = 180 - (time.monotonic() - platform.ui_up_at)
    # Each check must show a passing execution for its asset's latest materialization; a load that starts
    # meanwhile shows its checks as running again (about 10-30 s a minute), so each check counts once seen.
    seen: dict[str, str | None] = {}
    passed: set[str] = set()

    def all_passed() -> dict[str, str | None] | None:
        seen.update(_check_status(platform, UI_ASSETS))
        passed.update(k for k, v in seen.items() if v == "SUCCEEDED")
        return dict(seen) if seen and passed == set(seen) else None
    try:
        status = wait_for(all_passed, budget_s, "every check passing on the latest materialization", interval_s=2)
    except AssertionError as error:
        raise AssertionError(f"{error}; never seen passing: {sorted(set(seen) - passed)}; last: {seen}") from None
    assert {key.split(":")[0] for key in status} == set(UI_ASSETS) and len(status) == 7, status

    # The browser must see the latest materialization's checks as they ended: with the load automation running, a
    # new load each minute shows them as running again, and on a slow host loads fill most of every minute. It is
    # paused while the pages are read (a load already running finishes), and resumed for the tests after this one.
    platform.pause_load_automation(request)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"{platform.url}/asset-groups")
            for group in ("lake", "warehouse", "cache"):
                page.get_by_text(group, exact=True).first.wait_for(timeout=30_000)
            assert "join the dagster community" not in page.inner_text("body").lower()
            _settled(page)
            page.screenshot(path=ARTIFACTS / "asset-groups.png")
            page.goto(f"{platform.url}/assets/market_trades?view=lineage")
            for neighbour in ("raw_trades", "latest_prices"):
                page.get_by_text(neighbour, exact=True).first.wait_for(timeout=30_000)
            _settled(page)
            page.screenshot(path=ARTIFACTS / "market_trades-lineage.png")
            for asset in UI_ASSETS:
                page.goto(f"{platform.url}/assets/{asset}?view=checks")
                checks = [key.split(":")[1] for key in status if key.startswith(f"{asset}:")]

                shown: set[str] = set()

                def all_shown_passing(names: list[str] = checks, url: str = page.url, shown: set[str] = shown) -> bool:
                    page.goto(url)  # a fresh page each time: the list does not always follow a new run
                    page.get_by_text(names[0], exact=True).first.wait_for(timeout=30_000)
                    page.wait_for_timeout(1500)
                    text = page.inner_text("body")
                    shown.update(n for n in names if re.search(rf"{n}\s+{n}\s+Succeeded", text))
                    return shown == set(names)
                # A load still running when the automation was paused shows its checks as running meanwhile.
                wait_for(all_shown_passing, 90, f"the {asset} checks tab to show {checks} succeeded", interval_s=2)
                page.screenshot(path=ARTIFACTS / f"{asset}-checks.png")
        finally:
            browser.close()
    # The daemon (automation ticks, sensors) logged no error meanwhile.
    daemon_errors = [line for line in platform.daemon_log() if re.search(r"dagster\.daemon\.\w+ - ERROR", line)]
    assert not daemon_errors, daemon_errors[:5]


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
    window_start = {ex: {n: last + 1 for n, last in market_marks(platform.replay, ex).items()} for ex in EXCHANGES}

    # Stop supervision (so nothing relaunches), then terminate as the UI's button does: it must drain.
    for exchange in EXCHANGES:
        sensor = platform.graphql(SENSOR_QUERY, selector=_supervisor(exchange))["sensorOrError"]
        assert sensor["sensorState"]["status"] == "RUNNING"
        platform.graphql(STOP_SENSOR, id=sensor["id"])
    time.sleep(1.5)  # mid-batch
    window_end = {ex: market_marks(platform.replay, ex) for ex in EXCHANGES}
    for run in runs.values():
        platform.client.terminate_run(run["runId"])
    for run in runs.values():
        status = platform.ended(run["runId"], 60, "the terminated runs to end")
        assert status in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.SUCCESS)

    # Every trade the markets executed meanwhile is in the lake and in ClickHouse, exactly once, with its
    # content.
    lake_rows = len(lake_trade_ids(lake))
    _account_lake_and_clickhouse(platform, window_start, window_end)
    with open_clickhouse(platform.clickhouse_url, lock_timeout_s=60) as ch:
        per_pair = ch.query_arrow("SELECT exchange, native_symbol, count() AS n, uniqExact(trade_id) AS u "
                                  "FROM trading.market_trades GROUP BY exchange, native_symbol").to_pylist()
    wait_for(lambda: _books_loaded(platform.clickhouse_url) == 60, 120, "books of all 60 pairs in ClickHouse",
             interval_s=3)
    assert len(per_pair) == 60
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
    newest: dict[tuple[str, str], int] = {}
    for row in read_dataset(lake, "trades").select(["exchange", "symbol", "trade_id"]).to_pylist():
        key = (row["exchange"], row["symbol"])
        newest[key] = max(newest.get(key, 0), int(row["trade_id"]))
    assert {key: int(entry["trade_id"]) for key, entry in cached.items()} == newest

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

    # The automation recomputes today's candles after the loads, and they sum to the day's trades.
    today = datetime.now(UTC).date().isoformat()

    def todays_candles() -> dg.AssetCheckEvaluation | None:
        evaluation = _latest_check(platform.dagster_home, "candles_1m", "candles_reconcile_with_trades")
        return evaluation if evaluation and today in evaluation.metadata["days"].value else None
    candles = wait_for(todays_candles, 150, "today's candles", interval_s=3)
    assert candles.passed, candles.metadata["mismatches"]


def _account_lake_and_clickhouse(platform: Platform, window_start: dict[str, dict[str, int]],
                                 window_end: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Load, then per exchange: every trade the market executed in the window is in the lake and in ClickHouse
    exactly once with its price, quantity, side and time; nothing stored that never happened.

    The warehouse and cache are materialized as the UI's Materialize button does, instead of waiting up to a
    minute for the load automation's next tick (the UI test shows the automation's loads: their checks pass
    on every latest materialization). The ingestion runs have ended, so that load sees the whole lake."""
    lake = LocalObjectStore(platform.state_dir / "lake")
    trades = read_dataset(lake, "trades")
    load = platform.load(LOADED_ASSETS)
    # It may queue behind an automation load for the ClickHouse pool: its end, not a count, is waited for.
    status = platform.ended(load, 300, f"the load run {load[:8]} to end")
    assert status == dg.DagsterRunStatus.SUCCESS, (status, platform.failure_messages(load))
    assert _clickhouse_rows(platform.clickhouse_url) == trades.num_rows
    events = read_dataset(lake, "book_events")
    figures = {}
    with open_clickhouse(platform.clickhouse_url, lock_timeout_s=60) as ch:
        for exchange in EXCHANGES:
            history = market_history(platform.replay, exchange)
            window = {n: (first, window_end[exchange][n]) for n, first in window_start[exchange].items()}
            mine = trades.filter(pa.compute.equal(trades.column("exchange"), exchange))
            stored = ch.query_arrow("SELECT native_symbol, trade_id, price, quantity, side, timestamp "
                                    f"FROM trading.market_trades WHERE exchange = '{exchange}'")
            in_lake, in_ch = account(history, mine, window), account(history, stored, window)
            kinds = events.filter(pa.compute.equal(events.column("exchange"), exchange)).column("kind").to_pylist()
            figures[exchange] = {"executed": in_lake.executed, "in_lake": in_lake.stored,
                                 "in_clickhouse": in_ch.stored, "trade_gaps": kinds.count("trade_gap"),
                                 "unresolved_gap_rows": kinds.count("trade_gap_unresolved")}
            assert in_lake.exact, (exchange, in_lake.summary(), in_lake.lost[:5], in_lake.content_mismatch[:2])
            assert in_ch.exact, (exchange, in_ch.summary(), in_ch.lost[:5])
            assert in_lake.executed > 0
    return figures


def _books_loaded(url: str) -> int:
    with open_clickhouse(url, lock_timeout_s=60) as ch:
        try:
            return int(ch.query_arrow("SELECT uniqExact(exchange, symbol) AS n FROM trading.orderbook_snapshots")
                       .column("n")[0].as_py())
        except Exception:
            return -1


# Its own waits (the supervised starts, the flush, three replacements) add up past the suite's 300 s default on a
# slow host: the waits, not the test-wide timeout, decide what is too slow.
@pytest.mark.timeout(600)
def test_killed_runs_are_declared_dead_and_replaced_with_nothing_lost(platform: Platform) -> None:
    """kill -9 of all three ingestion processes mid-batch; the supervisors replace them; the lake and
    ClickHouse then hold every trade the markets executed meanwhile, exactly once, content included."""
    from trading_platform.ingestion.wal import WriteAheadLog

    previous = {ex: {r["runId"] for r in platform.runs(f"ingest_{ex}")} for ex in EXCHANGES}
    for exchange in EXCHANGES:
        platform.graphql(START_SENSOR, selector=_supervisor(exchange))
    victims = {ex: wait_for(lambda ex=ex: next((r for r in platform.runs(f"ingest_{ex}")
                                                if r["runId"] not in previous[ex] and r["status"] == "STARTED"), None),
                            120, f"the supervisor to start ingest_{ex}", interval_s=1) for ex in EXCHANGES}
    lake = LocalObjectStore(platform.state_dir / "lake")
    rows_before = len(lake_trade_ids(lake))
    wait_for(lambda: len(lake_trade_ids(lake)) > rows_before + 500, 60, "the new runs to flush", interval_s=1)
    window_start = {ex: {n: last + 1 for n, last in market_marks(platform.replay, ex).items()} for ex in EXCHANGES}
    time.sleep(1.2)  # mid-batch
    for victim in victims.values():
        pids = platform.run_pids(victim["runId"])  # in-process executor: the run's one process
        assert pids, f"no pid in the logs of run {victim['runId']}"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)

    # The supervisors notice the silence, fail the runs, and start replacements that recover the WALs.
    replacements = {}
    for exchange, victim in victims.items():
        replacements[exchange] = wait_for(
            lambda ex=exchange, v=victim: next((r for r in platform.runs(f"ingest_{ex}") if r["runId"] not in
                                                previous[ex] | {v["runId"]} and r["status"] == "STARTED"), None),
            180, f"a replacement of ingest_{exchange}", interval_s=1)
        assert platform.client.get_run_status(victim["runId"]) == dg.DagsterRunStatus.FAILURE
        tags = {t["key"]: t["value"] for t in replacements[exchange]["tags"]}
        assert victim["runId"][:8] in tags["tp/relaunch_reason"]
    time.sleep(6)  # live again: every symbol trades after the gap, which shows it and gets it filled
    for exchange in EXCHANGES:
        sensor = platform.graphql(SENSOR_QUERY, selector=_supervisor(exchange))["sensorOrError"]
        platform.graphql(STOP_SENSOR, id=sensor["id"])
    window_end = {ex: market_marks(platform.replay, ex) for ex in EXCHANGES}
    for replacement in replacements.values():
        platform.client.terminate_run(replacement["runId"])
    for replacement in replacements.values():
        platform.ended(replacement["runId"], 60, "the replacements to drain")
    for exchange in EXCHANGES:
        wal = WriteAheadLog(platform.state_dir / "wal" / exchange)
        try:
            assert not wal.checkpoint.pending, f"{exchange}: batches left unflushed"
        finally:
            wal.close()

    figures = _account_lake_and_clickhouse(platform, window_start, window_end)
    for exchange in EXCHANGES:
        assert figures[exchange]["trade_gaps"] > 0, f"{exchange}: the kill left no gap; recovery was not exercised"
    from trading_platform_tests.faults.test_fault_injection import record

    record("kill -9 of all three ingestion runs mid-batch, supervised restart (through dagster dev)", **figures)


@pytest.mark.timeout(600)
def test_a_load_killed_in_its_step_leaves_the_clickhouse_pool_to_the_next_load(platform: Platform,
                                                                               request: pytest.FixtureRequest) -> None:
    """kill -9 of a load run inside its step: the run is failed, the pool slot its dead process never gave back
    is freed, and the next load runs (the pool's limit is 1: without that, no load would ever run again)."""
    # No automation load may take the pool first (it would wait for the folder held below): the automation is
    # paused, and the loads it launched already end first.
    platform.pause_load_automation(request)
    wait_for(lambda: all(r["status"] in ENDED for r in platform.runs("__ASSET_JOB")),
             300, "the loads already launched to end", interval_s=2)
    # The test holds the chdb folder, so the load's step claims the pool and then waits for the folder: a step
    # caught inside, however fast the load would otherwise be.
    with open_clickhouse(platform.clickhouse_url, lock_timeout_s=60):
        victim = platform.load(["market_trades"])
        pids = wait_for(lambda: victim in platform.pool_holders()
                        and len(pids := platform.run_pids(victim)) >= 2 and pids,
                        120, "the load to claim the ClickHouse pool and start its step", interval_s=0.5)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: platform.client.get_run_status(victim) == dg.DagsterRunStatus.FAILURE, 60,
                 "the killed load to be failed", interval_s=1)
    assert victim in platform.pool_holders(), "the killed load gave its slot back by itself"

    load = platform.load(["market_trades"])
    status = platform.ended(load, 240, "the next load to run and end")
    assert status == dg.DagsterRunStatus.SUCCESS, (status, platform.failure_messages(load))
    assert victim not in platform.pool_holders()
