"""`trading-platform status`: the platform's health from what the Dagster instance recorded.

Per exchange: the ingestion run's state, whether its feed is connected, how old its last trade is, its
message rate and receive lag, its open trade gaps; then every check whose latest evaluation failed. Read
from the instance's run and event storage (the same the UI reads), so it works from cron or CI next to
a running platform without disturbing it.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import dagster as dg

from trading_platform.config import load_exchanges
from trading_platform.settings import Settings

RAW_TRADES = dg.AssetKey("raw_trades")
# A run that missed two flushes (plus a margin for a slow store) is not ingesting, whatever its state says.
SILENT_FLUSHES = 2
SILENT_MARGIN_S = 30.0


@dataclass
class FailingCheck:
    asset: str
    check: str
    severity: str
    partition: str | None
    description: str


@dataclass
class ExchangeStatus:
    exchange: str
    run_state: str  # the latest ingest_<exchange> run's status, or "never run"
    run_id: str | None = None
    connected: bool | None = None
    last_flush_age_s: float | None = None
    last_trade_age_s: float | None = None
    messages_per_s: float | None = None
    receive_lag_p50_ms: float | None = None
    receive_lag_p99_ms: float | None = None
    trade_gaps_open: int | None = None
    failing_checks: list[str] = field(default_factory=list)


@dataclass
class PlatformStatus:
    exchanges: list[ExchangeStatus]
    failing_checks: list[FailingCheck]

    @property
    def error(self) -> bool:
        """An ERROR check fails: data is wrong (the exit code says so)."""
        return any(check.severity == "ERROR" for check in self.failing_checks)

    def to_json(self) -> dict[str, object]:
        return {"exchanges": [asdict(e) for e in self.exchanges],
                "failing_checks": [asdict(c) for c in self.failing_checks], "error": self.error}


def _value(metadata: dict[str, dg.MetadataValue], key: str) -> object:
    entry = metadata.get(key)
    return entry.value if entry is not None else None


def _exchange_status(instance: dg.DagsterInstance, exchange: str, silent_after_s: float) -> ExchangeStatus:
    runs = instance.get_runs(dg.RunsFilter(job_name=f"ingest_{exchange}"), limit=1)
    if not runs:
        return ExchangeStatus(exchange, "never run")
    status = ExchangeStatus(exchange, runs[0].status.value, runs[0].run_id)
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RAW_TRADES, asset_partitions=[exchange]), limit=1).records
    if not records:
        return status
    record = records[0]
    # Read the clock after the record: a batch flushed while the instance was being read is 0 s old, not -1.
    now = time.time()
    materialization = record.asset_materialization
    metadata = dict(materialization.metadata) if materialization else {}
    status.last_flush_age_s = round(now - record.timestamp, 1)
    last_trade = _value(metadata, "last_trade_time")
    if isinstance(last_trade, str) and last_trade:
        # The exchange's clock may run a little ahead of ours: a trade is never younger than "now".
        status.last_trade_age_s = max(0.0, round(now - datetime.fromisoformat(last_trade).timestamp(), 1))
    live = status.run_state == "STARTED" and status.last_flush_age_s <= silent_after_s
    connects, disconnects = _value(metadata, "connects"), _value(metadata, "disconnects")
    if isinstance(connects, int) and isinstance(disconnects, int):
        status.connected = live and connects > disconnects
    for name in ("messages_per_s", "receive_lag_p50_ms", "receive_lag_p99_ms"):
        value = _value(metadata, f"{exchange}.{name}")
        setattr(status, name, float(value) if isinstance(value, int | float) else None)
    gaps = _value(metadata, "trade_gaps_open")
    status.trade_gaps_open = int(gaps) if isinstance(gaps, int) else None
    return status


def _failing_checks(instance: dg.DagsterInstance, check_keys: list[dg.AssetCheckKey]) -> list[FailingCheck]:
    """Checks whose latest finished evaluation failed (per exchange partition for the raw datasets)."""
    failing = []
    for key in check_keys:
        latest: dict[str | None, dg.AssetCheckEvaluation] = {}
        for record in instance.event_log_storage.get_asset_check_execution_history(key, limit=20):
            event = record.event.dagster_event if record.event else None
            evaluation = event.event_specific_data if event else None
            if isinstance(evaluation, dg.AssetCheckEvaluation):
                latest.setdefault(record.partition, evaluation)
        for partition, evaluation in latest.items():
            if not evaluation.passed:
                failing.append(FailingCheck(key.asset_key.to_user_string(), key.name, evaluation.severity.value,
                                            partition, evaluation.description or ""))
    return failing


def platform_status(settings: Settings, dagster_home: Path) -> PlatformStatus:
    from trading_platform.definitions import build_definitions

    with warnings.catch_warnings():  # Dagster's own sensor classes warn about a beta parameter: not ours to act on
        warnings.simplefilter("ignore", dg.BetaWarning)
        check_keys = sorted(build_definitions(settings).resolve_asset_graph().asset_check_keys,
                            key=lambda k: (k.asset_key.to_user_string(), k.name))
    exchanges = list(load_exchanges(settings.exchanges_file).enabled)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        silent_after_s = SILENT_FLUSHES * settings.batch_max_age_s + SILENT_MARGIN_S
        statuses = [_exchange_status(instance, exchange, silent_after_s) for exchange in exchanges]
        failing = _failing_checks(instance, check_keys)
    for status in statuses:
        status.failing_checks = [f"{c.asset}:{c.check} ({c.severity})" for c in failing
                                 if c.partition in (status.exchange, None)]
    return PlatformStatus(statuses, failing)


def _cell(value: object, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.1f}{unit}"
    return f"{value}{unit}"


def render(status: PlatformStatus) -> str:
    lines = []
    for e in status.exchanges:
        lines += [
            f"{e.exchange}",
            f"  run            {e.run_state}" + (f" ({e.run_id[:8]})" if e.run_id else ""),
            f"  connected      {_cell(e.connected)}",
            f"  last trade     {_cell(e.last_trade_age_s, ' s ago')}"
            f"   (last batch {_cell(e.last_flush_age_s, ' s ago')})",
            f"  messages       {_cell(e.messages_per_s, '/s')}",
            f"  receive lag    p50 {_cell(e.receive_lag_p50_ms, ' ms')}   p99 {_cell(e.receive_lag_p99_ms, ' ms')}",
            f"  open gaps      {_cell(e.trade_gaps_open)}",
            f"  failing checks {', '.join(e.failing_checks) or 'none'}",
        ]
    lines.append("")
    if status.failing_checks:
        lines.append("failing checks:")
        lines += [f"  {c.severity:<5} {c.asset}:{c.check}" + (f" [{c.partition}]" if c.partition else "")
                  + f" - {c.description}" for c in status.failing_checks]
    else:
        lines.append("every check passes")
    return "\n".join(lines)
