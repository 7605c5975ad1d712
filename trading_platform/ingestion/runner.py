"""The ingestion run of one exchange: session -> WAL -> normalize -> hot cache -> micro-batches -> lake.

Dagster-free on purpose: the Dagster op (``defs/ingestion/jobs.py``) builds one of these, passes callbacks
that turn reports into asset materializations and logs, and sets the stop event on terminate.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from trading_platform.analytics.open_candles import OpenCandles
from trading_platform.exchanges.base import Exchange
from trading_platform.exchanges.conversions import highest_per_key
from trading_platform.exchanges.decoded import Action, FetchSnapshot, Reconnect, RecordKind, SendFrames
from trading_platform.ingestion.frame_archive import archive_wal_span
from trading_platform.ingestion.lake_writer import WrittenBatch, batch_id_for, write_batch
from trading_platform.ingestion.normalize import Normalized, TradeNormalizer
from trading_platform.ingestion.rest import RateLimited, Refused, Rejected, RestResponse, http_get
from trading_platform.ingestion.session import FeedSession, backoff_delay
from trading_platform.ingestion.wal import SealedBatch, WriteAheadLog
from trading_platform.quality.rules import SpikeReference
from trading_platform.schema import BOOK_EVENTS, MARKET_TRADES, ORDERBOOK_SNAPSHOTS, QUARANTINE, Table
from trading_platform.storage.object_store import ObjectStore
from trading_platform.storage.redis_cache import CachedCandle, LatestBook, LatestTrade, PriceCache

log = logging.getLogger(__name__)

SHUTDOWN_FLUSH_TIMEOUT_S = 60.0  # a store still down after this keeps the data in the WAL
SNAPSHOT_MIN_INTERVAL_S = 1.0
FINAL_FETCH_WAIT_S = 5.0
REST_RETRY_MAX_S = 60.0  # transient REST failures (5xx, network) back off up to this
REST_RATE_LIMIT_DEFAULT_S = 30.0  # a 429/418 without Retry-After: wait this long at least
REST_REJECTED_ATTEMPTS = 3  # a request answered 4xx this often is given up (the exchange will not serve it)
# REST calls (book snapshots, trade backfills) block a thread for up to the REST timeout each. They get threads of
# their own: in the loop's default pool, a burst of them (every book resyncing at once under overload) queued
# the lake writes and the Redis hot-cache writes behind them for many seconds.
REST_THREADS = 4


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """While inside, SIGTERM / SIGINT set ``stop`` (the run drains and flushes) instead of killing the process;
    Dagster's terminate sends SIGINT to the run. Only the main thread can install signal handlers."""
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


class FeedRefused(RuntimeError):
    """The exchange refuses this client for good (HTTP 403 / 451): the feed stops instead of retrying."""


class RunnerConfig(Protocol):
    """The values a run reads. ``Settings`` is one (it declares every knob once, with its default); the
    Dagster op passes its ingestion resource, which holds the same values."""

    @property
    def wal_dir(self) -> Path: ...
    @property
    def batch_max_rows(self) -> int: ...
    @property
    def batch_max_age_s(self) -> float: ...
    @property
    def hot_tick_s(self) -> float: ...
    @property
    def wal_fsync_interval_s(self) -> float: ...
    @property
    def run_window_s(self) -> float: ...
    @property
    def spike_threshold(self) -> float: ...
    @property
    def reconnect_initial_s(self) -> float: ...
    @property
    def reconnect_max_s(self) -> float: ...
    @property
    def heartbeat_s(self) -> float: ...  # the supervisor declares a run dead after several missed heartbeats


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
    rest_rate_limited: int = 0  # 429/418 answers so far in this run
    rest_paused_s: float = 0.0  # seconds REST calls waited because the exchange asked us to
    ignored_frames: int = 0  # well-formed frames of channels / types we do not use
    trade_gaps_open: int = 0
    counters: dict[str, int] = field(default_factory=dict)  # the exchange's running totals
    messages_per_s: float = 0.0  # frames received per second since the previous flush


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
    ignored_frames: int = 0
    rest_rate_limited: int = 0
    rest_paused_s: float = 0.0
    refused: str | None = None  # why the exchange stopped this feed (HTTP 403/451), if it did
    errors: list[str] = field(default_factory=list)


_DATASETS: tuple[Table, ...] = (MARKET_TRADES, ORDERBOOK_SNAPSHOTS, BOOK_EVENTS, QUARANTINE)


@dataclass
class _OpenBatch:
    parts: dict[Table, list[pa.Table]] = field(default_factory=lambda: {t: [] for t in _DATASETS})
    rows: int = 0
    opened_at: float = field(default_factory=time.monotonic)
    reference_at_start: dict[str, list[float]] = field(default_factory=dict)
    # Exchange.export_state() right after the batch's last record was decoded: what a later run needs to
    # re-decode the *next* batch exactly (trade-id marks, open gaps). Taken at the seal, not at the flush:
    # by flush time the exchange has decoded records of later batches, and a restart that re-decodes those
    # from a later state would judge their trades as already seen.
    exchange_state_at_end: dict[str, Any] = field(default_factory=dict)
    # And right before its first record: what the frame archive keeps, to decode the batch again on its own.
    exchange_state_at_start: dict[str, Any] = field(default_factory=dict)

    def add(self, normalized: Normalized) -> None:
        for table, rows in ((MARKET_TRADES, normalized.trades), (ORDERBOOK_SNAPSHOTS, normalized.book_snapshots),
                            (BOOK_EVENTS, normalized.book_events), (QUARANTINE, normalized.rejects)):
            if rows is not None and rows.num_rows:
                self.parts[table].append(rows)
                self.rows += rows.num_rows

    def tables(self) -> dict[Table, pa.Table]:
        empty = {t: pa.schema([f for f in t.arrow_schema if f.name != "batch_id"]).empty_table() for t in _DATASETS}
        return {t: pa.concat_tables(parts) if parts else empty[t] for t, parts in self.parts.items()}


class IngestionRunner:
    def __init__(self, exchange: Exchange, url: str, store: ObjectStore, config: RunnerConfig,
                 price_cache: Callable[[], PriceCache] | None = None,
                 on_flush: Callable[[FlushReport], None] | None = None,
                 on_status: Callable[[str], None] | None = None,
                 on_heartbeat: Callable[[RunSummary], None] | None = None) -> None:
        self.exchange = exchange
        self.url = url
        self.store = store
        self.config = config
        self._price_cache_factory = price_cache
        self._price_cache: PriceCache | None = None
        self.on_flush = on_flush or (lambda report: None)
        self.on_status = on_status or (lambda message: log.info(message))
        self.on_heartbeat = on_heartbeat or (lambda summary: None)
        self.wal = WriteAheadLog(config.wal_dir / exchange.name, config.wal_fsync_interval_s)
        exchange.import_state(self.wal.checkpoint.exchange_state)
        self.normalizer = TradeNormalizer(
            exchange, config.spike_threshold, SpikeReference.from_json(self.wal.checkpoint.reference))
        self.summary = RunSummary()
        self._frames: list[bytes] = []
        self._received_us: list[int] = []
        self._kinds: list[RecordKind] = []
        self._fetching: set[bytes] = set()  # headers of requests in flight
        self._last_fetch: dict[bytes, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._latest_books: dict[str, LatestBook] = {}
        self._batch = _OpenBatch(reference_at_start=self.normalizer.reference.to_json(),
                                 exchange_state_at_start=exchange.export_state())
        self._latest: dict[str, LatestTrade] = {}
        self._open_candles = OpenCandles(exchange.name)
        self._sealed: asyncio.Queue[tuple[SealedBatch, _OpenBatch, bool]] | None = None
        self._hot_cache_errors = 0
        self._rate_mark = (time.monotonic(), 0)  # (when, frames received) at the previous flush
        self._hot_cache_down = False
        self._session: FeedSession | None = None
        self._rest_resume_at = 0.0  # monotonic time before which no REST call is made (rate limiting)
        self._stop: asyncio.Event | None = None
        # WAL offset of the last record decoded into the open batch: a batch seals exactly there, so a
        # record that arrives while a tick awaits (REST, Redis) belongs to the next batch in the WAL too.
        self._decoded_through = -1
        self._flushing = False  # the flush worker holds a sealed batch (writing or retrying)
        self._wal_write_due = False  # a WAL write of the records gathered in this burst is scheduled
        self._rest_pool = ThreadPoolExecutor(REST_THREADS, thread_name_prefix=f"{exchange.name}-rest")

    # --- entry point -----------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None) -> RunSummary:
        """Ingest until ``stop`` is set or the run window ends; then drain and flush everything."""
        return asyncio.run(self._main(stop or threading.Event()))

    async def _main(self, external_stop: threading.Event) -> RunSummary:
        stop = self._stop = asyncio.Event()
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
        for action in self.exchange.outstanding_actions():  # e.g. trade gaps a previous run left open
            await self._perform(action)
        session = FeedSession(self.exchange, self.url, self._on_frame, self.config.reconnect_initial_s,
                              self.config.reconnect_max_s, self.on_status, new_connection=self._new_connection)
        self._session = session
        watcher = asyncio.create_task(watch_stop())
        receiver = asyncio.create_task(session.run(stop))
        try:
            next_heartbeat = 0.0
            next_tick = time.monotonic()
            while not receiver.done():
                # A fixed cadence: the tick's own work (decode, Redis) does not stretch the interval, so a
                # cached trade is at most one interval plus one tick old.
                next_tick = max(next_tick + self.config.hot_tick_s, time.monotonic())
                await asyncio.wait({receiver}, timeout=next_tick - time.monotonic())
                await self._tick(final=False)
                if time.monotonic() >= next_heartbeat:
                    self.on_heartbeat(self.summary)
                    next_heartbeat = time.monotonic() + self.config.heartbeat_s
            receiver.result()
        finally:
            watcher.cancel()
            if self._tasks:  # let REST answers in flight (snapshots, trade backfills) land in this run
                await asyncio.wait(self._tasks, timeout=FINAL_FETCH_WAIT_S)
            await self._tick(final=True)
            self._sealed.put_nowait(None)  # type: ignore[arg-type]
            try:
                await asyncio.wait_for(flusher, SHUTDOWN_FLUSH_TIMEOUT_S)
            except TimeoutError:
                self.on_status(f"{self.exchange.name}: object store still failing at shutdown; "
                               "unflushed batches stay in the WAL for the next run")
            self.wal.close()
            self._rest_pool.shutdown(wait=False, cancel_futures=True)
            stats = session.stats
            self.summary.connects, self.summary.disconnects = stats.connects, stats.disconnects
            self.summary.drained_cleanly = stats.drained_cleanly
            self.summary.unflushed_batches_left_in_wal = len(self.wal.checkpoint.pending)
            del loop
        if self.summary.refused is not None:
            raise FeedRefused(self.summary.refused)
        return self.summary

    # --- receive path ----------------------------------------------------------------------------
    def _record(self, payload: bytes, received_us: int, kind: RecordKind) -> None:
        self.wal.append(received_us, payload, kind)
        if not self._wal_write_due:
            # One WAL write per burst: the frames the receive loop reads without yielding are written together
            # as soon as it yields, and in any case before a tick decodes them (see _tick).
            try:
                asyncio.get_running_loop().call_soon(self._write_wal)
                self._wal_write_due = True
            except RuntimeError:  # no event loop in this thread: nothing to gather the record with
                self.wal.write()
        self._frames.append(payload)
        self._received_us.append(received_us)
        self._kinds.append(kind)

    def _write_wal(self) -> None:
        self._wal_write_due = False
        self.wal.write()

    def _on_frame(self, frame: bytes, received_us: int) -> None:
        self._record(frame, received_us, RecordKind.FRAME)
        self.summary.frames_received += 1

    def _new_connection(self, url: str, received_us: int) -> None:
        # Book snapshots asked on the previous connection no longer apply (the books restart); other
        # requests, such as trade-gap backfills, stay valid across connections.
        self._fetching = {key for key in self._fetching if b" " in key}
        self._record(url.encode(), received_us, RecordKind.CONNECTED)

    def _process(self, normalizer: TradeNormalizer, frames: list[bytes], received: list[int],
                 kinds: list[RecordKind], batch: _OpenBatch) -> Normalized:
        normalized = normalizer.process(frames, received, kinds if any(kinds) else None)
        batch.add(normalized)
        if normalized.trades.num_rows:
            self._remember_latest(normalized.trades)
        if normalized.book_snapshots is not None:
            self._remember_books(normalized.book_snapshots)
        self.summary.quarantined += normalized.rejects.num_rows
        self.summary.ignored_frames += normalized.ignored_frames
        return normalized

    async def _tick(self, final: bool) -> None:
        if self._frames:
            self.wal.write()  # every record is in the WAL before it is decoded into the batch
            frames, received, kinds = self._frames, self._received_us, self._kinds
            self._frames, self._received_us, self._kinds = [], [], []
            self._decoded_through = self.wal.next_offset - 1  # taken together, no await in between
            normalized = self._process(self.normalizer, frames, received, kinds, self._batch)
            if not final:
                for action in normalized.actions:
                    await self._perform(action)
        await self._write_hot_cache()
        # The fsync after the hot cache, not before: the frames were written to the WAL before they were decoded
        # (all a kill needs), and the fsync - a machine crash's bound, tens of ms on a busy disk - no longer delays
        # every tick's Redis write.
        self.wal.sync()
        # While the store is failing (a sealed batch still waits for its flush), an aged batch keeps growing
        # instead of sealing: the backlog after an outage is a few large files, not hundreds of small ones.
        flush_waiting = self._flushing or (self._sealed is not None and not self._sealed.empty())
        due = (self._batch.rows >= self.config.batch_max_rows
               or (time.monotonic() - self._batch.opened_at >= self.config.batch_max_age_s and not flush_waiting))
        if final or due:
            self._seal(recovered=False)

    async def _perform(self, action: Action) -> None:
        if isinstance(action, FetchSnapshot):
            if action.header not in self._fetching:
                self._fetching.add(action.header)
                task = asyncio.create_task(self._fetch_snapshot(action))
                self._tasks.add(task)  # keep a reference until done (asyncio holds tasks weakly)
                task.add_done_callback(self._tasks.discard)
        elif isinstance(action, SendFrames):
            if self._session is not None:
                await self._session.send(action.frames)
        elif isinstance(action, Reconnect) and self._session is not None:
            await self._session.reconnect(action.reason)

    async def _fetch_snapshot(self, action: FetchSnapshot) -> None:
        """GET a REST resource politely; the body joins the record stream (and the WAL) in order.

        Transient failures retry with jittered backoff. 429/418 pause every REST call of this exchange for
        at least ``Retry-After`` (Binance escalates ignored 429s to IP bans). A request refused with another
        4xx a few times is given up as a REST_FAILED record (a backfill then records its gap as lost).
        403/451 stop the feed: the exchange will not serve us, and saying so beats retrying forever.
        """
        attempt = rejected = 0
        # Re-asks after a stale or bad snapshot come straight back: space them, per request, so a
        # misbehaving endpoint is not hammered (Binance weighs a 1000-level snapshot at 50).
        key = action.header
        wait = self._last_fetch.get(key, 0.0) + SNAPSHOT_MIN_INTERVAL_S - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        while key in self._fetching:
            pause = self._rest_resume_at - time.monotonic()
            if pause > 0:
                self.summary.rest_paused_s += pause
                await asyncio.sleep(pause)
                continue
            self._last_fetch[key] = time.monotonic()
            try:
                response: RestResponse = await asyncio.get_running_loop().run_in_executor(
                    self._rest_pool, http_get, action.url)
            except RateLimited as error:
                # The server's Retry-After is what it asks for; without one, back off long and longer.
                delay = error.retry_after_s if error.retry_after_s is not None else backoff_delay(
                    attempt, REST_RATE_LIMIT_DEFAULT_S, REST_RETRY_MAX_S * 5)
                attempt += 1
                self._rest_resume_at = max(self._rest_resume_at, time.monotonic() + delay)
                self.summary.rest_rate_limited += 1
                told = f"Retry-After {error.retry_after_s:g}s" if error.retry_after_s is not None else "no Retry-After"
                self.on_status(f"{self.exchange.name}: the exchange is rate-limiting REST (HTTP {error.status}, "
                               f"{told}); every REST call pauses {delay:.0f}s")
                continue
            except Refused as error:
                self._refuse(f"{self.exchange.name}: the exchange refuses REST with HTTP {error.status} for "
                             f"{action.url.split('?')[0]} ({error}); this feed stops. HTTP 451 means the exchange "
                             "does not serve this location; use another endpoint (exchanges.yaml `live`) or "
                             "disable the exchange (`enabled: false`)")
                return
            except Rejected as error:
                rejected += 1
                if rejected >= REST_REJECTED_ATTEMPTS:
                    self.on_status(f"{self.exchange.name}: GET {action.url} refused {rejected} times ({error}); "
                                   "giving up on this request")
                    if key in self._fetching:
                        self._fetching.discard(key)
                        self._record(key + b"\n" + str(error).encode(), time.time_ns() // 1000,
                                     RecordKind.REST_FAILED)
                    return
                delay = backoff_delay(attempt, 1.0, REST_RETRY_MAX_S)
                attempt += 1
                self.on_status(f"{self.exchange.name}: GET {action.url} refused ({error}); retry in {delay:.1f}s")
                await asyncio.sleep(delay)
                continue
            except OSError as error:
                delay = backoff_delay(attempt, 0.5, REST_RETRY_MAX_S)
                attempt += 1
                self.on_status(f"{self.exchange.name}: GET {action.url} failed ({error}); retry in {delay:.1f}s")
                await asyncio.sleep(delay)
                continue
            budget_pause = self.exchange.rest_pause_s(response.headers)
            if budget_pause > 0:
                self._rest_resume_at = max(self._rest_resume_at, time.monotonic() + budget_pause)
                self.on_status(f"{self.exchange.name}: REST weight budget nearly used; REST pauses {budget_pause:.0f}s")
            if key in self._fetching:
                self._fetching.discard(key)
                self._record(key + b"\n" + response.body, time.time_ns() // 1000, RecordKind.REST)
            return

    def _refuse(self, message: str) -> None:
        """Stop the feed for good: drain, flush, then the run ends with ``message``."""
        if self.summary.refused is None:
            self.summary.refused = message
            self.summary.errors = [*self.summary.errors, message][-20:]
            self.on_status(message)
        self._fetching.clear()
        if self._stop is not None:
            self._stop.set()

    def _seal(self, recovered: bool) -> None:
        self._batch.exchange_state_at_end = self.exchange.export_state()  # decoded exactly through the seal
        sealed = self.wal.seal(self._batch.reference_at_start, through=self._decoded_through)
        if sealed is not None and self._sealed is not None:
            self._sealed.put_nowait((sealed, self._batch, recovered))
        self._batch = _OpenBatch(reference_at_start=self.normalizer.reference.to_json(),
                                 exchange_state_at_start=self._batch.exchange_state_at_end)

    def _remember_books(self, snapshots: pa.Table) -> None:
        for row in snapshots.select(["symbol", "timestamp", "bids", "asks"]).to_pylist():
            if row["bids"] and row["asks"]:
                best_bid, best_ask = row["bids"][0], row["asks"][0]
                self._latest_books[row["symbol"]] = LatestBook(
                    self.exchange.name, row["symbol"], best_bid["price"], best_bid["quantity"],
                    best_ask["price"], best_ask["quantity"], int(row["timestamp"].timestamp() * 1_000_000))

    def _remember_latest(self, trades: pa.Table) -> None:
        """Each symbol's last trade of the tick, for the hot cache: its last row found in numpy, so only one
        row per symbol becomes Python objects, whatever the tick's size."""
        last_rows = highest_per_key(trades.column("symbol"), np.arange(trades.num_rows, dtype=np.int64))
        latest = trades.take(pa.array(list(last_rows.values()), pa.int64()))
        columns = latest.select(["symbol", "price", "quantity", "side", "trade_id"]).to_pydict()
        times_us = latest.column("timestamp").cast(pa.int64()).to_pylist()
        for symbol, price, quantity, side, trade_id, time_us in zip(*columns.values(), times_us, strict=True):
            self._latest[symbol] = LatestTrade(self.exchange.name, symbol, price, quantity, side, trade_id, time_us)
        self._open_candles.add(trades)

    async def _write_hot_cache(self) -> None:
        if not (self._latest or self._latest_books) or self._price_cache_factory is None:
            return
        try:
            if self._price_cache is None:
                self._price_cache = self._price_cache_factory()
            cache = self._price_cache
            trades, books = list(self._latest.values()), list(self._latest_books.values())
            candles = self._open_candles.candles()
            await asyncio.to_thread(self._write_hot, cache, trades, books, candles)
            if self._hot_cache_down:
                self.on_status(f"{self.exchange.name}: Redis reachable again; hot cache rewritten")
            self._hot_cache_down = False
        except Exception as error:  # the cache must never stop ingestion
            self._hot_cache_errors += 1
            if not self._hot_cache_down:
                self.on_status(f"{self.exchange.name}: Redis hot-cache write failed ({error}); "
                               "ingestion continues, retrying every tick")
            self._hot_cache_down = True

    @staticmethod
    def _write_hot(cache: PriceCache, trades: list[LatestTrade], books: list[LatestBook],
                   candles: list[CachedCandle]) -> None:
        with cache.one_round_trip():
            cache.write(trades)
            cache.write_books(books)
            cache.write_candles(candles)

    # --- flush path ------------------------------------------------------------------------------
    async def _flush_worker(self) -> None:
        assert self._sealed is not None
        while True:
            item = await self._sealed.get()
            if item is None:
                return
            sealed, batch, recovered = item
            attempt = 0
            self._flushing = True
            while True:
                try:
                    await self._flush(sealed, batch, recovered)
                    self._flushing = False
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
        written = await asyncio.to_thread(write_batch, self.store, self.exchange.name, batch_id, batch.tables())
        await asyncio.to_thread(self._archive, sealed, batch, batch_id)  # before mark_flushed drops the WAL files
        # The reference after this batch is the one the next sealed batch started from.
        next_reference = self._reference_after(sealed)
        self.wal.mark_flushed(sealed, next_reference, batch.exchange_state_at_end)
        self.summary.batches += 1
        self.summary.recovered_batches += int(recovered)
        self.summary.trades_flushed += written.trade_rows
        stats = self._session.stats if self._session is not None else None
        now, frames = time.monotonic(), self.summary.frames_received
        since, frames_before = self._rate_mark
        self._rate_mark = (now, frames)
        self.on_flush(FlushReport(
            exchange=self.exchange.name, written=written, wal_first=sealed.first, wal_last=sealed.last,
            recovered=recovered, flush_seconds=round(time.monotonic() - started, 4),
            connects=stats.connects if stats else 0, disconnects=stats.disconnects if stats else 0,
            last_error=stats.last_error if stats else None, hot_cache_errors=self._hot_cache_errors,
            rest_rate_limited=self.summary.rest_rate_limited, rest_paused_s=round(self.summary.rest_paused_s, 1),
            ignored_frames=self.summary.ignored_frames,
            trade_gaps_open=len(self.exchange.trade_gaps.open_gaps()),
            counters=dict(self.exchange.counters),
            messages_per_s=round((frames - frames_before) / max(now - since, 1e-3), 1),
        ))

    def _archive(self, sealed: SealedBatch, batch: _OpenBatch, batch_id: str) -> None:
        span = self.wal.written_span(sealed.first, sealed.last)
        if span is not None:
            archive_wal_span(self.store, self.exchange.name, batch_id, span, batch.reference_at_start,
                             batch.exchange_state_at_start)

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
            state_at_start = self.exchange.export_state()
            batch = self._replay_into_batch(normalizer, sealed.first, sealed.last)
            batch.reference_at_start = sealed.reference
            batch.exchange_state_at_start = state_at_start
            batch.exchange_state_at_end = self.exchange.export_state()
            checkpoint.pending.append(sealed)
            assert self._sealed is not None
            self._sealed.put_nowait((sealed, batch, True))
            self.normalizer.reference = normalizer.reference
        tail_start = self.wal.unflushed_tail_start()
        self._batch = _OpenBatch(reference_at_start=self.normalizer.reference.to_json())
        self.wal.start_batch_at(tail_start)
        self._decoded_through = self.wal.next_offset - 1
        state_at_start = self.exchange.export_state()
        tail = self._replay_into_batch(self.normalizer, tail_start, None)
        tail.exchange_state_at_start = state_at_start
        if tail.rows:
            self.on_status(f"{self.exchange.name}: re-read {tail.rows} rows from the WAL tail")
        tail.reference_at_start = self._batch.reference_at_start
        self._batch = tail

    def _replay_into_batch(self, normalizer: TradeNormalizer, first: int, last: int | None) -> _OpenBatch:
        """Decode WAL records as the live run did; their actions were performed back then."""
        batch = _OpenBatch()
        frames: list[bytes] = []
        received: list[int] = []
        kinds: list[RecordKind] = []
        for _offset, received_us, kind, payload in self.wal.records(first, last):
            frames.append(payload)
            received.append(received_us)
            kinds.append(RecordKind(kind))
        if frames:
            self._process(normalizer, frames, received, kinds, batch)
        return batch
