"""The raw-frame archive: live runs of all three exchanges archive every batch's records; re-normalizing
the day from the archive with unchanged code reproduces the lake's trade files byte for byte."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from trading_platform.config import ExchangesFile
from trading_platform.exchanges.registry import exchange_for
from trading_platform.ingestion.frame_archive import archive_keys, read_archive
from trading_platform.ingestion.renormalize import renormalize_day
from trading_platform.ingestion.runner import IngestionRunner
from trading_platform.replay import Fault, FaultKind, ReplayServer, running_replay_server
from trading_platform.settings import Settings
from trading_platform.storage.object_store import LocalObjectStore
from trading_platform_tests.support import replay_endpoints, wait_for

EXCHANGES = ("binance", "coinbase", "kraken")


@pytest.fixture(scope="module")
def lived(tmp_path_factory: pytest.TempPathFactory, exchanges_config: ExchangesFile) -> Iterator[Path]:
    """A state folder after a few seconds of all three exchanges, a dropped connection included."""
    root = tmp_path_factory.mktemp("archive")
    settings = Settings(state_dir=root).model_copy(update={"batch_max_age_s": 1.0, "hot_tick_s": 0.2})
    with running_replay_server(exchanges_config, rate_per_symbol=10.0, seed=4) as replay:
        runners = [IngestionRunner(exchange_for(exchanges_config.exchanges[name]), _url(replay, exchanges_config,
                                                                                        name),
                                   LocalObjectStore(root / "lake"), settings) for name in EXCHANGES]
        stop = threading.Event()
        threads = [threading.Thread(target=r.run, args=(stop,), daemon=True) for r in runners]
        for thread in threads:
            thread.start()
        wait_for(lambda: all(r.summary.batches >= 2 for r in runners), 60, "two batches per exchange")
        replay.inject(Fault(FaultKind.DROP_CONNECTIONS))
        wait_for(lambda: all(r.summary.batches >= 4 for r in runners), 60, "batches after the drop")
        stop.set()
        for thread in threads:
            thread.join(30)
    yield root


def _url(replay: ReplayServer, exchanges: ExchangesFile, name: str) -> str:
    config = exchanges.exchanges[name]
    return exchange_for(config).connect_url(replay_endpoints(config, replay.host, replay.port))


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_every_flushed_batch_is_archived_with_its_records(lived: Path, exchange: str) -> None:
    lake = LocalObjectStore(lived / "lake")
    today = datetime.now(UTC).date()
    archives = [read_archive(lake, key) for key in archive_keys(lake, exchange, today)]
    batches = {k.rsplit("/", 1)[-1].removesuffix(".parquet") for k in lake.list_keys("raw/trades/")
               if f"/exchange={exchange}/" in k}
    assert batches and batches <= {a.batch_id for a in archives}
    offsets = [r[0] for a in archives for r in a.records]
    assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))  # every WAL record, once, in order


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_renormalizing_the_day_reproduces_the_lake_byte_for_byte(lived: Path, exchange: str, tmp_path: Path,
                                                                 exchanges_config: ExchangesFile) -> None:
    lake, again = LocalObjectStore(lived / "lake"), LocalObjectStore(tmp_path / "again")
    result = renormalize_day(lake, again, exchanges_config.exchanges[exchange], datetime.now(UTC).date(),
                             Settings().spike_threshold)
    assert result.batches >= 4 and result.rows["trades"] > 0
    originals = sorted(k for k in lake.list_keys("raw/trades/") if f"/exchange={exchange}/" in k)
    assert sorted(result.keys) == originals
    for key in originals:
        assert again.get(key) == lake.get(key), key
