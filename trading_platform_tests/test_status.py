"""`trading-platform status` over a real Dagster instance that a real ingestion run wrote to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from trading_platform.config import ExchangesFile
from trading_platform.definitions import build_definitions
from trading_platform.replay import ReplayServer, running_replay_server
from trading_platform.settings import Settings
from trading_platform_tests.conftest import CONFIG_FILE
from trading_platform_tests.support import wait_for

# A Dagster instance with real runs per test (~2 min): make test runs it, make test-fast does not.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live_instance(tmp_path_factory: pytest.TempPathFactory, exchanges_config: ExchangesFile,
                  redis_server: str) -> Iterator[tuple[Path, dict[str, str]]]:
    """A Dagster home in which ingest_binance is running against the replay feed and has flushed batches
    (for 45 s: the first test reads it live, which under a loaded suite can take a CLI start of 20 s;
    the others need only its history)."""
    root = tmp_path_factory.mktemp("status")
    home = root / "dagster_home"
    home.mkdir()
    # No compute-log capture: the status CLI reads this instance while the in-process run is live, and the
    # capture's log tail once kept the finished run from returning.
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\ncompute_logs:\n  module: dagster.core.storage.noop_compute_log_manager\n"
        "  class: NoOpComputeLogManager\n")
    with running_replay_server(exchanges_config, rate_per_symbol=20.0, seed=3) as replay:
        env = _env(root, home, replay, redis_server)
        settings = Settings(state_dir=root / "state", exchanges_file=CONFIG_FILE, replay_port=replay.port,
                            redis_url=redis_server, batch_max_age_s=1.0)
        job = build_definitions(settings).resolve_job_def("ingest_binance")
        with dg.DagsterInstance.from_config(str(home)) as instance:
            results: list[dg.ExecuteInProcessResult | BaseException] = []

            def execute() -> None:
                try:
                    results.append(job.execute_in_process(instance=instance, run_config={
                        "ops": {"ingest_binance_feed": {"config": {"run_window_s": 45.0}}}}))
                except BaseException as error:  # shown by the assertion below instead of lost with the thread
                    results.append(error)
            run = threading.Thread(target=execute)
            run.start()
            wait_for(lambda: len(instance.fetch_materializations(dg.AssetKey("raw_trades"), limit=3).records) >= 3,
                     30, "three flushed batches", interval_s=0.5)
            try:
                yield home, env
            finally:
                run.join(90)
        assert results, "the ingestion run had not returned 90 s after the tests"
        assert isinstance(results[0], dg.ExecuteInProcessResult) and results[0].success, results[0]


def _env(root: Path, home: Path, replay: ReplayServer, redis_url: str) -> dict[str, str]:
    return dict(os.environ, DAGSTER_HOME=str(home), TP_STATE_DIR=str(root / "state"),
                TP_EXCHANGES_FILE=str(CONFIG_FILE), TP_REPLAY_PORT=str(replay.port), TP_REDIS_URL=redis_url)


def status(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trading_platform.cli", "status", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _report(home: Path, asset: str, check: str, passed: bool, severity: dg.AssetCheckSeverity) -> None:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(asset), check_name=check, passed=passed, severity=severity,
            description="3 rows repeat an (exchange, symbol, trade_id) already stored" if not passed else "ok"))


def test_status_shows_a_running_exchange_from_its_latest_batch(live_instance: tuple[Path, dict]) -> None:
    _, env = live_instance
    result = status(env, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    by_exchange = {e["exchange"]: e for e in report["exchanges"]}
    binance = by_exchange["binance"]
    assert binance["run_state"] == "STARTED" and binance["connected"] is True
    assert binance["messages_per_s"] > 0 and binance["receive_lag_p99_ms"] >= binance["receive_lag_p50_ms"] > 0
    assert binance["trade_gaps_open"] == 0 and 0 <= binance["last_trade_age_s"] < 120
    assert by_exchange["kraken"]["run_state"] == "never run"
    assert report["failing_checks"] == [] and report["error"] is False


def test_a_failing_error_check_makes_status_exit_1_and_names_it(live_instance: tuple[Path, dict]) -> None:
    home, env = live_instance
    _report(home, "market_trades", "no_duplicate_trades", passed=False, severity=dg.AssetCheckSeverity.ERROR)
    try:
        result = status(env)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "ERROR market_trades:no_duplicate_trades - 3 rows repeat" in result.stdout
        assert "binance" in result.stdout and "messages" in result.stdout
    finally:
        _report(home, "market_trades", "no_duplicate_trades", passed=True, severity=dg.AssetCheckSeverity.ERROR)
    assert status(env).returncode == 0


def test_a_failing_warn_check_is_shown_but_does_not_fail_status(live_instance: tuple[Path, dict]) -> None:
    home, env = live_instance
    _report(home, "latest_prices", "staleness", passed=False, severity=dg.AssetCheckSeverity.WARN)
    try:
        result = status(env, "--json")
        assert result.returncode == 0
        failing = json.loads(result.stdout)["failing_checks"]
        assert [(c["asset"], c["check"], c["severity"]) for c in failing] == [("latest_prices", "staleness", "WARN")]
    finally:
        _report(home, "latest_prices", "staleness", passed=True, severity=dg.AssetCheckSeverity.WARN)


def test_status_without_an_instance_says_where_it_looked(tmp_path: Path) -> None:
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path / "nowhere"))
    result = status(env)
    assert result.returncode == 3 and "no Dagster instance at" in result.stderr and "make run" in result.stderr
