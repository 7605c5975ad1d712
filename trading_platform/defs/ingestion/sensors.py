"""The supervisors: one sensor per exchange keeps exactly one ingestion run alive, relaunching an ended or
failed run with backoff and replacing a run whose process died without a word."""

import contextlib
import json
import time
import zlib

import dagster as dg

from trading_platform.defs.ingestion.jobs import RELAUNCH_REASON_TAG, STOPPED_TAG
from trading_platform.defs.resources import IngestionResource

SUPERVISOR_BACKOFF_INITIAL_S = 5.0
SUPERVISOR_BACKOFF_MAX_S = 300.0
_ALIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
          dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def _backoff_s(failures: int, run_id: str) -> float:
    # Jitter derived from the run id, so every sensor tick computes the same delay for the same run.
    jitter = 0.5 + (zlib.crc32(run_id.encode()) % 1000) / 2000
    return float(min(SUPERVISOR_BACKOFF_MAX_S, SUPERVISOR_BACKOFF_INITIAL_S * 2 ** max(failures - 1, 0)) * jitter)


def _silence_s(instance: dg.DagsterInstance, run: dg.DagsterRun) -> float:
    """Seconds since the run's last event of any kind (heartbeats arrive every HEARTBEAT_S)."""
    records = instance.event_log_storage.get_records_for_run(run.run_id, ascending=False, limit=1).records
    last = records[0].event_log_entry.timestamp if records else 0.0
    record = instance.get_run_record_by_id(run.run_id)
    if record is not None:  # a run that has not logged yet is as old as its start (or creation)
        last = max(last, record.start_time or record.create_timestamp.timestamp())
    return time.time() - last


def build_supervisor(job: dg.JobDefinition, exchange: str) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"supervise_{exchange}",
        job=job,
        minimum_interval_seconds=10,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Keeps exactly one {job.name} run alive; relaunches an ended or failed run with backoff.",
    )
    def supervise(context: dg.SensorEvaluationContext, ingestion: IngestionResource) -> dg.RunRequest | dg.SkipReason:
        instance = context.instance
        alive = instance.get_runs(dg.RunsFilter(job_name=job.name, statuses=_ALIVE), limit=1)
        if alive:
            run = alive[0]
            silent_s = _silence_s(instance, run) if run.status == dg.DagsterRunStatus.STARTED else 0.0
            if silent_s <= ingestion.supervisor_dead_after_s:
                return dg.SkipReason(f"{job.name} run {run.run_id[:8]} is {run.status.value}")
            # Dagster's default launcher cannot see a run process that died without a word: do it here.
            message = (f"no event from the run for {silent_s:.0f}s (heartbeat every {ingestion.heartbeat_s:.0f}s): "
                       "the run process is gone; marking it failed so it can be replaced")
            with contextlib.suppress(Exception):
                instance.run_launcher.terminate(run.run_id)
            instance.report_run_failed(run, message)
            context.log.warning(f"{job.name} run {run.run_id[:8]}: {message}")
            return dg.SkipReason(f"run {run.run_id[:8]} declared dead ({message}); relaunching with backoff")
        cursor = json.loads(context.cursor) if context.cursor else {}
        records = instance.get_run_records(dg.RunsFilter(job_name=job.name), limit=1)
        failures = int(cursor.get("failures", 0))
        if not records:
            reason = "first start"
        else:
            record = records[0]
            run = record.dagster_run
            if STOPPED_TAG in run.tags:
                return dg.SkipReason(
                    f"{job.name} stopped: {run.tags[STOPPED_TAG]} -- not relaunching; once fixed, launch "
                    f"{job.name} from the Launchpad (the supervisor then keeps it alive again)")
            if cursor.get("last_run") != run.run_id:
                failures = failures + 1 if run.status == dg.DagsterRunStatus.FAILURE else 0
                context.update_cursor(json.dumps({"last_run": run.run_id, "failures": failures}))
            ended = record.end_time or time.time()
            delay = _backoff_s(failures, run.run_id) if failures else 0.0
            wait = ended + delay - time.time()
            if wait > 0:
                return dg.SkipReason(
                    f"run {run.run_id[:8]} ended {run.status.value}; {failures} failure(s) in a row, "
                    f"relaunching in {wait:.0f}s"
                )
            reason = f"previous run {run.run_id[:8]} ended {run.status.value}"
        return dg.RunRequest(tags={RELAUNCH_REASON_TAG: reason, "tp/consecutive_failures": str(failures)})

    return supervise
