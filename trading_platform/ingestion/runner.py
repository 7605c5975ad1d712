"""The ingestion run of one exchange: session -> WAL -> normalize -> hot cache -> micro-batches -> lake.

Dagster-free on purpose: the Dagster op (``defs/ingestion.py``) builds one of these, passes callbacks
that turn reports into asset materializations and logs, and sets the stop event on terminate.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from trading_platform.exchanges.base import Exchange
from trading_platform.ingestion.lake_writer import WrittenBatch, batch_id_for, write_batch
from trading_platform.ingestion.normalize import TradeNormalizer
from trading_platform.ingestion.session import FeedSession, backoff_delay
from trading_platform.ingestion.wal import SealedBatch, WriteAheadLog
from trading_platform.quality.rules import SpikeReference
from trading_platform.schema import MARKET_TRADES, QUARANTINE
from trading_platform.storage.object_store import ObjectStore
from trading_platform.storage.redis_cache import LatestTrade, PriceCache

log = logging.getLogger(__name__)

SHUTDOWN_FLUSH_TIMEOUT_S = 60.0  # a store still down after this keeps the data in the WAL


@dataclass(frozen=True)
class RunnerConfig:
    wal_dir: Path
    batch_max_rows: int = 50_000
    batch_max_age_s: float = 10.0
    hot_tick_s: float = 1.0
    wal_fsync_interval_s: float = 0.2
    run_window_s: float = 3600.0
    spike_threshold: float = 0.2
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0


@dataclass
class FlushReport:
    exchange: str
    written: WrittenBatch
    wal_first: int
    wal_last: int
    recovered: bool
    flush_seconds: float
    connects: int
    disconnects: int
    last_error: str | None
    hot_cache_errors: int


@dataclass
class RunSummary:
    frames_received: int = 0
    trades_flushed: int = 0
    quarantined: int = 0
    batches: int = 0
    recovered_batches: int = 0
    connects: int = 0
    disconnects: int = 0
    drained_cleanly: bool | None = None
    unflushed_batches_left_in_wal: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class _OpenBatch:
    trades: list[pa.Table] = field(default_factory=list)
    rejects: list[pa.Table] = field(default_factory=list)
    rows: int = 0
    opened_at: float = field(default_factory=time.monotonic)
    reference_at_start: dict[str, list[float]] = field(default_factory=dict)


class IngestionRunner:
    def __init__(self, exchange: Exchange, url: str, store: ObjectStore, config: RunnerConfig,
                 price_cache: Callable[[], PriceCache] | None = None,
                 on_flush: Callable[[FlushReport], None] | None = None,
                 on_status: Callable[[str], None] | None = None) -> None:
        self.exchange = exchange
        self.url = url
        self.store = store
        self.config = config
        self._price_cache_factory = price_cache
        self._price_cache: PriceCache | None = None
        self.on_flush = on_flush or (lambda report: None)
        self.on_status = on_status or (lambda message: log.info(message))
        self.wal = WriteAheadLog(config.wal_dir / exchange.name, config.wal_fsync_interval_s)
        self.normalizer = TradeNormalizer(
            exchange, config.spike_threshold, SpikeReference.from_json(self.wal.checkpoint.reference))
        self.summary = RunSummary()
        self._frames: list[bytes] = []
        self._received_us: list[int] = []
        self._batch = _OpenBatch(reference_at_start=self.normalizer.reference.to_json())
        self._latest: dict[str, LatestTrade] = {}
        self._sealed: asyncio.Queue[tuple[SealedBatch, _OpenBatch, bool]] | None = None
        self._hot_cache_errors = 0
        self._hot_cache_down = False

    # --- entry point -----------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None) -> RunSummary:
        """Ingest until ``stop`` is set or the run window ends; then drain and flush everything."""
        return asyncio.run(self._main(stop or threading.Event()))

    async def _main(self, external_stop: threading.Event) -> RunSummary:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.config.run_window_s

        async def watch_stop() -> None:
            while not external_stop.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            reason = "stop requested" if external_stop.is_set() else "run window ended"
            self.on_status(f"{self.exchange.name}: {reason}; draining")
            stop.set()

        self._sealed = asyncio.Queue()
        flusher = asyncio.create_task(self._flush_worker())
        self._recover()
        session = FeedSession(self.exchange, self.url, self._on_frame, self.config.reconnect_initial_s,
                              self.config.reconnect_max_s, self.on_status)
        self._session = session
        watcher = asyncio.create_task(watch_stop())
        receiver = asyncio.create_task(session.run(stop))
        try:
            while not receiver.done():
                await asyncio.wait({receiver}, timeout=self.config.hot_tick_s)
                await self._tick(final=False)
            receiver.result()
        finally:
            watcher.cancel()
            await self._tick(final=True)
            self._sealed.put_nowait(None)  # type: ignore[arg-type]
            try:
                await asyncio.wait_for(flusher, SHUTDOWN_FLUSH_TIMEOUT_S)
            except TimeoutError:
                self.on_status(f"{self.exchange.name}: object store still failing at shutdown; "
                               "unflushed batches stay in the WAL for the next run")
            self.wal.close()
            stats = session.stats
            self.summary.connects, self.summary.disconnects = stats.connects, stats.disconnects
            self.summary.drained_cleanly = stats.drained_cleanly
            self.summary.unflushed_batches_left_in_wal = len(self.wal.checkpoint.pending)
            del loop
        return self.summary

    # --- receive path ----------------------------------------------------------------------------
    def _on_frame(self, frame: bytes, received_us: int) -> None:
        self.wal.append(received_us, frame)
        self._frames.append(frame)
        self._received_us.append(received_us)
        self.summary.frames_received += 1

    async def _tick(self, final: bool) -> None:
        if self._frames:
            frames, received = self._frames, self._received_us
            self._frames, self._received_us = [], []
            normalized = self.normalizer.process(frames, received)
            if normalized.trades.num_rows:
                self._batch.trades.append(normalized.trades)
                self._batch.rows += normalized.trades.num_rows
                self._remember_latest(normalized.trades)
            if normalized.rejects.num_rows:
                self._batch.rejects.append(normalized.rejects)
                self.summary.quarantined += normalized.rejects.num_rows
        self.wal.sync()
        await self._write_hot_cache()
        due = (self._batch.rows >= self.config.batch_max_rows
               or time.monotonic() - self._batch.opened_at >= self.config.batch_max_age_s)
        if final or due:
            self._seal(recovered=False)

    def _seal(self, recovered: bool) -> None:
        sealed = self.wal.seal(self._batch.reference_at_start)
        if sealed is not None and self._sealed is not None:
            self._sealed.put_nowait((sealed, self._batch, recovered))
        self._batch = _OpenBatch(reference_at_start=self.normalizer.reference.to_json())

    def _remember_latest(self, trades: pa.Table) -> None:
        columns = trades.select(["symbol", "price", "quantity", "side", "trade_id", "timestamp"]).to_pydict()
        for symbol, price, quantity, side, trade_id, ts in zip(*columns.values(), strict=True):
            self._latest[symbol] = LatestTrade(self.exchange.name, symbol, price, quantity, side, trade_id,
                                               int(ts.timestamp() * 1_000_000))

    async def _write_hot_cache(self) -> None:
        if not self._latest or self._price_cache_factory is None:
            return
        try:
            if self._price_cache is None:
                self._price_cache = self._price_cache_factory()
            await asyncio.to_thread(self._price_cache.write, list(self._latest.values()))
            if self._hot_cache_down:
                self.on_status(f"{self.exchange.name}: Redis reachable again; hot cache rewritten")
            self._hot_cache_down = False
        except Exception as error:  # the cache must never stop ingestion
            self._hot_cache_errors += 1
            if not self._hot_cache_down:
                self.on_status(f"{self.exchange.name}: Redis hot-cache write failed ({error}); "
                               "ingestion continues, retrying every tick")
            self._hot_cache_down = True

    # --- flush path ------------------------------------------------------------------------------
    async def _flush_worker(self) -> None:
        assert self._sealed is not None
        while True:
            item = await self._sealed.get()
            if item is None:
                return
            sealed, batch, recovered = item
            attempt = 0
            while True:
                try:
                    await self._flush(sealed, batch, recovered)
                    break
                except Exception as error:  # keep the batch; it is safe in the WAL meanwhile
                    delay = backoff_delay(attempt, 0.5, 15.0)
                    attempt += 1
                    batch_id = batch_id_for(self.exchange.name, sealed.first, sealed.last)
                    message = f"{self.exchange.name}: flush of {batch_id} failed ({error}); retrying in {delay:.1f}s"
                    self.summary.errors = ([*self.summary.errors, message])[-20:]
                    self.on_status(message)
                    await asyncio.sleep(delay)

    async def _flush(self, sealed: SealedBatch, batch: _OpenBatch, recovered: bool) -> None:
        started = time.monotonic()
        batch_id = batch_id_for(self.exchange.name, sealed.first, sealed.last)
        trades = pa.concat_tables(batch.trades) if batch.trades else MARKET_TRADES.arrow_schema.empty_table()
        rejects = pa.concat_tables(batch.rejects) if batch.rejects else QUARANTINE.arrow_schema.empty_table()
        if not batch.trades:
            trades = trades.drop_columns(["batch_id"])
        if not batch.rejects:
            rejects = rejects.drop_columns(["batch_id"])
        written = await asyncio.to_thread(write_batch, self.store, self.exchange.name, batch_id, trades, rejects)
        # The reference after this batch is the one the next sealed batch started from.
        next_reference = self._reference_after(sealed)
        self.wal.mark_flushed(sealed, next_reference)
        self.summary.batches += 1
        self.summary.recovered_batches += int(recovered)
        self.summary.trades_flushed += written.trade_rows
        stats = self._session.stats if hasattr(self, "_session") else None
        self.on_flush(FlushReport(
            exchange=self.exchange.name, written=written, wal_first=sealed.first, wal_last=sealed.last,
            recovered=recovered, flush_seconds=round(time.monotonic() - started, 4),
            connects=stats.connects if stats else 0, disconnects=stats.disconnects if stats else 0,
            last_error=stats.last_error if stats else None, hot_cache_errors=self._hot_cache_errors,
        ))

    def _reference_after(self, sealed: SealedBatch) -> dict[str, list[float]]:
        later = [p for p in self.wal.checkpoint.pending if p.first > sealed.last]
        return later[0].reference if later else self._batch.reference_at_start

    # --- recovery --------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Re-flush sealed-but-unconfirmed batches with their ids, then re-read the unsealed tail."""
        checkpoint = self.wal.checkpoint
        pending = list(checkpoint.pending)
        if pending:
            self.on_status(f"{self.exchange.name}: recovering {len(pending)} unflushed batch(es) from the WAL")
        checkpoint.pending = []
        for sealed in pending:
            normalizer = TradeNormalizer(self.exchange, self.config.spike_threshold,
                                         SpikeReference.from_json(sealed.reference))
            batch = self._replay_into_batch(normalizer, sealed.first, sealed.last)
            batch.reference_at_start = sealed.reference
            checkpoint.pending.append(sealed)
            assert self._sealed is not None
            self._sealed.put_nowait((sealed, batch, True))
            self.normalizer.reference = normalizer.reference
        tail_start = self.wal.unflushed_tail_start()
        self._batch = _OpenBatch(reference_at_start=self.normalizer.reference.to_json())
        self.wal.start_batch_at(tail_start)
        tail = self._replay_into_batch(self.normalizer, tail_start, None)
        if tail.rows or tail.rejects:
            self.on_status(f"{self.exchange.name}: re-read {tail.rows} trades from the WAL tail")
        tail.reference_at_start = self._batch.reference_at_start
        self._batch = tail

    def _replay_into_batch(self, normalizer: TradeNormalizer, first: int, last: int | None) -> _OpenBatch:
        batch = _OpenBatch()
        frames: list[bytes] = []
        received: list[int] = []
        for _offset, received_us, payload in self.wal.records(first, last):
            frames.append(payload)
            received.append(received_us)
        if frames:
            normalized = normalizer.process(frames, received)
            if normalized.trades.num_rows:
                batch.trades.append(normalized.trades)
                batch.rows = normalized.trades.num_rows
                self._remember_latest(normalized.trades)
            if normalized.rejects.num_rows:
                batch.rejects.append(normalized.rejects)
        return batch
