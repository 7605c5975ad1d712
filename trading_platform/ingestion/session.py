"""One exchange WebSocket session: connect, subscribe, receive, reconnect with backoff, drain.

Every frame is handed to ``on_frame`` as raw bytes with its receive time; parsing happens per batch
elsewhere. Draining unsubscribes and reads until the exchange acknowledges, so every frame the
exchange sent before it stopped is received, then closes the connection cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import websockets
from websockets.asyncio.client import ClientConnection, connect

from trading_platform.exchanges.base import Exchange

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 5.0
# Frames above MAX_FRAME_BYTES are quarantined by the normalizer; the socket limit is higher so such
# a frame is seen and recorded instead of killing the connection.
SOCKET_MAX_SIZE = 64 << 20


@dataclass
class SessionStats:
    connects: int = 0
    disconnects: int = 0
    frames: int = 0
    last_error: str | None = None
    connected: bool = False
    drained_cleanly: bool | None = None
    errors: list[str] = field(default_factory=list)


def backoff_delay(attempt: int, initial_s: float, max_s: float) -> float:
    """Full-jitter exponential backoff: spreads reconnects of many clients after an outage."""
    return random.uniform(initial_s / 2, min(max_s, initial_s * 2 ** min(attempt, 30)))


class FeedSession:
    def __init__(self, exchange: Exchange, url: str, on_frame: Callable[[bytes, int], None],
                 reconnect_initial_s: float = 0.5, reconnect_max_s: float = 30.0,
                 on_status: Callable[[str], None] | None = None,
                 new_connection: Callable[[str, int], None] | None = None) -> None:
        self.exchange = exchange
        self.url = url
        self.on_frame = on_frame
        self.new_connection = new_connection or (lambda url, received_us: None)
        self._ws: ClientConnection | None = None
        self._reconnect_reason: str | None = None
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self.on_status = on_status or (lambda message: log.info(message))
        self.stats = SessionStats()

    async def run(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            try:
                async with connect(self.url, max_size=SOCKET_MAX_SIZE, open_timeout=10,
                                   ping_interval=20, ping_timeout=60, close_timeout=5) as ws:
                    attempt = 0
                    self.stats.connects += 1
                    self.stats.connected = True
                    self._ws = ws
                    self._reconnect_reason = None
                    # Recorded before the first frame: books and per-connection sequences restart here.
                    self.new_connection(self.url, time.time_ns() // 1000)
                    self.on_status(f"{self.exchange.name}: connected to {self.url.split('?')[0]}")
                    for frame in self.exchange.subscribe_frames():
                        await ws.send(frame)
                    await self._receive(ws, stop)
                    if stop.is_set():
                        return
                    if self._reconnect_reason is not None:
                        raise ConnectionError(f"reconnect requested: {self._reconnect_reason}")
                    raise ConnectionError("server closed the connection")
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as error:
                self.stats.connected = False
                self.stats.disconnects += 1
                self.stats.last_error = f"{type(error).__name__}: {error}"
                self.stats.errors = ([*self.stats.errors, self.stats.last_error])[-20:]
                requested = self._reconnect_reason is not None
                delay = 0.0 if requested else backoff_delay(attempt, self.reconnect_initial_s, self.reconnect_max_s)
                attempt = 0 if requested else attempt + 1
                self._reconnect_reason = None
                self.on_status(f"{self.exchange.name}: connection lost or refused ({self.stats.last_error}); "
                               f"reconnecting in {delay:.1f}s (attempt {attempt})")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        self.stats.connected = False

    async def send(self, frames: tuple[str, ...] | list[str]) -> bool:
        """Send on the current connection; False when there is none (the next one resubscribes)."""
        ws = self._ws
        if ws is None:
            return False
        try:
            for frame in frames:
                await ws.send(frame)
        except websockets.exceptions.ConnectionClosed:
            return False
        return True

    async def reconnect(self, reason: str) -> None:
        """Drop the connection (e.g. it lost messages); the run loop opens a fresh one at once."""
        ws = self._ws
        if ws is not None and self._reconnect_reason is None:
            self._reconnect_reason = reason
            self.on_status(f"{self.exchange.name}: reconnecting: {reason}")
            await ws.close()

    async def _receive(self, ws: ClientConnection, stop: asyncio.Event) -> None:
        drain = asyncio.create_task(self._drain_on_stop(ws, stop))
        try:
            while True:
                try:
                    frame = await ws.recv(decode=False)
                except websockets.exceptions.ConnectionClosedOK:
                    return
                received_us = time.time_ns() // 1000
                self.stats.frames += 1
                if isinstance(frame, str):
                    frame = frame.encode()
                if stop.is_set() and self.exchange.is_unsubscribe_ack(frame):
                    self.stats.drained_cleanly = True
                    await ws.close()
                    return
                self.on_frame(frame, received_us)
        except websockets.exceptions.ConnectionClosedError:
            if not stop.is_set():
                raise
        finally:
            drain.cancel()
            self._ws = None
            self.stats.connected = False

    async def _drain_on_stop(self, ws: ClientConnection, stop: asyncio.Event) -> None:
        await stop.wait()
        frames = self.exchange.unsubscribe_frames()
        try:
            for frame in frames:
                await ws.send(frame)
        except websockets.exceptions.ConnectionClosed:
            self.stats.drained_cleanly = False
            return
        await asyncio.sleep(DRAIN_TIMEOUT_S)
        # No acknowledgement in time: close anyway; what arrived is kept.
        self.stats.drained_cleanly = False
        self.on_status(f"{self.exchange.name}: no unsubscribe acknowledgement in {DRAIN_TIMEOUT_S}s; closing")
        await ws.close()
