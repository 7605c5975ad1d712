"""`trading-platform normalize` on captures the replay server recorded while the live path ingested them:
the importer reproduces the live rows, verifies every Kraken checksum and syncs every Binance book."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from trading_platform.config import ExchangesFile
from trading_platform.exchanges.registry import exchange_for
from trading_platform.importer.archive import import_capture
from trading_platform.ingestion.runner import IngestionRunner
from trading_platform.replay import running_replay_server
from trading_platform.settings import Settings
from trading_platform.storage.object_store import LocalObjectStore
from trading_platform_tests.support import read_dataset, replay_endpoints, wait_for

TRADE_COLUMNS = ["exchange", "symbol", "native_symbol", "trade_id", "price", "quantity", "side", "timestamp"]


def live_then_capture(tmp_path: Path, exchanges_config: ExchangesFile, name: str, record_format: str) -> Path:
    """Ingest live from a replay server that records everything it sends on `name`."""
    capture = tmp_path / f"{name}.capture"
    with running_replay_server(exchanges_config, rate_per_symbol=5.0, seed=4, record={name: capture},
                               record_format=record_format) as server:
        exchange = exchange_for(exchanges_config.exchanges[name])  # type: ignore[index]
        url = exchange.use_endpoints(replay_endpoints(exchange.config, server.host, server.port))
        runner = IngestionRunner(exchange, url, LocalObjectStore(tmp_path / "live"),
                                 Settings(state_dir=tmp_path, batch_max_age_s=1.0, hot_tick_s=0.2))
        stop = threading.Event()
        thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
        thread.start()
        wait_for(lambda: len(set(read_dataset(LocalObjectStore(tmp_path / "live"), "orderbook")
                                 .column("symbol").to_pylist())) == 20, 30, "all books live")
        stop.set()
        thread.join(30)
    return capture


def rows(root: Path, dataset: str, columns: list[str]) -> set[tuple]:
    table = read_dataset(LocalObjectStore(root), dataset).select(columns)
    return set(zip(*table.to_pydict().values(), strict=True))


@pytest.mark.parametrize("name", ["binance", "coinbase", "kraken"])
def test_the_importer_reproduces_the_live_trades(tmp_path: Path, exchanges_config: ExchangesFile, name: str) -> None:
    capture = live_then_capture(tmp_path, exchanges_config, name, "cryptofeed")
    report = import_capture(exchanges_config.exchanges[name], capture, tmp_path / "imported")  # type: ignore[index]
    live = rows(tmp_path / "live", "trades", TRADE_COLUMNS)
    assert live and rows(tmp_path / "imported", "trades", TRADE_COLUMNS) == live
    assert report.trades == len(live)
    assert report.book_snapshots > 0 and report.quarantined == 0


def test_every_kraken_checksum_verifies_on_a_recording(tmp_path: Path, exchanges_config: ExchangesFile) -> None:
    capture = live_then_capture(tmp_path, exchanges_config, "kraken", "raw")
    report = import_capture(exchanges_config.exchanges["kraken"], capture, tmp_path / "imported")
    assert report.counters["checksums_passed"] > 100
    assert report.counters["checksums_failed"] == 0
    assert not report.book_events_by_kind


def test_every_binance_book_syncs_to_its_recorded_rest_snapshot(tmp_path: Path,
                                                                exchanges_config: ExchangesFile) -> None:
    capture = live_then_capture(tmp_path, exchanges_config, "binance", "cryptofeed")
    assert " -> " in capture.read_text()  # the REST snapshots are in the recording
    report = import_capture(exchanges_config.exchanges["binance"], capture, tmp_path / "imported")
    assert report.book_events_by_kind.get("sequence_gap", 0) == 0
    assert report.book_events_by_kind.get("stale_snapshot", 0) == 0
    books = rows(tmp_path / "imported", "orderbook", ["symbol"])
    assert len(books) == 20


@pytest.mark.slow  # the importer CLI in a subprocess: ~6 s: make test runs it, make test-fast does not
def test_the_cli_prints_the_counts(tmp_path: Path, exchanges_config: ExchangesFile) -> None:
    capture = live_then_capture(tmp_path, exchanges_config, "kraken", "raw")
    result = subprocess.run([sys.executable, "-m", "trading_platform.cli", "normalize", "--exchange", "kraken",
                             "--input", str(capture), "--output", str(tmp_path / "cli")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for label in ("trades:", "book updates applied:", "book snapshots emitted:", "checksum verifications passed:",
                  "checksum verifications failed:", "sequence gaps:", "unrecognized / rejected frames:"):
        assert label in result.stdout
