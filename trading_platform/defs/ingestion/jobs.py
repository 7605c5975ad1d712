"""Ingestion jobs: one long-running run per exchange, holding the feed session and flushing the lake."""

import threading

import dagster as dg

from trading_platform.defs.ingestion.events import flush_check_evaluations, flush_materializations
from trading_platform.defs.resources import FeedResource, IngestionResource, LakeResource, RedisResource
from trading_platform.ingestion.process import prepare_ingestion_process
from trading_platform.ingestion.runner import FeedRefused, FlushReport, IngestionRunner, RunSummary, stop_on_signals

INGESTION_TAG = "tp/ingestion"
RELAUNCH_REASON_TAG = "tp/relaunch_reason"
# Set on a run the exchange refused for good (HTTP 403/451): the supervisor does not relaunch after it.
STOPPED_TAG = "tp/stopped"
HEARTBEAT_MARK = "ingestion heartbeat"


class IngestionRunConfig(dg.Config):
    run_window_s: float | None = None  # override the configured window, e.g. for a short test run


def build_ingestion_job(exchange: str) -> dg.JobDefinition:
    @dg.op(name=f"ingest_{exchange}_feed", description=f"Hold the {exchange} feed session and flush the lake.")
    def ingest(context: dg.OpExecutionContext, config: IngestionRunConfig, feed: FeedResource,
               ingestion: IngestionResource, lake: LakeResource, redis: RedisResource) -> None:
        prepare_ingestion_process()  # this run's process (Dagster's run worker) is the run's alone
        venue, url = feed.exchange(exchange)
        context.log.info(f"{exchange}: {feed.feed_mode} feed at {url.split('?')[0]} for {len(venue.symbols)} symbols")

        def on_flush(report: FlushReport) -> None:
            for event in flush_materializations(report):
                context.log_event(event)
            for evaluation in flush_check_evaluations(context.instance, context.run_id, report):
                context.log_event(evaluation)  # type: ignore[arg-type]  # accepted; the annotation lags
                if not evaluation.passed:
                    context.log.warning(f"{evaluation.asset_key.to_user_string()} {evaluation.check_name} failed "
                                        f"on batch {report.written.batch_id}: {evaluation.description}")

        def on_heartbeat(summary: RunSummary) -> None:
            # An event in the run's log: the supervisor reads its age to tell a live run from a killed one.
            context.log.debug(f"{HEARTBEAT_MARK} frames={summary.frames_received} batches={summary.batches}")

        runner = IngestionRunner(venue, url, lake.store(), ingestion.for_run(config.run_window_s),
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
        # The supervisor sensor relaunches with backoff; Dagster's own run retries would race it. It also replaces
        # a run whose process died, so the instance's max runtime (for loads, see dagster.yaml) is off: "0".
        tags={INGESTION_TAG: exchange, "dagster/max_retries": "0", "dagster/max_runtime": "0"},
    )
    def ingest_job() -> None:
        ingest()

    return ingest_job
