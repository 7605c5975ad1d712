"""The ingestion run against the real replay feed over loopback WebSockets: nothing lost, nothing doubled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from trading_platform.config import ExchangesFile
from trading_platform.exchanges.binance import Binance
from trading_platform.ingestion.runner import FlushReport, IngestionRunner
from trading_platform.replay import Fault, FaultKind, ReplayServer, running_replay_server
from trading_platform.settings import Settings
from trading_platform.storage.object_store import LocalObjectStore
from trading_platform.storage.redis_cache import PriceCache, connect
from trading_platform_tests.conftest import free_port
from trading_platform_tests.support import lake_trade_ids, read_dataset, replay_endpoints, wait_for


@pytest.fixture
def replay(exchanges_config: ExchangesFile) -> Iterator[ReplayServer]:
    with running_replay_server(exchanges_config, rate_per_symbol=20.0, seed=11) as server:
        yield server


@pytest.fixture
def binance(exchanges_config: ExchangesFile) -> Binance:
    return Binance(exchanges_config.exchanges["binance"])


def config(tmp_path: Path, **overrides: float) -> Settings:
    values: dict = {"batch_max_age_s": 1.0, "hot_tick_s": 0.2, "reconnect_initial_s": 0.1, "reconnect_max_s": 0.5}
    values.update(overrides)
    # Not validated: some tests need a value no user may set (a batch age of 0: every tick flushes).
    return Settings(state_dir=tmp_path).model_copy(update=values)


def url_for(server: ReplayServer, binance: Binance) -> str:
    return binance.use_endpoints(replay_endpoints(binance.config, server.host, server.port))


def run_in_thread(runner: IngestionRunner, stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    return thread


def test_stop_drains_every_sent_trade_into_the_lake_exactly_once(
        tmp_path: Path, replay: ReplayServer, binance: Binance) -> None:
    store = LocalObjectStore(tmp_path / "lake")
    reports: list[FlushReport] = []
    runner = IngestionRunner(binance, url_for(replay, binance), store, config(tmp_path), on_flush=reports.append)
    stop = threading.Event()
    thread = run_in_thread(runner, stop)
    wait_for(lambda: len(reports) >= 2, 20, "two flushed batches")
    stop.set()
    thread.join(20)
    ids = lake_trade_ids(store)
    assert len(ids) == len(set(ids)), "a trade was written twice"
    assert set(ids) == replay.ledger.trades("binance")
    assert runner.summary.drained_cleanly is True
    assert sum(r.written.trade_rows for r in reports) == len(ids)


def test_every_flush_reports_rows_symbols_time_range_and_lag(
        tmp_path: Path, replay: ReplayServer, binance: Binance) -> None:
    reports: list[FlushReport] = []
    runner = IngestionRunner(binance, url_for(replay, binance), LocalObjectStore(tmp_path / "lake"),
                             config(tmp_path), on_flush=reports.append)
    stop = threading.Event()
    thread = run_in_thread(runner, stop)
    wait_for(lambda: reports and reports[0].written.trade_rows > 0, 20, "a non-empty flush")
    stop.set()
    thread.join(20)
    written = reports[0].written
    assert written.symbols and set(written.symbols) <= set(binance.symbols)
    assert written.first_trade_us is not None and written.last_trade_us is not None
    assert written.first_trade_us <= written.last_trade_us
    assert written.max_receive_lag_ms is not None and written.max_receive_lag_ms >= 0
    trade_keys = [k for k in written.keys if k.startswith("raw/trades/")]
    assert trade_keys and all(k.startswith("raw/trades/exchange=binance/symbol=") for k in trade_keys)
    assert all("/exchange=binance/" in k for k in written.keys)


def test_bad_frames_are_quarantined_with_raw_text_and_the_feed_goes_on(
        tmp_path: Path, replay: ReplayServer, binance: Binance) -> None:
    store = LocalObjectStore(tmp_path / "lake")
    runner = IngestionRunner(binance, url_for(replay, binance), store, config(tmp_path))
    stop = threading.Event()
    thread = run_in_thread(runner, stop)
    wait_for(lambda: runner.summary.frames_received > 50, 20, "frames")
    replay.inject(Fault(FaultKind.MALFORMED_JSON, exchange="binance", count=2))
    replay.inject(Fault(FaultKind.WRONG_TYPE, exchange="binance", variant="trade_id_string"))
    replay.inject(Fault(FaultKind.UNKNOWN_SYMBOL, exchange="binance"))
    received = runner.summary.frames_received
    wait_for(lambda: runner.summary.frames_received > received + 100, 20, "frames after the faults")
    stop.set()
    thread.join(20)
    quarantine = read_dataset(store, "quarantine")
    reasons = sorted(quarantine.column("reason").to_pylist())
    assert reasons == ["malformed_json", "malformed_json", "unknown_symbol", "wrong_type"]
    assert all(raw for raw in quarantine.column("raw").to_pylist())
    assert set(lake_trade_ids(store)) == replay.ledger.trades("binance")


def run_with_hot_cache(tmp_path: Path, replay: ReplayServer, binance: Binance, redis_url: str,
                       until: Callable[[PriceCache], bool], what: str) -> LocalObjectStore:
    """Ingest with the Redis hot cache until ``until(cache)`` holds, then stop (draining); the run's lake."""
    store = LocalObjectStore(tmp_path / "lake")
    runner = IngestionRunner(binance, url_for(replay, binance), store, config(tmp_path),
                             price_cache=lambda: PriceCache(connect(redis_url)))
    stop = threading.Event()
    thread = run_in_thread(runner, stop)
    cache = PriceCache(connect(redis_url))
    wait_for(lambda: until(cache), 30, what)
    stop.set()
    thread.join(20)
    return store


def test_hot_cache_holds_each_symbols_last_trade(
        tmp_path: Path, replay: ReplayServer, binance: Binance, redis_url: str) -> None:
    # An entry appears with a symbol's first book top, before its first trade: wait for a trade in each.
    run_with_hot_cache(tmp_path, replay, binance, redis_url,
                       lambda cache: sum("trade_id" in e for e in cache.read_all()) == 20,
                       "a cached trade for all 20 symbols")
    cached = {e["symbol"]: e for e in PriceCache(connect(redis_url)).read_all()}
    for symbol in binance.symbols:
        last_sent = replay.ledger.ranges("binance", binance.native_symbol(symbol))[-1][1]
        assert cached[symbol]["trade_id"] == str(last_sent)


def test_hot_cache_holds_each_symbols_open_minute_candle(
        tmp_path: Path, replay: ReplayServer, binance: Binance, redis_url: str) -> None:
    """The cached 1-minute candle of each symbol is its newest minute of trades, as the lake has them."""
    store = run_with_hot_cache(tmp_path, replay, binance, redis_url,
                               lambda cache: all(cache.read_candle("1m", "binance", s) for s in binance.symbols),
                               "an open candle for all 20 symbols")
    cache = PriceCache(connect(redis_url))
    trades = pl.from_arrow(read_dataset(store, "trades"))
    assert isinstance(trades, pl.DataFrame)
    for symbol in binance.symbols:
        cached = cache.read_candle("1m", "binance", symbol)
        minute = datetime.fromtimestamp(int(cached["bucket_us"]) / 1e6, UTC)
        mine = trades.filter((pl.col("symbol") == symbol) & (pl.col("timestamp").dt.truncate("1m") == minute))
        ordered = mine.with_columns(pl.col("trade_id").cast(pl.Int64)).sort("timestamp", "trade_id")
        assert int(cached["trade_count"]) == ordered.height > 0, symbol
        assert (float(cached["open"]), float(cached["close"])) == (ordered["price"][0], ordered["price"][-1])
        assert (float(cached["high"]), float(cached["low"])) == (ordered["price"].max(), ordered["price"].min())
        assert float(cached["volume"]) == pytest.approx(ordered["quantity"].sum(), rel=1e-9)
        assert trades.filter(pl.col("symbol") == symbol)["timestamp"].max() < minute + timedelta(minutes=1)


def test_an_unreachable_endpoint_is_retried_with_backoff_and_reported(tmp_path: Path, binance: Binance,
                                                                      exchanges_config: ExchangesFile) -> None:
    port = free_port()
    statuses: list[str] = []
    runner = IngestionRunner(binance, binance.use_endpoints(replay_endpoints(binance.config, "127.0.0.1", port)),
                             LocalObjectStore(tmp_path / "lake"), config(tmp_path), on_status=statuses.append)
    stop = threading.Event()
    thread = run_in_thread(runner, stop)
    wait_for(lambda: sum("reconnecting in" in s for s in statuses) >= 3, 20, "three retries")
    with running_replay_server(exchanges_config, port=port, rate_per_symbol=20.0, seed=3) as server:
        wait_for(lambda: runner.summary.frames_received > 0 or any("connected to" in s for s in statuses), 20,
                 "a connection once the endpoint is up")
        stop.set()
        thread.join(20)
        assert set(lake_trade_ids(LocalObjectStore(tmp_path / "lake"))) == server.ledger.trades("binance")
    assert any("Connect" in s or "refused" in s for s in statuses)
    assert runner.summary.disconnects >= 3


def test_a_dropped_connection_reconnects_and_loses_nothing_received(
        tmp_path: Path, replay: ReplayServer, binance: Binance) -> None:
    store = LocalObjectStore(tmp_path / "lake")
    runner = IngestionRunner(binance, url_for(replay, binance), store, config(tmp_path))
    stop = threading.Event()
    thread = run_in_thread(runner, stop)
    wait_for(lambda: runner.summary.frames_received > 50, 20, "frames")
    replay.inject(Fault(FaultKind.DROP_CONNECTIONS, exchange="binance"))
    wait_for(lambda: runner._session.stats.connects >= 2, 20, "a reconnect")
    received = runner.summary.frames_received
    wait_for(lambda: runner.summary.frames_received > received + 50, 20, "frames after the reconnect")
    stop.set()
    thread.join(20)
    ids = lake_trade_ids(store)
    assert len(ids) == len(set(ids))
    # Frames in flight when the TCP connection was cut never reached us; everything received is there.
    assert runner.summary.trades_flushed == len(ids)
    assert set(ids) <= replay.ledger.trades("binance")


SIGTERM_SCRIPT = """
import sys
from trading_platform.config import Endpoints, load_exchanges
from trading_platform.exchanges.binance import Binance
from trading_platform.ingestion.runner import IngestionRunner
from trading_platform.settings import Settings
from trading_platform.storage.object_store import LocalObjectStore
from trading_platform.ingestion.runner import stop_on_signals
import threading
from pathlib import Path
url, rest_url, root, config_file = sys.argv[1:5]
binance = Binance(load_exchanges(Path(config_file)).exchanges["binance"])
runner = IngestionRunner(binance, binance.use_endpoints(Endpoints(ws_url=url, rest_url=rest_url)),
                         LocalObjectStore(Path(root) / "lake"),
                         Settings(state_dir=Path(root), batch_max_age_s=1.0, hot_tick_s=0.2),
                         on_status=lambda m: print(m, flush=True))
stop = threading.Event()
with stop_on_signals(stop):
    summary = runner.run(stop)
print("SUMMARY", summary.trades_flushed, summary.drained_cleanly, flush=True)
"""


@pytest.mark.slow  # a run process drained by SIGTERM: ~6 s: make test runs it, make test-fast does not
def test_sigterm_drains_and_flushes_everything_received(tmp_path: Path, replay: ReplayServer) -> None:
    from trading_platform_tests.conftest import CONFIG_FILE

    process = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_SCRIPT, f"{replay.ws_base_url}/binance/stream",
         f"{replay.http_base_url}/binance", str(tmp_path), str(CONFIG_FILE)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ),
    )
    store = LocalObjectStore(tmp_path / "lake")
    wait_for(lambda: len(lake_trade_ids(store)) > 0, 60, "a first flushed batch")
    time.sleep(0.5)  # mid-batch
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "SUMMARY" in output and "True" in output.split("SUMMARY")[1], output
    ids = lake_trade_ids(store)
    assert len(ids) == len(set(ids))
    assert set(ids) == replay.ledger.trades("binance")


@pytest.mark.slow  # a run process killed and recovered: ~10 s: make test runs it, make test-fast does not
def test_kill_9_loses_nothing_that_reached_the_wal(tmp_path: Path, replay: ReplayServer, binance: Binance) -> None:
    from trading_platform.ingestion.wal import WriteAheadLog
    from trading_platform_tests.conftest import CONFIG_FILE

    with (tmp_path / "killed_run.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", SIGTERM_SCRIPT, f"{replay.ws_base_url}/binance/stream",
             f"{replay.http_base_url}/binance", str(tmp_path), str(CONFIG_FILE)],
            stdout=log, stderr=subprocess.STDOUT,
        )
    store = LocalObjectStore(tmp_path / "lake")
    try:  # a fresh interpreter on a loaded 2-core machine can take a while to import and connect
        wait_for(lambda: len(lake_trade_ids(store)) > 0, 60, "a first flushed batch")
    except AssertionError:
        process.kill()
        printed = (tmp_path / "killed_run.log").read_text()
        raise AssertionError(f"no batch flushed; the run printed:\n{printed}") from None
    time.sleep(0.7)  # mid-batch: some frames only in the WAL
    process.kill()
    process.wait()
    wal = WriteAheadLog(tmp_path / "wal" / "binance")
    received = [payload for _, _, kind, payload in wal.records(0) if kind == 0]
    wal.close()
    # Decoded by an instance of its own: decoding moves trade-id marks, which the recovering run must not see.
    reader = Binance(binance.config)
    in_wal = {(row["native_symbol"], row["trade_id"])
              for row in reader.decode(received, [0] * len(received)).trades.to_pylist()}
    before = set(lake_trade_ids(store))
    assert in_wal - before, "the kill left nothing unflushed; the test did not exercise recovery"

    runner = IngestionRunner(binance, url_for(replay, binance), store, config(tmp_path))
    stop = threading.Event()
    thread = run_in_thread(runner, stop)
    wait_for(lambda: runner.summary.batches >= 2, 20, "recovery and a live batch")
    time.sleep(2)  # the gap backfill answers within a batch or two
    stop.set()
    thread.join(20)
    ids = lake_trade_ids(store)
    assert len(ids) == len(set(ids)), "recovery duplicated a trade"
    assert (before | in_wal) <= set(ids)
    # What the killed process never read (and what happened while no run was connected) came back
    # through the trade-gap backfill: the lake holds exactly what the exchange sent.
    wait_for(lambda: set(lake_trade_ids(store)) == replay.ledger.trades("binance"), 1, "exact accounting")


# --- the WAL seam, poison frames, REST politeness -------------------------------------------------------------
def _trade_frame(trade_id: int) -> bytes:
    return (f'{{"stream":"btcusdt@trade","data":{{"e":"trade","E":1700000000000,"s":"BTCUSDT","t":{trade_id},'
            f'"p":"90000.00","q":"0.25","T":1700000000000,"m":true,"M":true}}}}').encode()  # near the replay price


def test_a_frame_arriving_while_a_tick_awaits_is_in_the_next_sealed_range(tmp_path: Path, binance: Binance,
                                                                         redis_url: str) -> None:
    """Deterministic interleaving: a frame lands while the tick awaits the Redis write. The batch sealed at
    the end of that tick must not claim it; after the batch is flushed and the process dies, recovery
    re-reads it from the WAL (before the fix it was inside the flushed range, and lost)."""
    import asyncio

    store = LocalObjectStore(tmp_path / "lake")
    runner: IngestionRunner

    class FrameDuringWrite(PriceCache):
        def write(self, trades, publish=True):  # type: ignore[no-untyped-def]
            runner._on_frame(_trade_frame(11), 2)  # arrives mid-await: the receive loop runs meanwhile
            return super().write(trades, publish)

    runner = IngestionRunner(binance, "ws://127.0.0.1:9/unused", store, config(tmp_path, batch_max_age_s=0.0),
                             price_cache=lambda: FrameDuringWrite(connect(redis_url)))

    async def one_tick_then_flush() -> None:
        runner._sealed = asyncio.Queue()
        runner._recover()
        runner._on_frame(_trade_frame(10), 1)
        await runner._tick(final=False)
        sealed, batch, recovered = runner._sealed.get_nowait()
        await runner._flush(sealed, batch, recovered)

    asyncio.run(one_tick_then_flush())
    assert runner.wal.checkpoint.flushed_through == 0  # frame 10 only; frame 11 (offset 1) is not claimed
    assert [t for _, t in lake_trade_ids(store)] == ["10"]
    runner.wal.close()  # the process dies here: frame 11 is only in the WAL

    recovered = IngestionRunner(Binance(binance.config), "ws://127.0.0.1:9/unused", store, config(tmp_path))

    async def recover_and_seal() -> None:
        recovered._sealed = asyncio.Queue()
        recovered._recover()
        await recovered._tick(final=True)
        while not recovered._sealed.empty():
            await recovered._flush(*recovered._sealed.get_nowait())

    asyncio.run(recover_and_seal())
    recovered.wal.close()
    assert sorted(t for _, t in lake_trade_ids(store)) == ["10", "11"]


def test_a_poison_frame_in_the_wal_is_quarantined_on_recovery(tmp_path: Path, replay: ReplayServer,
                                                              binance: Binance) -> None:
    from trading_platform.ingestion.wal import WriteAheadLog

    wal = WriteAheadLog(tmp_path / "wal" / "binance")
    wal.append(1, _trade_frame(500))
    wal.append(2, b'{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTC\xffUSDT"}}')  # not UTF-8
    wal.append(3, _trade_frame(501))
    wal.close()
    store = LocalObjectStore(tmp_path / "lake")
    runner = IngestionRunner(binance, url_for(replay, binance), store, config(tmp_path))
    stop = threading.Event()
    thread = run_in_thread(runner, stop)
    wait_for(lambda: runner.summary.batches >= 2, 20, "recovery and a live batch")
    stop.set()
    thread.join(20)
    assert not thread.is_alive()
    quarantined = read_dataset(store, "quarantine").to_pylist()
    assert [q["reason"] for q in quarantined] == ["invalid_utf8"]
    assert {"500", "501"} <= {t for _, t in lake_trade_ids(store)}


def test_a_rest_refusal_for_good_stops_the_feed_with_the_reason(tmp_path: Path, replay: ReplayServer,
                                                                binance: Binance) -> None:
    from trading_platform.ingestion.runner import FeedRefused

    replay.inject(Fault(FaultKind.REST_ERROR, exchange="binance", seconds=60, status=451))
    store = LocalObjectStore(tmp_path / "lake")
    runner = IngestionRunner(binance, url_for(replay, binance), store, config(tmp_path))
    with pytest.raises(FeedRefused, match="HTTP 451") as refused:
        runner.run(threading.Event())  # the first book snapshot is refused: drain, flush, stop
    assert "enabled: false" in str(refused.value)
    assert runner.summary.trades_flushed > 0 and runner.summary.unflushed_batches_left_in_wal == 0
    # The 20 book snapshots were in flight at once: each was refused once, and none was asked again.
    assert replay.faults.get(FaultKind.REST_ERROR, "binance") <= len(binance.symbols)


def test_rate_limiting_pauses_every_rest_call_for_retry_after(tmp_path: Path, replay: ReplayServer,
                                                               binance: Binance) -> None:
    replay.inject(Fault(FaultKind.REST_ERROR, exchange="binance", seconds=3, status=429))
    store = LocalObjectStore(tmp_path / "lake")
    statuses: list[str] = []
    runner = IngestionRunner(binance, url_for(replay, binance), store, config(tmp_path), on_status=statuses.append)
    stop = threading.Event()
    thread = run_in_thread(runner, stop)
    wait_for(lambda: binance.synced["BTC-USDT"], 30, "the book to sync once the exchange answers again")
    stop.set()
    thread.join(20)
    # 20 books ask at once; each meets the 429 about once, then all REST waits out Retry-After (3 s).
    assert runner.summary.rest_rate_limited >= 1
    assert replay.faults.get(FaultKind.REST_ERROR, "binance") <= 2 * len(binance.symbols)
    assert any("rate-limiting REST (HTTP 429, Retry-After 3s)" in s for s in statuses), statuses[:5]


def test_a_batch_sealed_but_not_flushed_is_recovered_whole_after_a_crash(tmp_path: Path, binance: Binance) -> None:
    """The checkpoint's exchange state belongs to the last flushed batch: re-decoding the next, unflushed
    batch must not find its trades already seen (which would drop them as duplicates)."""
    import asyncio

    store = LocalObjectStore(tmp_path / "lake")
    runner = IngestionRunner(binance, "ws://127.0.0.1:9/unused", store, config(tmp_path, batch_max_age_s=0.0))

    async def two_batches_one_flushed() -> None:
        runner._sealed = asyncio.Queue()
        runner._recover()
        for trade_id in (1, 2, 3):
            runner._on_frame(_trade_frame(trade_id), trade_id)
        await runner._tick(final=False)
        for trade_id in (4, 5, 6):
            runner._on_frame(_trade_frame(trade_id), trade_id)
        await runner._tick(final=False)
        await runner._flush(*runner._sealed.get_nowait())  # the first batch only; then the process dies

    asyncio.run(two_batches_one_flushed())
    assert runner.wal.checkpoint.exchange_state["last_trade_id"] == {"BTC-USDT": 3}
    runner.wal.close()

    recovered = IngestionRunner(Binance(binance.config), "ws://127.0.0.1:9/unused", store, config(tmp_path))

    async def recover() -> None:
        recovered._sealed = asyncio.Queue()
        recovered._recover()
        await recovered._tick(final=True)
        while not recovered._sealed.empty():
            await recovered._flush(*recovered._sealed.get_nowait())

    asyncio.run(recover())
    recovered.wal.close()
    assert sorted(int(t) for _, t in lake_trade_ids(store)) == [1, 2, 3, 4, 5, 6]


def _frame(native: str, trade_id: int, price: str, time_ms: int) -> bytes:
    return (f'{{"stream":"{native.lower()}@trade","data":{{"e":"trade","E":{time_ms},"s":"{native}",'
            f'"t":{trade_id},"p":"{price}","q":"0.25","T":{time_ms},"m":false,"M":true}}}}').encode()


def test_a_tick_remembers_each_symbols_last_trade_of_the_tick(tmp_path: Path, binance: Binance) -> None:
    import asyncio

    runner = IngestionRunner(binance, "ws://127.0.0.1:9/unused", LocalObjectStore(tmp_path / "lake"),
                             config(tmp_path))

    async def one_tick() -> None:
        runner._sealed = asyncio.Queue()
        runner._recover()
        for frame in (_frame("BTCUSDT", 10, "90000.00", 1_700_000_000_001),
                      _frame("ETHUSDT", 7, "3000.00", 1_700_000_000_002),
                      _frame("BTCUSDT", 11, "90001.00", 1_700_000_000_003)):
            runner._on_frame(frame, 1)
        await runner._tick(final=False)

    asyncio.run(one_tick())
    runner.wal.close()
    latest = {symbol: (t.trade_id, t.price, t.side, t.trade_time_us) for symbol, t in runner._latest.items()}
    assert latest == {"BTC-USDT": ("11", 90001.0, "buy", 1_700_000_000_003_000),
                      "ETH-USDT": ("7", 3000.0, "buy", 1_700_000_000_002_000)}
