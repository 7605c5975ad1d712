"""The raw-frame archive: live runs of all three exchanges archive every batch's records; re-normalizing
the day from the archive with unchanged code reproduces the lake's trade files byte for byte; replaying the
day from the lake through the exchange protocols, ingested again into a second state folder, gives the same
trades."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from trading_platform.config import ExchangesFile
from trading_platform.exchanges.decoded import RecordKind
from trading_platform.exchanges.registry import exchange_for
from trading_platform.ingestion.frame_archive import archive_keys, read_archive
from trading_platform.ingestion.renormalize import renormalize_day
from trading_platform.ingestion.runner import IngestionRunner
from trading_platform.replay import Fault, FaultKind, ReplayServer, running_replay_server
from trading_platform.replay.lake import LakeDays, LakeFeed, parse_days
from trading_platform.settings import Settings
from trading_platform.storage.object_store import LocalObjectStore
from trading_platform_tests.support import replay_endpoints, wait_for

# Live runs of three feeds, an outage and a replay of the day (~30 s): make test runs it, make test-fast does not.
pytestmark = pytest.mark.slow

EXCHANGES = ("binance", "coinbase", "kraken")


@pytest.fixture(scope="module")
def lived(tmp_path_factory: pytest.TempPathFactory, exchanges_config: ExchangesFile) -> Iterator[Path]:
    """A state folder after a few seconds of all three exchanges, a dropped connection (and a trade gap
    backfilled from REST) included."""
    root = tmp_path_factory.mktemp("archive")
    settings = Settings(state_dir=root).model_copy(update={"batch_max_age_s": 1.0, "hot_tick_s": 0.2})
    with running_replay_server(exchanges_config, rate_per_symbol=10.0, seed=4) as replay:
        runners = [_runner(replay, exchanges_config, name, root, settings) for name in EXCHANGES]
        stop = threading.Event()
        threads = [threading.Thread(target=r.run, args=(stop,), daemon=True) for r in runners]
        for thread in threads:
            thread.start()
        wait_for(lambda: all(r.summary.batches >= 2 for r in runners), 60, "two batches per exchange")
        # Coinbase re-sends its last 50 trades per product on a new subscription: an outage longer than that
        # (about 5 s here) makes it backfill from REST like the others, so every archive holds REST answers.
        dropped = {c["id"] for c in replay.connections()}
        replay.inject(Fault(FaultKind.REFUSE_CONNECTIONS, exchange="coinbase", seconds=7.0))
        replay.inject(Fault(FaultKind.DROP_CONNECTIONS))
        # Batches flushed after each feed's reconnection, so every archive records a connection that ended: the
        # flushes alone can reach a count before Coinbase's refusal is over.
        wait_for(lambda: {c["exchange"] for c in replay.connections() if c["id"] not in dropped} >= set(EXCHANGES),
                 60, "a reconnection per exchange")
        after = [r.summary.batches + 2 for r in runners]
        wait_for(lambda: all(r.summary.batches >= max(4, n) for r, n in zip(runners, after, strict=True)), 60,
                 "batches after the reconnection")
        stop.set()
        for thread in threads:
            thread.join(30)
    yield root


@pytest.fixture(scope="module")
def replayed(lived: Path, tmp_path_factory: pytest.TempPathFactory,
             exchanges_config: ExchangesFile) -> Iterator[tuple[Path, dict[str, LakeFeed]]]:
    """A second state folder that ingested the recorded day of every exchange replayed from the first one's
    lake (``replay --from-lake``, full speed, all three at once), and the feeds that replayed it."""
    lake = LocalObjectStore(lived / "lake")
    second = tmp_path_factory.mktemp("replayed")
    settings = Settings(state_dir=second).model_copy(update={"batch_max_age_s": 1.0, "hot_tick_s": 0.2})
    with contextlib.ExitStack() as servers:
        replays = {name: servers.enter_context(running_replay_server(
            exchanges_config, from_lake=LakeDays(name, lake, _archived_days(lake, name)), speed=0))
            for name in EXCHANGES}
        feeds = {name: replay.feeds[name] for name, replay in replays.items()}
        runners = {name: _runner(replay, exchanges_config, name, second, settings) for name, replay in replays.items()}
        stop = threading.Event()
        threads = [threading.Thread(target=r.run, args=(stop,), daemon=True) for r in runners.values()]
        for thread in threads:
            thread.start()

        def replayed_and_received() -> bool:
            return all(isinstance(feed, LakeFeed) and feed.done
                       and runners[name].summary.frames_received >= feed.frames_sent for name, feed in feeds.items())

        wait_for(replayed_and_received, 90, "every archived frame replayed and received")
        stop.set()
        for thread in threads:
            thread.join(30)
    yield second, {name: feed for name, feed in feeds.items() if isinstance(feed, LakeFeed)}


def _archived_days(lake: LocalObjectStore, exchange: str) -> tuple[date, ...]:
    days = sorted({k.split("/date=")[1].split("/")[0] for k in lake.list_keys(f"raw/frames/exchange={exchange}/")})
    return parse_days(f"{days[0]}..{days[-1]}")


def _trades(root: Path, exchange: str) -> pl.DataFrame:
    """A lake's trades of ``exchange``: what the exchange said, without when and in which batch we got it."""
    files = sorted((root / "raw" / "trades").glob(f"exchange={exchange}/**/*.parquet"))
    return (pl.read_parquet(files).drop("received_at", "batch_id")
            .sort("symbol", "trade_id", "timestamp", "price", "quantity"))


def _runner(replay: ReplayServer, exchanges: ExchangesFile, name: str, root: Path,
            settings: Settings) -> IngestionRunner:
    """A run of ``name`` into ``root``'s lake, WebSocket and REST on ``replay`` (one exchange instance:
    use_endpoints also points its REST calls at the replay server)."""
    exchange = exchange_for(exchanges.exchanges[name])
    url = exchange.use_endpoints(replay_endpoints(exchange.config, replay.host, replay.port))
    return IngestionRunner(exchange, url, LocalObjectStore(root / "lake"), settings)


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


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_replaying_the_day_from_the_lake_gives_the_same_trades(lived: Path, exchange: str,
                                                               replayed: tuple[Path, dict[str, LakeFeed]]) -> None:
    second, feeds = replayed
    original, again = _trades(lived / "lake", exchange), _trades(second / "lake", exchange)
    assert original.height > 0 and original.n_unique(["symbol", "trade_id"]) == original.height
    assert again.equals(original)
    # The recorded connection drop was replayed as one (the client reconnected), not flattened away.
    assert feeds[exchange].connections_ended >= 1


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_the_lake_replay_answers_rest_from_the_recording(lived: Path, exchange: str,
                                                         replayed: tuple[Path, dict[str, LakeFeed]]) -> None:
    lake = LocalObjectStore(lived / "lake")
    recorded = sum(1 for key in lake.list_keys(f"raw/frames/exchange={exchange}/")
                   for record in read_archive(lake, key).records if record[2] == RecordKind.REST)
    feed = replayed[1][exchange]
    assert recorded > 0 and feed.recorded_answers == recorded and feed.unmatched_answers == 0
    # The replayed client asked what the live run asked, and every request found its recorded answer.
    assert feed.answered > 0 and feed.unanswered == []
