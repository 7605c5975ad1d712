"""Ways to run the replay server: in the foreground for ``make run``, or in a thread for sync code."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trading_platform.capture_format import RecordFormat
from trading_platform.config import ExchangesFile, load_exchanges
from trading_platform.replay.lake import LakeDays
from trading_platform.replay.server import ReplayServer, start_replay_server
from trading_platform.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_RATE_PER_SYMBOL = 5.0
RESUME_FILE = "resume.json"  # in <state dir>/replay/: the markets' newest trades, written at a clean stop


def run_replay(
    settings: Settings,
    rate_per_symbol: float | None = None,
    capture: Path | None = None,
    capture_exchange: str | None = None,
    speed: float = 1.0,
    record: dict[str, Path] | None = None,
    record_format: RecordFormat = "raw",
    book_rate_per_symbol: float | None = None,
    from_lake: LakeDays | None = None,
) -> None:
    """Serve every configured exchange on ``settings.replay_host:replay_port`` until SIGINT/SIGTERM.

    ``capture`` + ``capture_exchange`` (e.g. ``trading-platform replay --capture FILE --exchange kraken
    --speed 10``): that exchange's path replays the file (one raw frame per line, or cryptofeed
    ``<ts>: <frame>`` lines whose timestamps set the pace; ``speed`` 0 = as fast as possible); the
    other exchanges stay synthetic. ``from_lake`` (``trading-platform replay --from-lake kraken 2026-12-01``):
    that exchange's path replays the days its raw-frame archive holds, paced by ``speed`` too.
    ``record``: {exchange: file} writes every frame sent there.
    Raises ValueError for a bad combination (capture without exchange, unknown exchange, missing file).
    """
    exchanges = load_exchanges(settings.exchanges_file)
    rate = DEFAULT_RATE_PER_SYMBOL if rate_per_symbol is None else rate_per_symbol
    options: dict[str, Any] = {
        "capture": capture,
        "capture_exchange": capture_exchange,
        "from_lake": from_lake,
        "speed": speed,
        "record": record,
        "record_format": record_format,
    }
    if book_rate_per_symbol is not None:
        options["book_rate_per_symbol"] = book_rate_per_symbol
    resume = settings.state_dir / "replay" / RESUME_FILE
    asyncio.run(_serve_until_signalled(settings.replay_host, settings.replay_port, exchanges, rate, options,
                                       resume))


def _take_resume_point(resume: Path) -> dict[str, dict[str, list[list[int]]]] | None:
    """What a cleanly stopped feed left, removed as it is read: after a crash there is none, and the
    markets start at fresh ids (the platform then records the jump as an unfillable gap)."""
    try:
        point: dict[str, dict[str, list[list[int]]]] = json.loads(resume.read_text())
    except FileNotFoundError:
        return None
    resume.unlink()
    log.info("replay feed continues the markets it stopped (%s)", resume)
    return point


async def _serve_until_signalled(
    host: str, port: int, exchanges: ExchangesFile, rate: float, options: dict[str, Any], resume: Path
) -> None:
    # Restarting `make run` must not look like a market whose trade ids jumped by billions: the markets
    # continue where they stopped, as an exchange's do, REST history included (the platform stops a moment
    # before the feed does and backfills the trades it missed from it).
    server = await start_replay_server(host, port, exchanges, rate_per_symbol=rate,
                                       resume=_take_resume_point(resume), **options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("replay feed stopping")
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await server.close()
        resume.parent.mkdir(parents=True, exist_ok=True)
        resume.write_text(json.dumps(server.resume_point(), separators=(",", ":")))


@contextmanager
def running_replay_server(
    exchanges: ExchangesFile,
    host: str = "127.0.0.1",
    port: int = 0,
    rate_per_symbol: float = DEFAULT_RATE_PER_SYMBOL,
    seed: int | None = None,
    **options: Any,
) -> Iterator[ReplayServer]:
    """Run a replay server on its own event loop in a background thread, for synchronous callers.

    The yielded server's ``ledger``, ``faults``, ``inject()``, ``connections()`` and URLs are safe to
    use from the calling thread. ``options`` go to :func:`start_replay_server` (e.g. ``tick_interval``,
    ``book_rate_per_symbol``, ``capture``/``capture_exchange``/``speed``, ``record``).
    """
    started: concurrent.futures.Future[tuple[ReplayServer, asyncio.Event]] = concurrent.futures.Future()

    async def serve() -> None:
        try:
            server = await start_replay_server(host, port, exchanges, rate_per_symbol, seed, **options)
        except BaseException as error:
            started.set_exception(error)
            return
        stop = asyncio.Event()
        started.set_result((server, stop))
        await stop.wait()
        await server.close()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="replay-server", daemon=True)
    thread.start()
    server, stop = started.result(timeout=30)
    try:
        yield server
    finally:
        server.loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
