"""The Dagster instance `make run` uses (the project's dagster.yaml) keeps loading when a load's process dies:
its run is failed after the max runtime, and the ClickHouse pool slot it held is freed once it has ended."""

from __future__ import annotations

import logging
import shutil
import uuid
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
from dagster._core.events import DagsterEventType
from dagster._core.storage.dagster_run import RunRecord
from dagster._daemon.monitoring import concurrency as slot_monitoring
from dagster._daemon.monitoring import run_monitoring
from dagster._time import get_current_datetime

from trading_platform.defs.ingestion.jobs import build_ingestion_job
from trading_platform.defs.warehouse.assets import CLICKHOUSE_POOL
from trading_platform.settings import PROJECT_ROOT


@pytest.fixture
def instance(tmp_path: Path) -> dg.DagsterInstance:
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    return dg.DagsterInstance.from_config(str(tmp_path))


def _started_load(instance: dg.DagsterInstance) -> dg.DagsterRun:
    return instance.add_run(dg.DagsterRun(job_name="__ASSET_JOB", run_id=str(uuid.uuid4()),
                                          status=dg.DagsterRunStatus.STARTED))


def _claim(instance: dg.DagsterInstance, run: dg.DagsterRun, step_key: str) -> bool:
    # As a step does before it claims: the pool gets dagster.yaml's default limit (1).
    instance.event_log_storage.initialize_concurrency_limit_to_default(CLICKHOUSE_POOL)
    return instance.event_log_storage.claim_concurrency_slot(CLICKHOUSE_POOL, run.run_id, step_key).is_claimed


def test_a_slot_held_by_a_load_that_died_mid_step_is_freed_after_the_run_ended(
        instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch) -> None:
    crashed, waiting = _started_load(instance), _started_load(instance)
    assert _claim(instance, crashed, "market_trades")
    # The run process was killed inside its step: the run ends, the slot is never given back by it.
    instance.report_run_failed(crashed, "the run process was killed mid-step")
    assert not _claim(instance, waiting, "market_trades")  # the pool (limit 1) is held by an ended run

    # The daemon's monitoring pass, once the configured time has passed since the run ended.
    free_after_s = instance.run_monitoring_settings.get("free_slots_after_run_end_seconds") or 0
    later = get_current_datetime() + timedelta(seconds=free_after_s + 1)
    monkeypatch.setattr(slot_monitoring, "get_current_datetime", lambda: later)
    list(slot_monitoring.execute_concurrency_slots_iteration(SimpleNamespace(instance=instance),  # type: ignore[arg-type]
                                                             logging.getLogger(__name__)))

    assert _claim(instance, waiting, "market_trades")  # the next load gets the pool


def _started_at(instance: dg.DagsterInstance, run: dg.DagsterRun) -> RunRecord:
    instance.report_dagster_event(dg.DagsterEvent(DagsterEventType.RUN_START.value, job_name=run.job_name),
                                  run.run_id)
    return instance.get_run_record_by_id(run.run_id)


def _monitor_long_after(instance: dg.DagsterInstance, record: RunRecord, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's run monitoring pass, once a run has run longer than the instance's max runtime."""
    later = get_current_datetime().timestamp() + instance.run_monitoring_max_runtime_seconds + 1
    monkeypatch.setattr(run_monitoring, "get_current_timestamp", lambda: later)
    run_monitoring.check_run_timeout(instance, record, logging.getLogger(__name__),
                                     float(instance.run_monitoring_max_runtime_seconds))


def test_a_load_whose_process_died_is_failed_after_the_max_runtime(instance: dg.DagsterInstance,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # A load whose process died and whose code server is gone too: nothing else fails it (the default run launcher
    # has no health check), and without a runtime limit the load automation, which waits while a load is in
    # progress, would never load again.
    load = _started_load(instance)
    _monitor_long_after(instance, _started_at(instance, load), monkeypatch)
    assert instance.get_run_by_id(load.run_id).status == dg.DagsterRunStatus.FAILURE


def test_an_ingestion_run_is_never_failed_for_its_runtime(instance: dg.DagsterInstance,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    job = build_ingestion_job("binance")
    run = instance.add_run(dg.DagsterRun(job_name=job.name, run_id=str(uuid.uuid4()), tags=job.tags,
                                         status=dg.DagsterRunStatus.STARTED))
    _monitor_long_after(instance, _started_at(instance, run), monkeypatch)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
