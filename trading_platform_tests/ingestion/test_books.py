"""All three exchanges through the ingestion run against the replay feed: books sync and are emitted,
gaps and checksum failures are recorded and resynced, nothing is emitted out of sync, trades flow."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.compute as pc
import pytest

from trading_platform.config import ExchangesFile
from trading_platform.exchanges.base import Exchange
from trading_platform.exchanges.registry import exchange_for
from trading_platform.ingestion.runner import IngestionRunner
from trading_platform.replay import Fault, FaultKind, ReplayServer, running_replay_server
from trading_platform.settings import Settings
from trading_platform.storage.object_store import LocalObjectStore
from trading_platform_tests.support import lake_trade_ids, read_dataset, replay_endpoints, wait_for

EXCHANGES = ["binance", "coinbase", "kraken"]
BOOK_FAULT = {"binance": FaultKind.SEQUENCE_GAP, "coinbase": FaultKind.SEQUENCE_GAP, "kraken": FaultKind.BAD_CHECKSUM}
FAILURE_KIND = {"binance": "sequence_gap", "coinbase": "sequence_gap", "kraken": "checksum_mismatch"}


@pytest.fixture(scope="module")
def replay(exchanges_config: ExchangesFile) -> Iterator[ReplayServer]:
    with running_replay_server(exchanges_config, rate_per_symbol=5.0, seed=8) as server:
        yield server


def start(tmp_path: Path, replay: ReplayServer, exchange: Exchange) -> tuple[IngestionRunner, threading.Event,
                                                                             threading.Thread]:
    url = exchange.use_endpoints(replay_endpoints(exchange.config, replay.host, replay.port))
    runner = IngestionRunner(exchange, url, LocalObjectStore(tmp_path / "lake"),
                             Settings(state_dir=tmp_path, batch_max_age_s=1.0, hot_tick_s=0.2,
                                      reconnect_initial_s=0.1, reconnect_max_s=1.0))
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    return runner, stop, thread


def snapshots(tmp_path: Path):  # type: ignore[no-untyped-def]
    return read_dataset(LocalObjectStore(tmp_path / "lake"), "orderbook")


@pytest.mark.parametrize("name", EXCHANGES)
def test_books_of_every_symbol_are_emitted_uncrossed_and_trades_arrive(
        tmp_path: Path, replay: ReplayServer, exchanges_config: ExchangesFile, name: str) -> None:
    exchange = exchange_for(exchanges_config.exchanges[name])  # type: ignore[index]
    _runner, stop, thread = start(tmp_path, replay, exchange)
    wait_for(lambda: len(set(snapshots(tmp_path).column("symbol").to_pylist())) == 20, 30,
             f"{name}: snapshots of all 20 books")
    stop.set()
    thread.join(30)
    books = snapshots(tmp_path).to_pylist()
    assert all(b["bids"] and b["asks"] and b["bids"][0]["price"] < b["asks"][0]["price"] for b in books)
    assert all(len(b["bids"]) <= 20 and len(b["asks"]) <= 20 for b in books)
    assert all(b["bids"][i]["price"] > b["bids"][i + 1]["price"] for b in books for i in range(len(b["bids"]) - 1))
    trades = lake_trade_ids(LocalObjectStore(tmp_path / "lake"))
    assert trades and len(trades) == len(set(trades))
    assert set(trades) <= replay.ledger.trades(name)


@pytest.mark.parametrize("name", EXCHANGES)
def test_a_book_failure_is_recorded_resynced_and_never_emitted_out_of_sync(
        tmp_path: Path, replay: ReplayServer, exchanges_config: ExchangesFile, name: str) -> None:
    exchange = exchange_for(exchanges_config.exchanges[name])  # type: ignore[index]
    runner, stop, thread = start(tmp_path, replay, exchange)
    wait_for(lambda: len(set(snapshots(tmp_path).column("symbol").to_pylist())) == 20, 30, "all books in sync")
    symbol = exchange.symbols[0]
    result = replay.inject(Fault(BOOK_FAULT[name], exchange=name, symbol=exchange.native_symbol(symbol)))
    assert result.connections >= 1
    trades_before = runner.summary.trades_flushed

    def events():  # type: ignore[no-untyped-def]
        return read_dataset(LocalObjectStore(tmp_path / "lake"), "book_events").to_pylist()

    wait_for(lambda: any(e["kind"] == "resync" and e["symbol"] == symbol for e in events()), 30,
             f"{name}: the failed book to resync")
    resynced_at = next(e["timestamp"] for e in events() if e["kind"] == "resync" and e["symbol"] == symbol)

    def emitted_since_resync() -> bool:
        emitted = snapshots(tmp_path)
        mine = emitted.filter(pc.equal(emitted.column("symbol"), symbol)).column("received_at").to_pylist()
        return any(t >= resynced_at for t in mine)

    # The book is emitted again at its next cadence bucket (up to a second of exchange time later): wait
    # for it before stopping, instead of racing the stop against it.
    wait_for(emitted_since_resync, 30, f"{name}: a snapshot after the resync")
    wait_for(lambda: runner.summary.trades_flushed > trades_before, 20, "trades to keep flowing")
    stop.set()
    thread.join(30)
    failure = next(e for e in events() if e["kind"] == FAILURE_KIND[name] and e["symbol"] == symbol)
    resync = next(e for e in events() if e["kind"] == "resync" and e["symbol"] == symbol)
    assert failure["timestamp"] <= resync["timestamp"]
    emitted = snapshots(tmp_path)
    mine = emitted.filter(pc.equal(emitted.column("symbol"), symbol)).column("received_at").to_pylist()
    out_of_sync = [t for t in mine if failure["timestamp"] < t < resync["timestamp"]]
    assert not out_of_sync, "a book was emitted while it was known to be out of sync"
    assert any(t >= resync["timestamp"] for t in mine), "no snapshot after the resync"


@pytest.mark.parametrize("name", EXCHANGES)
def test_a_dropped_connection_resyncs_every_book(tmp_path: Path, replay: ReplayServer,
                                                 exchanges_config: ExchangesFile, name: str) -> None:
    exchange = exchange_for(exchanges_config.exchanges[name])  # type: ignore[index]
    runner, stop, thread = start(tmp_path, replay, exchange)
    wait_for(lambda: len(set(snapshots(tmp_path).column("symbol").to_pylist())) == 20, 30, "all books in sync")
    replay.inject(Fault(FaultKind.DROP_CONNECTIONS, exchange=name))
    wait_for(lambda: runner._session is not None and runner._session.stats.connects >= 2, 30, "a reconnect")
    reconnected = time.time()
    wait_for(lambda: len({r["symbol"] for r in snapshots(tmp_path).to_pylist()
                          if r["received_at"].timestamp() > reconnected + 0.5}) == 20, 30,
             "every book emitted again after the reconnect")
    stop.set()
    thread.join(30)
    trades = lake_trade_ids(LocalObjectStore(tmp_path / "lake"))
    assert len(trades) == len(set(trades))
