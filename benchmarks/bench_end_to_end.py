"""One Binance ingestion run end to end: the bundled replay feed at fixed rates (trades and depth mixed, all
pairs) through a real ``IngestionRunner`` into a local lake and an embedded Valkey.

The run is a child process of its own, so its CPU (``/proc/<pid>/stat`` over the measured window) and peak
RSS (its ``VmHWM``) are its alone; the replay server runs in this process, where its ledger says what it
sent. Latencies are measured from outside: receive -> lake from each lake row's ``received_at`` to its
file's write time, receive -> Redis from sampling the cached entries and looking their trades' receive
time up in the lake.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from benchmarks.harness import (
    ConnectionDrops,
    Figure,
    at_most,
    cpu_seconds,
    executed_trades,
    spawned,
    stop_child,
)
from trading_platform.config import ExchangesFile, load_exchanges
from trading_platform.dev.valkey import EmbeddedValkey
from trading_platform.exchanges.registry import exchange_for
from trading_platform.ingestion.process import prepare_ingestion_process
from trading_platform.ingestion.runner import FlushReport, IngestionRunner
from trading_platform.replay import ReplayServer, running_replay_server
from trading_platform.schema import MARKET_TRADES
from trading_platform.settings import Settings, load_settings
from trading_platform.storage.object_store import LocalObjectStore
from trading_platform.storage.redis_cache import PriceCache, connect, price_key

EXCHANGE = "binance"
RATES = (20_000, 50_000)  # messages/s asked of the replay feed across all pairs of the exchange
DEPTH_PER_SYMBOL = 10  # Binance @depth@100ms: one diff per symbol per 100 ms
BOOK_RATE_PER_SYMBOL = 50.0  # maker events/s per symbol, so each depth diff carries several levels
SECONDS, QUICK_SECONDS = 60.0, 5.0
SAMPLE_EVERY_S = 0.1  # Redis sampling cadence
CONNECT_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 120.0
RSS_TARGET_MB = 300


@dataclass
class RunReport:
    """What the ingestion child reports after its run drained."""

    frames_received: int
    trades_flushed: int
    batches: int
    connects: int
    disconnects: int
    drained_cleanly: bool | None
    errors: list[str]
    peak_rss_kb: int
    cpu_seconds: float
    run_seconds: float
    flush_seconds: list[float] = field(default_factory=list)
    # Where trades the lake lacks can still be: batches left in the WAL for the next run, and gaps in the trade
    # ids still waiting for their REST backfill when the run stopped (how many ids they span).
    unflushed_batches: int = 0
    open_trade_gaps: int = 0
    open_gap_trades: int = 0


def _ingest_child(conn: Connection, replay_port: int, state_dir: str, redis_url: str) -> None:
    """The ingestion run with the platform's default knobs; stops (drains) when the parent says so."""
    prepare_ingestion_process()  # as the Dagster op does, before the exchange is built
    config = Settings(state_dir=Path(state_dir), feed_mode="replay", replay_port=replay_port)
    exchange = exchange_for(load_exchanges(config.exchanges_file).exchanges[EXCHANGE])
    # The run's own exchange gives the URL: use_endpoints also points its REST calls (depth snapshots) at the
    # replay feed, where they would otherwise go to the exchange's live endpoint.
    url = exchange.use_endpoints(exchange.config.endpoints(config))
    flushes: list[float] = []

    def on_flush(report: FlushReport) -> None:
        flushes.append(report.flush_seconds)

    runner = IngestionRunner(exchange, url, LocalObjectStore(Path(state_dir) / "lake"), config,
                             price_cache=lambda: PriceCache(connect(redis_url)), on_flush=on_flush,
                             on_status=lambda message: None)
    stop = threading.Event()
    threading.Thread(target=lambda: (conn.recv(), stop.set()), daemon=True).start()
    started = time.monotonic()
    summary = runner.run(stop)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    open_gaps = exchange.trade_gaps.open_gaps()
    conn.send(RunReport(summary.frames_received, summary.trades_flushed, summary.batches, summary.connects,
                        summary.disconnects, summary.drained_cleanly, summary.errors, _vm_hwm_kb(os.getpid()),
                        usage.ru_utime + usage.ru_stime, time.monotonic() - started, flushes,
                        summary.unflushed_batches_left_in_wal, len(open_gaps), sum(g.size for g in open_gaps)))


def _vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0



def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])



@dataclass
class Window:
    """What the parent saw over the measured window."""

    seconds: float = 0.0
    trades_sent: int = 0  # ledger: distinct trades handed to the socket during the window
    cpu_seconds: float = 0.0
    replay_cpu_seconds: float = 0.0  # this process: the replay server's thread (the sampler is idle mostly)
    trades_executed: int = 0  # what the replay's markets executed: the asked rate, sent or not
    redis_samples: list[tuple[int, str, str]] = field(default_factory=list)  # (sampled at us, symbol, trade id)


def _sample_redis(redis_url: str, symbols: list[str], seconds: float, window: Window) -> None:
    client = connect(redis_url)
    keys = [price_key(EXCHANGE, s) for s in symbols]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, ["symbol", "trade_id"])
        now_us = time.time_ns() // 1000
        for symbol, trade_id in pipe.execute():
            if symbol and trade_id:
                window.redis_samples.append((now_us, symbol, trade_id))
        time.sleep(SAMPLE_EVERY_S)
    client.close()


def _run_at(rate: int, seconds: float, exchanges: ExchangesFile, tmp: Path) -> list[Figure]:
    symbols = exchanges.exchanges[EXCHANGE].symbols
    trade_rate = (rate - DEPTH_PER_SYMBOL * len(symbols)) / len(symbols)
    dropped = ConnectionDrops()
    logging.getLogger("trading_platform.replay").addHandler(dropped)
    valkey = EmbeddedValkey(_free_port(), tmp / "valkey")
    valkey.start()
    try:
        with running_replay_server(exchanges, rate_per_symbol=trade_rate, book_rate_per_symbol=BOOK_RATE_PER_SYMBOL,
                                   seed=5) as replay:
            window, report = _ingest(replay, exchanges, tmp, valkey.url, seconds)
            trades_sent_total = replay.ledger.count(EXCHANGE)
            ranges = {native: replay.ledger.ranges(EXCHANGE, native) for native in replay.ledger.counts(EXCHANGE)}
    finally:
        valkey.stop()
        logging.getLogger("trading_platform.replay").removeHandler(dropped)
    lake = _read_lake(tmp / "lake", {(symbol, trade_id) for _, symbol, trade_id in window.redis_samples})
    return _figures(rate, trade_rate * len(symbols), seconds, window, report, trades_sent_total, ranges, lake,
                    dropped.drops)


def _ingest(replay: ReplayServer, exchanges: ExchangesFile, tmp: Path, redis_url: str,
            seconds: float) -> tuple[Window, RunReport]:
    exchange = exchange_for(exchanges.exchanges[EXCHANGE])
    with spawned(_ingest_child, replay.port, str(tmp), redis_url) as (process, conn):
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not replay.connections() or replay.ledger.count(EXCHANGE) == 0:
            if time.monotonic() > deadline or not process.is_alive():
                raise RuntimeError(f"the ingestion run did not connect within {CONNECT_TIMEOUT_S:g} s")
            time.sleep(0.1)
        time.sleep(1.0)  # past the connect and the first book snapshots: the window measures the steady state
        window = Window()
        sent_before, executed_before = replay.ledger.count(EXCHANGE), executed_trades(replay, EXCHANGE)
        cpu_before, replay_cpu_before = cpu_seconds(process.pid or 0), cpu_seconds(os.getpid())
        started = time.monotonic()
        _sample_redis(redis_url, exchange.symbols, seconds, window)
        window.seconds = time.monotonic() - started
        window.cpu_seconds = cpu_seconds(process.pid or 0) - cpu_before
        window.replay_cpu_seconds = cpu_seconds(os.getpid()) - replay_cpu_before
        window.trades_sent = replay.ledger.count(EXCHANGE) - sent_before
        window.trades_executed = executed_trades(replay, EXCHANGE) - executed_before
        return window, stop_child(conn, DRAIN_TIMEOUT_S, RunReport, "the ingestion run (draining)")


def _limit(asked: float, window: Window, drops: int) -> str:
    """Who held the rate below the asked one: a side that used (nearly) a whole core had no headroom left."""
    if window.trades_sent >= 0.95 * asked * window.seconds and not drops:
        return "none"
    saturated = [name for name, cpu in (("replay server", window.replay_cpu_seconds),
                                        ("ingestion", window.cpu_seconds)) if cpu / window.seconds >= 0.85]
    # Neither side near a core: the machine's other load starved them (the detail has both sides' cores).
    limit = " and ".join(saturated) or "CPU contention"
    return f"{limit}, connection dropped" if drops else limit


@dataclass
class Lake:
    """The trades the run stored: per native symbol its distinct trade ids, and every row's latencies."""

    ids: dict[str, np.ndarray[Any, Any]]
    rows: int
    receive_to_lake_ms: np.ndarray[Any, Any]
    received_us: dict[tuple[str, str], int]  # (symbol, trade id) -> receive time, of the trades asked for


def _read_lake(root: Path, wanted: set[tuple[str, str]]) -> Lake:
    ids: dict[str, list[np.ndarray[Any, Any]]] = {}
    lags: list[np.ndarray[Any, Any]] = []
    received: dict[tuple[str, str], int] = {}
    rows = 0
    for path in sorted((root / MARKET_TRADES.lake_prefix()).rglob("*.parquet")):
        table = pq.read_table(path, columns=["symbol", "native_symbol", "trade_id", "received_at"])
        written_us = path.stat().st_mtime_ns // 1000  # the file's write time: when the rows reached the lake
        received_us = table.column("received_at").cast("int64").to_numpy()
        lags.append((written_us - received_us) / 1000)
        native = table.column("native_symbol")[0].as_py()
        trade_ids = table.column("trade_id").to_pylist()
        ids.setdefault(native, []).append(np.array(trade_ids, dtype=np.int64))
        symbol = table.column("symbol")[0].as_py()
        received.update(((symbol, t), int(r)) for t, r in zip(trade_ids, received_us, strict=True)
                        if (symbol, t) in wanted)
        rows += table.num_rows
    return Lake({n: np.unique(np.concatenate(parts)) for n, parts in ids.items()}, rows,
                np.concatenate(lags) if lags else np.zeros(0), received)


def _stored_of_sent(lake: Lake, ranges: dict[str, list[tuple[int, int]]]) -> int:
    """How many of the trades the replay sent (its ledger's id ranges) are in the lake."""
    stored = 0
    for native, spans in ranges.items():
        ids = lake.ids.get(native, np.zeros(0, np.int64))
        for first, last in spans:
            stored += int(np.searchsorted(ids, last, "right") - np.searchsorted(ids, first, "left"))
    return stored


def _figures(rate: int, trade_rate: float, seconds: float, window: Window, report: RunReport, sent: int,
             ranges: dict[str, list[tuple[int, int]]], lake: Lake, drops: int) -> list[Figure]:
    section = f"end to end {rate // 1000}k msgs/s"
    stored = _stored_of_sent(lake, ranges)
    lost = sent - stored
    achieved = window.trades_sent / window.seconds
    limit = _limit(trade_rate, window, drops)
    cores = window.cpu_seconds / window.seconds
    redis_ages = np.array([(at - lake.received_us[(symbol, trade_id)]) / 1000
                           for at, symbol, trade_id in window.redis_samples
                           if (symbol, trade_id) in lake.received_us])
    detail: dict[str, Any] = {
        "asked_msgs_per_s": rate, "asked_trades_per_s": round(trade_rate), "window_seconds": round(window.seconds, 1),
        "replay_trades_per_s": round(achieved), "limit": limit,
        "replay_executed_trades_per_s": round(window.trades_executed / window.seconds),
        "replay_process_cores": round(window.replay_cpu_seconds / window.seconds, 2),
        "replay_trades_sent": sent, "trades_in_lake": stored,
        "lake_rows": lake.rows, "duplicates_in_lake": lake.rows - sum(len(v) for v in lake.ids.values()),
        "frames_received": report.frames_received, "received_msgs_per_s": round(report.frames_received /
                                                                               report.run_seconds),
        "connects": report.connects, "disconnects": report.disconnects, "connection_drops": drops,
        "drained_cleanly": report.drained_cleanly, "batches": report.batches, "errors": report.errors[-3:],
        "unflushed_batches_left_in_wal": report.unflushed_batches, "open_trade_gaps": report.open_trade_gaps,
        "trade_ids_in_open_gaps": report.open_gap_trades,
        "flush_seconds_max": max(report.flush_seconds, default=0.0),
        "run_cpu_seconds_whole_run": round(report.cpu_seconds, 1), "run_seconds": round(report.run_seconds, 1),
        "redis_samples": len(window.redis_samples), "redis_samples_matched": int(redis_ages.size),
        "configured_seconds": seconds,
    }
    lake_p = np.percentile(lake.receive_to_lake_ms, [50, 99]) / 1000 if lake.receive_to_lake_ms.size else [0, 0]
    redis_p = np.percentile(redis_ages, [50, 99]) / 1000 if redis_ages.size else [float("nan")] * 2
    figures = [
        Figure(section, "trades sent by the replay", sent, "trades", detail=detail),
        at_most(section, "trades lost (sent, not in the lake)", lost, "trades", 0, detail),
        Figure(section, f"replay sent / asked (limit: {limit})", achieved / trade_rate, "x", detail=detail),
        Figure(section, "ingestion CPU", cores, "cores", detail=detail) if rate < max(RATES) else
        at_most(section, "ingestion CPU", cores, "cores", 1, detail),
        at_most(section, "ingestion peak RSS", report.peak_rss_kb / 1024, "MB", RSS_TARGET_MB, detail),
        Figure(section, "receive->lake p50", float(lake_p[0]), "s", detail=detail),
        Figure(section, "receive->lake p99", float(lake_p[1]), "s", detail=detail),
        Figure(section, "receive->Redis p50", float(redis_p[0]), "s", detail=detail),
        at_most(section, "receive->Redis p99", float(redis_p[1]), "s", 1, detail),
    ]
    return figures


def run(quick: bool) -> list[Figure]:
    every = load_exchanges(load_settings().exchanges_file)
    # Only this exchange's markets tick, so the replay server's time goes to the feed being measured.
    exchanges = ExchangesFile(exchanges={EXCHANGE: every.exchanges[EXCHANGE]})
    figures: list[Figure] = []
    for rate in RATES:
        with tempfile.TemporaryDirectory(prefix="tp-bench-e2e-") as tmp:
            figures += _run_at(rate, QUICK_SECONDS if quick else SECONDS, exchanges, Path(tmp))
    return figures
