"""The Dagster instance `make run` uses (the project's dagster.yaml) keeps the ClickHouse pool usable when a
load dies without freeing its slot."""

from __future__ import annotations

import logging
import shutil
import uuid
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
from dagster._daemon.monitoring import concurrency as slot_monitoring
from dagster._time import get_current_datetime

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
