"""Ingestion jobs (one long-running run per exchange) and the sensors that keep exactly one alive."""


import contextlib
import json
import signal
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import dagster as dg

from trading_platform.defs.assets import RAW_BOOK_EVENTS, RAW_ORDERBOOK, RAW_QUARANTINE, RAW_TRADES
from trading_platform.defs.resources import FeedResource, LakeResource, RedisResource
from trading_platform.ingestion.runner import FeedRefused, FlushReport, IngestionRunner, RunSummary
from trading_platform.schema import BOOK_EVENTS, ORDERBOOK_SNAPSHOTS, QUARANTINE

INGESTION_TAG = "tp/ingestion"
RELAUNCH_REASON_TAG = "tp/relaunch_reason"
# Set on a run the exchange refused for good (HTTP 403/451): the supervisor does not relaunch after it.
STOPPED_TAG = "tp/stopped"
SUPERVISOR_BACKOFF_INITIAL_S = 5.0
SUPERVISOR_BACKOFF_MAX_S = 300.0
HEARTBEAT_MARK = "ingestion heartbeat"
_ALIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
          dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


class IngestionRunConfig(dg.Config):
    run_window_s: float | None = None  # override the configured window, e.g. for a short test run


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM / SIGINT (Dagster's terminate sends SIGINT to the run) drain instead of killing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def request_stop(signum: int, _frame: object) -> None:
        stop.set()

    for sig in previous:
        signal.signal(sig, request_stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _to_iso(us: int | None) -> str | None:
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat() if us is not None else None


def _materializations(report: FlushReport) -> list[dg.AssetMaterialization]:
    """One materialization per lake dataset the batch wrote (trades always, so the UI shows liveness)."""
    written = report.written
    common: dict[str, dg.RawMetadataValue] = {
        "exchange": report.exchange,
        "batch_id": written.batch_id,
        "wal_offsets": f"{report.wal_first}..{report.wal_last}",
        "recovered_from_wal": report.recovered,
    }
    events = [dg.AssetMaterialization(
        asset_key=RAW_TRADES.key,
        description=f"{report.exchange}: {written.trade_rows} trades in batch {written.batch_id}",
        metadata={
            **common,
            "dagster/row_count": written.trade_rows,
            "files": len([k for k in written.keys if k.startswith("raw/trades/")]),
            "symbols": dg.MetadataValue.json(written.symbols),
            "first_trade_time": _to_iso(written.first_trade_us) or "",
            "last_trade_time": _to_iso(written.last_trade_us) or "",
            "max_receive_lag_ms": written.max_receive_lag_ms if written.max_receive_lag_ms is not None else 0.0,
            "quarantined_rows": written.quarantined_rows,
            "flush_seconds": report.flush_seconds,
            "connects": report.connects,
            "disconnects": report.disconnects,
            "last_connection_error": report.last_error or "",
            "redis_hot_cache_errors": report.hot_cache_errors,
            "ignored_frames": report.ignored_frames,
            "trade_gaps_open": report.trade_gaps_open,
            "trade_gaps": report.counters.get("trade_gaps", 0),
            "trades_backfilled": report.counters.get("trades_backfilled", 0),
            "trade_gaps_unresolved": report.counters.get("trade_gaps_unresolved", 0),
            "duplicate_trades_dropped": report.counters.get("duplicate_trades_dropped", 0),
            "rest_rate_limited": report.rest_rate_limited,
            "rest_paused_s": report.rest_paused_s,
        },
    )]
    extra: tuple[tuple[dg.AssetSpec, str, str, dict[str, dg.RawMetadataValue]], ...] = (
        (RAW_ORDERBOOK, ORDERBOOK_SNAPSHOTS.dataset, "order-book snapshots", {}),
        (RAW_BOOK_EVENTS, BOOK_EVENTS.dataset, "book integrity events",
         {"by_kind": dg.MetadataValue.json(written.book_events_by_kind)}),
        (RAW_QUARANTINE, QUARANTINE.dataset, "frames quarantined",
         {"by_reason": dg.MetadataValue.json(written.quarantined_by_reason)}),
    )
    for spec, dataset, what, metadata in extra:
        rows = written.rows.get(dataset, 0)
        if rows:
            events.append(dg.AssetMaterialization(
                asset_key=spec.key, description=f"{report.exchange}: {rows} {what}",
                metadata={**common, "dagster/row_count": rows, **metadata},
            ))
    return events


def build_ingestion_job(exchange: str) -> dg.JobDefinition:
    @dg.op(name=f"ingest_{exchange}_feed", description=f"Hold the {exchange} feed session and flush the lake.")
    def ingest(context: dg.OpExecutionContext, config: IngestionRunConfig, feed: FeedResource,
               lake: LakeResource, redis: RedisResource) -> None:
        venue, url = feed.exchange(exchange)
        context.log.info(f"{exchange}: {feed.feed_mode} feed at {url.split('?')[0]} for {len(venue.symbols)} symbols")

        def on_flush(report: FlushReport) -> None:
            for event in _materializations(report):
                context.log_event(event)

        def on_heartbeat(summary: RunSummary) -> None:
            # An event in the run's log: the supervisor reads its age to tell a live run from a killed one.
            context.log.debug(f"{HEARTBEAT_MARK} frames={summary.frames_received} batches={summary.batches}")

        runner = IngestionRunner(venue, url, lake.store(), feed.runner_config(config.run_window_s),
                                 price_cache=redis.cache, on_flush=on_flush, on_status=context.log.info,
                                 on_heartbeat=on_heartbeat)
        stop = threading.Event()
        with stop_on_signals(stop):
            try:
                summary = runner.run(stop)
            except FeedRefused as refused:
                # Drained and flushed already; relaunching cannot help until someone changes the setup.
                context.instance.add_run_tags(context.run_id, {STOPPED_TAG: str(refused)[:1000]})
                raise dg.Failure(description=str(refused),
                                 metadata={"errors": dg.MetadataValue.json(runner.summary.errors)}) from None
        context.log.info(f"{exchange}: run summary {summary}")
        if summary.unflushed_batches_left_in_wal:
            raise dg.Failure(
                f"{summary.unflushed_batches_left_in_wal} batch(es) could not be written to the lake and stay in "
                "the WAL; the next run flushes them first",
                metadata={"errors": dg.MetadataValue.json(summary.errors)},
            )

    @dg.job(
        name=f"ingest_{exchange}",
        description=f"Long-running {exchange} ingestion: WebSocket -> WAL -> Parquet lake + Redis hot cache.",
        executor_def=dg.in_process_executor,
        # The supervisor sensor relaunches with backoff; Dagster's own run retries would race it.
        tags={INGESTION_TAG: exchange, "dagster/max_retries": "0"},
    )
    def ingest_job() -> None:
        ingest()

    return ingest_job


def _backoff_s(failures: int, run_id: str) -> float:
    # Jitter derived from the run id, so every sensor tick computes the same delay for the same run.
    jitter = 0.5 + (zlib.crc32(run_id.encode()) % 1000) / 2000
    return min(SUPERVISOR_BACKOFF_MAX_S, SUPERVISOR_BACKOFF_INITIAL_S * 2 ** max(failures - 1, 0)) * jitter


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
    def supervise(context: dg.SensorEvaluationContext, feed: FeedResource) -> dg.RunRequest | dg.SkipReason:
        instance = context.instance
        alive = instance.get_runs(dg.RunsFilter(job_name=job.name, statuses=_ALIVE), limit=1)
        if alive:
            run = alive[0]
            silent_s = _silence_s(instance, run) if run.status == dg.DagsterRunStatus.STARTED else 0.0
            if silent_s <= feed.supervisor_dead_after_s:
                return dg.SkipReason(f"{job.name} run {run.run_id[:8]} is {run.status.value}")
            # Dagster's default launcher cannot see a run process that died without a word: do it here.
            message = (f"no event from the run for {silent_s:.0f}s (heartbeat every {feed.heartbeat_s:.0f}s): "
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
