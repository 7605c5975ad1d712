"""The replay server: one websockets server, one port, every exchange under its own path prefix.

``/binance/...`` is the Binance protocol (``binance.py``, with its REST depth snapshot under
``/binance/api/v3/depth``), ``/coinbase`` Coinbase Advanced Trade (``coinbase.py``), ``/kraken/v2``
Kraken v2 (``kraken.py``); ``/_replay/...`` is the admin HTTP API (``admin.py``). One tick task
advances every exchange's market (trades and book) and fans trades and book changes out to the
subscribed connections' outboxes; per-connection sender tasks write them. So the cost per tick is one
loop over symbols, whatever the trade rate.

With a capture, one exchange's prefix serves the recorded frames instead (``capture.py``), or with
``from_lake`` the days its raw-frame archive holds (``lake.py``); with
``record``, every frame sent on the named exchanges is written to a file
(``FrameRecorder``, ``trading_platform/capture_format.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from trading_platform.capture_format import FrameRecorder, RecordFormat
from trading_platform.config import ExchangesFile
from trading_platform.replay import admin
from trading_platform.replay.binance import BinanceFeed
from trading_platform.replay.capture import CaptureFeed
from trading_platform.replay.coinbase import CoinbaseFeed
from trading_platform.replay.connection import ReplayConnection
from trading_platform.replay.faults import Fault, FaultCounters, FaultKind, FaultResult
from trading_platform.replay.feed import ExchangeFeed, FeedOptions, RequestRejected
from trading_platform.replay.history import DEFAULT_HISTORY_TRADES
from trading_platform.replay.kraken import KrakenFeed
from trading_platform.replay.lake import LakeDays, LakeFeed
from trading_platform.replay.ledger import TradeLedger
from trading_platform.replay.market import DEFAULT_BOOK_RATE, new_seed

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# Exchanges with a replay protocol; configured exchanges without one are not served.
FEED_TYPES: dict[str, type[ExchangeFeed]] = {"binance": BinanceFeed, "coinbase": CoinbaseFeed, "kraken": KrakenFeed}
# WebSocket paths per exchange ({prefix} is the exchange name): what a client connects to.
PATHS = {
    "binance": "/binance/ws/<stream>, /binance/stream?streams=<s1>/<s2>, GET /binance/api/v3/depth",
    "coinbase": "/coinbase",
    "kraken": "/kraken/v2",
}
RECORD_FLUSH_S = 0.2

PING_INTERVAL_S = 20.0  # Binance pings every 20 s ...
PING_TIMEOUT_S = 60.0  # ... and disconnects after a minute without a pong.
CONNECTION_ID_HEADER = "X-Replay-Connection-Id"


class ReplayServer:
    """A running replay server. Create it with :func:`start_replay_server`."""

    def __init__(
        self,
        exchanges: ExchangesFile,
        host: str,
        rate_per_symbol: float = 5.0,
        seed: int | None = None,
        *,
        tick_interval: float = 0.01,
        enforce_limits: bool = True,
        max_pending_frames: int = 500_000,
        book_rate_per_symbol: float = DEFAULT_BOOK_RATE,
        subscribe_timeout_s: float = 5.0,
        capture: Path | None = None,
        capture_exchange: str | None = None,
        from_lake: LakeDays | None = None,
        speed: float = 1.0,
        record: dict[str, Path] | None = None,
        record_format: RecordFormat = "raw",
        history_trades: int = DEFAULT_HISTORY_TRADES,
        rest_history_trades: int | None = None,
        resume: dict[str, dict[str, list[list[int]]]] | None = None,
    ) -> None:
        self.host = host
        self.seed = new_seed() if seed is None else seed
        self.tick_interval = tick_interval
        self.ledger = TradeLedger()
        self.faults = FaultCounters()
        options = FeedOptions(
            rate_per_symbol,
            self.seed,
            max_pending_frames,
            enforce_limits,
            book_rate_per_symbol,
            subscribe_timeout_s,
            history_trades,
            rest_history_trades,
            resume or {},
        )
        if (capture is None) != (capture_exchange is None):
            raise ValueError("capture and capture_exchange go together")
        if capture_exchange is not None and capture_exchange not in exchanges.exchanges:
            raise ValueError(f"capture exchange {capture_exchange!r} is not configured: {sorted(exchanges.exchanges)}")
        if from_lake is not None and from_lake.exchange not in exchanges.exchanges:
            raise ValueError(f"exchange {from_lake.exchange!r} is not configured: {sorted(exchanges.exchanges)}")
        if from_lake is not None and from_lake.exchange == capture_exchange:
            raise ValueError(f"{capture_exchange} cannot replay a capture and the lake at once")
        self.capture_exchange = capture_exchange
        self.feeds: dict[str, ExchangeFeed] = {}
        for name, config in exchanges.exchanges.items():
            if name == capture_exchange and capture is not None:
                self.feeds[name] = CaptureFeed(name, capture, speed, config, self.ledger, self.faults, options)
            elif from_lake is not None and name == from_lake.exchange:
                self.feeds[name] = LakeFeed(from_lake, speed, config, self.ledger, self.faults, options)
            elif name in FEED_TYPES:
                self.feeds[name] = FEED_TYPES[name](config, self.ledger, self.faults, options)
        self.recorders: dict[str, FrameRecorder] = {}
        for recorded, path in (record or {}).items():
            if recorded not in self.feeds:
                raise ValueError(f"cannot record {recorded!r}: not served; served: {sorted(self.feeds)}")
            self.recorders[recorded] = self.feeds[recorded].recorder = FrameRecorder(path, record_format)
        self.port = 0
        self._ws_server: Server | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paused_at_ms: int | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self, port: int, ping_interval: float | None = PING_INTERVAL_S) -> None:
        self._loop = asyncio.get_running_loop()
        self._ws_server = await serve(
            self._handle,
            self.host,
            port,
            process_request=self._process_request,
            process_response=self._process_response,
            create_connection=ReplayConnection,
            compression=None,  # Binance does not negotiate permessage-deflate; it also costs CPU
            ping_interval=ping_interval,
            ping_timeout=PING_TIMEOUT_S,
            close_timeout=5,
            write_limit=2**18,
        )
        self.port = self._ws_server.sockets[0].getsockname()[1]
        self._tick_task = asyncio.create_task(self._tick_forever(), name="replay-tick")

    def resume_point(self) -> dict[str, dict[str, list[list[int]]]]:
        """exchange -> symbol -> newest trades: what a restarted server continues from (``resume``)."""
        return {name: feed.market.resume_point() for name, feed in self.feeds.items()}

    async def close(self) -> None:
        """Stop ticking, close every connection (1001) and wait until handlers have finished."""
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
            self._tick_task = None
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
            self._ws_server = None
        for recorder in self.recorders.values():
            recorder.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("replay server not started")
        return self._loop

    @property
    def ws_base_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def http_base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _tick_forever(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        flush_at = next_at + RECORD_FLUSH_S
        while True:
            next_at += self.tick_interval
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                # Overloaded: skip ahead instead of bursting to catch up; the market uses the elapsed
                # wall-clock time, so the average rate is unaffected.
                next_at = loop.time()
                await asyncio.sleep(0)
            now_ms = time.time_ns() // 1_000_000
            if self._paused_at_ms is not None:
                continue
            for feed in self.feeds.values():
                try:
                    feed.tick(now_ms)
                except Exception:
                    log.exception("replay %s: tick failed", feed.name)
            if self.recorders and loop.time() >= flush_at:
                # Recordings are readable while the server runs, a fraction of a second behind.
                flush_at = loop.time() + RECORD_FLUSH_S
                for recorder in self.recorders.values():
                    recorder.flush()

    # -- HTTP / routing ------------------------------------------------------------------------------

    def _feed_for(self, path: str) -> ExchangeFeed | None:
        name = path.split("/", 2)[1] if path.startswith("/") else ""
        return self.feeds.get(name)

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        assert isinstance(ws, ReplayConnection)
        path, _, raw_query = request.path.partition("?")
        if path == admin.PREFIX or path.startswith(admin.PREFIX + "/"):
            return admin.handle(self, ws, request, path, raw_query)
        feed = self._feed_for(path)
        if feed is None:
            return ws.respond(404, f"Not Found: {path}\n")
        refusal = feed.refusal(self.loop.time())  # a partition: REST and WebSocket alike
        if refusal is not None:
            feed.note_refused()
            if refusal == "reset":
                ws.abort()  # the response below is never written: the socket is gone
            return ws.respond(503, "Service Unavailable\n")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            rest_error = feed.rest_error_status(self.loop.time())
            if rest_error is not None:  # a rest_error fault: every REST answer is that error for a while
                status, retry_after = rest_error
                feed.faults.add(feed.name, FaultKind.REST_ERROR)
                response = ws.respond(status, f"HTTP {status} (injected)\n")
                if status in (429, 418):
                    response.headers["Retry-After"] = str(retry_after)
                return response
            return feed.http_request(ws, request, path) or ws.respond(404, f"Not Found: {path}\n")
        try:
            target = feed.route(path, raw_query)
        except RequestRejected as rejected:
            return ws.respond(rejected.status, rejected.text)
        ws.replay_route = (feed, target)
        return None

    def _process_response(self, ws: ServerConnection, request: Request, response: Response) -> None:
        # Lets a client (in any process) look up exactly what the ledger recorded for its connection.
        assert isinstance(ws, ReplayConnection)
        if response.status_code == 101:
            response.headers[CONNECTION_ID_HEADER] = str(ws.connection_id)
        else:
            # Plain HTTP answers are "Connection: close", but websockets then waits (close_timeout) for
            # the client to hang up, and an HTTP client that keeps its socket would stall server.close().
            # The response is written synchronously right after this hook; close() flushes it first.
            ws.loop.call_soon(ws.transport.close)

    async def _handle(self, ws: ServerConnection) -> None:
        assert isinstance(ws, ReplayConnection)
        if ws.replay_route is None:
            return
        feed, target = ws.replay_route
        await feed.serve(ws, target)

    # -- control -------------------------------------------------------------------------------------

    def inject(self, fault: Fault) -> FaultResult:
        """Inject ``fault``. Safe from any thread: off the server's loop it is run there and awaited."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            return self._inject(fault)

        async def on_loop() -> FaultResult:
            return self._inject(fault)

        return asyncio.run_coroutine_threadsafe(on_loop(), self.loop).result(timeout=30)

    def _inject(self, fault: Fault) -> FaultResult:
        if fault.exchange is not None and fault.exchange not in self.feeds:
            raise ValueError(f"exchange {fault.exchange!r} is not served; served: {sorted(self.feeds)}")
        if fault.exchange:
            targets = [self.feeds[fault.exchange]]  # refuses (ValueError) a kind this exchange cannot do
        else:
            targets = [feed for feed in self.feeds.values() if fault.kind in feed.supported_faults]
        reached = sum(feed.inject(fault, self.loop.time()) for feed in targets)
        if fault.kind is not FaultKind.REFUSE_CONNECTIONS:
            log.info("replay: injected %s on %s (%d connections)", fault.kind, [f.name for f in targets], reached)
        return FaultResult(fault.kind, [feed.name for feed in targets], reached)

    def pause(self) -> None:
        """Freeze every market (no trades, no book changes) after sending all pending book changes.

        Once it returns, everything the server will send about the frozen state is queued on each
        connection, ahead of any reply to a later request: a client that sends a request and reads up
        to its reply has seen it all, and its book must equal :meth:`book`. Safe from any thread.
        """

        def freeze() -> None:
            if self._paused_at_ms is None:
                now_ms = time.time_ns() // 1_000_000
                self._paused_at_ms = now_ms
                for feed in self.feeds.values():
                    feed.flush_books(now_ms)

        self._on_loop(freeze)

    def resume(self) -> None:
        """Continue where :meth:`pause` stopped; the paused interval is skipped, not caught up."""

        def thaw() -> None:
            if self._paused_at_ms is not None:
                paused_ms = time.time_ns() // 1_000_000 - self._paused_at_ms
                self._paused_at_ms = None
                for feed in self.feeds.values():
                    feed.market.shift(paused_ms)

        self._on_loop(thaw)

    def book(self, exchange: str, symbol: str) -> dict[str, Any]:
        """The server's current book of a normalized symbol (e.g. ``BTC-USD``) on ``exchange``:
        ``{"update_id": int, "bids": [(price, qty), …], "asks": […]}``, texts with the symbol's
        decimals, best first. Safe from any thread."""
        return self._on_loop(lambda: self.feeds[exchange].book(symbol))

    def history(self, exchange: str, symbol: str | None = None, with_trades: bool = True) -> dict[str, Any]:
        """Every trade ``exchange``'s market executed (connected clients or not), per native symbol:
        ``{native: {"first_id", "last_id", "count", "trades": [[id, price, qty, side, time_ms], …]}}`` with
        price and quantity as the exchange's decimal text and ``side`` the aggressor's (``buy``/``sell``).
        The ground truth of "nothing lost". ``symbol``: one native symbol. Safe from any thread."""
        return self._on_loop(lambda: self.feeds[exchange].history_document(symbol, with_trades))

    def connections(self) -> list[dict[str, object]]:
        """Open client connections, as :meth:`Session.describe` reports them."""
        return self._on_loop(lambda: [s.describe() for f in self.feeds.values() for s in f.sessions])

    def health(self) -> dict[str, Any]:
        health: dict[str, Any] = {
            "status": "ok",
            "seed": self.seed,
            "exchanges": sorted(self.feeds),
            "connections": {name: len(feed.sessions) for name, feed in self.feeds.items()},
        }
        lake = {name: feed.progress() for name, feed in self.feeds.items() if isinstance(feed, LakeFeed)}
        if lake:
            health["lake_replay"] = lake
        return health

    def _on_loop(self, read: Callable[[], _T]) -> _T:
        # Sessions are owned by the loop thread: copy them there when asked from elsewhere.
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            return read()

        async def call() -> _T:
            return read()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout=30)


async def start_replay_server(
    host: str,
    port: int,
    exchanges: ExchangesFile,
    rate_per_symbol: float = 5.0,
    seed: int | None = None,
    *,
    ping_interval: float | None = PING_INTERVAL_S,
    **options: Any,
) -> ReplayServer:
    """Start serving on ``host:port`` (0: an ephemeral port, see ``server.port``).

    Every configured exchange with a replay protocol is served, enabled or not. ``rate_per_symbol`` is
    the long-run average trades per second per symbol (arrivals are bursty around it);
    ``book_rate_per_symbol`` the maker events (level adds/resizes/cancels) per second per symbol on
    top of the fills. ``seed`` fixes each symbol's trades and book; without it a random seed is drawn
    and reported as ``server.seed``. ``options`` are :class:`ReplayServer`'s keyword arguments:
    ``subscribe_timeout_s``: Coinbase's subscribe deadline.

    ``capture`` + ``capture_exchange``: that exchange's prefix replays the capture file (see
    ``capture.py``) at ``speed`` (0: as fast as possible). ``from_lake``: that exchange's prefix replays the
    days its raw-frame archive holds (see ``lake.py``), at ``speed`` too. ``record``: {exchange: file} to write every
    frame sent on that exchange, one per line (``record_format`` ``raw`` or ``cryptofeed``).
    ``history_trades``: executed trades kept per symbol (REST history, ``/_replay/history``);
    ``rest_history_trades``: how many of the newest the REST endpoints serve (None: all kept).
    ``resume``: a stopped server's :meth:`ReplayServer.resume_point`, to continue its markets (trade ids
    and REST history); without it each symbol starts at a random id.
    """
    server = ReplayServer(exchanges, host, rate_per_symbol, seed, **options)
    await server.start(port, ping_interval)
    log.info(
        "replay feed on %s (seed %d, %.3g trades/s per symbol): %s",
        server.ws_base_url,
        server.seed,
        rate_per_symbol,
        "; ".join(
            f"{name}: capture {options['capture']}" if name == options.get("capture_exchange")
            else f"{name}: the lake's {feed.recording.describe()}" if isinstance(feed, LakeFeed)
            else f"{name}: {PATHS.get(name, '/' + name)}"
            for name, feed in server.feeds.items()
        ),
    )
    return server
