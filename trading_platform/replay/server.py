"""The replay server: one websockets server, one port, every exchange under its own path prefix.

``/binance/...`` is the Binance protocol (``binance.py``); ``/_replay/...`` is the admin HTTP API
(``admin.py``). One tick task advances every exchange's market and fans the new trades out to the
subscribed connections' outboxes; per-connection sender tasks write them. So the cost per tick is one
loop over symbols, whatever the trade rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from trading_platform.config import ExchangesFile
from trading_platform.replay import admin
from trading_platform.replay.binance import BinanceFeed
from trading_platform.replay.connection import ReplayConnection
from trading_platform.replay.faults import Fault, FaultCounters, FaultKind, FaultResult
from trading_platform.replay.feed import ExchangeFeed, FeedOptions, RequestRejected
from trading_platform.replay.ledger import TradeLedger
from trading_platform.replay.market import new_seed

log = logging.getLogger(__name__)

# Exchanges with a replay protocol; configured exchanges without one are not served (yet).
FEED_TYPES: dict[str, type[ExchangeFeed]] = {"binance": BinanceFeed}

PING_INTERVAL_S = 20.0  # Binance pings every 20 s ...
PING_TIMEOUT_S = 60.0  # ... and disconnects after a minute without a pong.
CONNECTION_ID_HEADER = "X-Replay-Connection-Id"


class ReplayServer:
    """A running replay server. Create it with :func:`start_replay_server`."""

    def __init__(
        self,
        exchanges: ExchangesFile,
        host: str,
        rate_per_symbol: float,
        seed: int | None,
        tick_interval: float,
        enforce_limits: bool,
        max_pending_frames: int,
    ) -> None:
        self.host = host
        self.seed = new_seed() if seed is None else seed
        self.tick_interval = tick_interval
        self.ledger = TradeLedger()
        self.faults = FaultCounters()
        options = FeedOptions(rate_per_symbol, self.seed, max_pending_frames, enforce_limits)
        self.feeds: dict[str, ExchangeFeed] = {
            name: FEED_TYPES[name](config, self.ledger, self.faults, options)
            for name, config in exchanges.exchanges.items()
            if name in FEED_TYPES
        }
        self.port = 0
        self._ws_server: Server | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

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
            for feed in self.feeds.values():
                try:
                    feed.tick(now_ms)
                except Exception:
                    log.exception("replay %s: tick failed", feed.name)

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
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return feed.http_request(ws, request, path) or ws.respond(404, f"Not Found: {path}\n")
        refusal = feed.refusal(self.loop.time())
        if refusal is not None:
            feed.note_refused()
            if refusal == "reset":
                ws.abort()  # the response below is never written: the socket is gone
            return ws.respond(503, "Service Unavailable\n")
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
        targets = [self.feeds[fault.exchange]] if fault.exchange else list(self.feeds.values())
        reached = sum(feed.inject(fault, self.loop.time()) for feed in targets)
        if fault.kind is not FaultKind.REFUSE_CONNECTIONS:
            log.info("replay: injected %s on %s (%d connections)", fault.kind, [f.name for f in targets], reached)
        return FaultResult(fault.kind, [feed.name for feed in targets], reached)

    def connections(self) -> list[dict[str, object]]:
        """Open client connections, as :meth:`Session.describe` reports them."""
        return self._on_loop(lambda: [s.describe() for f in self.feeds.values() for s in f.sessions])

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "seed": self.seed,
            "exchanges": sorted(self.feeds),
            "connections": {name: len(feed.sessions) for name, feed in self.feeds.items()},
        }

    def _on_loop(self, read: Any) -> Any:
        # Sessions are owned by the loop thread: copy them there when asked from elsewhere.
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            return read()

        async def call() -> Any:
            return read()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout=30)


async def start_replay_server(
    host: str,
    port: int,
    exchanges: ExchangesFile,
    rate_per_symbol: float = 5.0,
    seed: int | None = None,
    *,
    tick_interval: float = 0.01,
    ping_interval: float | None = PING_INTERVAL_S,
    enforce_limits: bool = True,
    max_pending_frames: int = 500_000,
) -> ReplayServer:
    """Start serving on ``host:port`` (0: an ephemeral port, see ``server.port``).

    Every configured exchange with a replay protocol is served, enabled or not. ``rate_per_symbol`` is
    the long-run average trades per second per symbol (arrivals are bursty around it). ``seed`` fixes
    each symbol's trade sequence; without it a random seed is drawn and reported as ``server.seed``.
    """
    server = ReplayServer(exchanges, host, rate_per_symbol, seed, tick_interval, enforce_limits, max_pending_frames)
    await server.start(port, ping_interval)
    log.info(
        "replay feed on %s (seed %d, %.3g trades/s per symbol): %s",
        server.ws_base_url,
        server.seed,
        rate_per_symbol,
        ", ".join(f"{server.ws_base_url}/{name}/stream" for name in server.feeds),
    )
    return server
