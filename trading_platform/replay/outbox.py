"""Per-connection FIFO of outgoing frames, drained by one sender task.

Everything a connection sends — trade frames, replies to requests, injected faults — goes through its
outbox, so the order on the socket is the order things were queued. That gives the drain guarantee
exact accounting needs: an UNSUBSCRIBE removes the streams first and then queues its reply, so every
trade frame of those streams is on the wire before the reply. Trades are recorded in the ledger right
after ``send`` accepted them (a send that raises ``ConnectionClosed`` records nothing).

A recorder (``trading_platform.capture_format.FrameRecorder``) gets the text of every frame once ``send``
accepted it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from trading_platform.replay.faults import FaultCounters, FaultKind
from trading_platform.replay.ledger import TradeLedger

log = logging.getLogger(__name__)


@dataclass(slots=True)
class TradeFrames:
    """Frames of one symbol with consecutive trade ids from ``first_id`` (shared across connections).

    ``per_frame`` is how many trades each frame carries (Binance: one; Coinbase and Kraken batch a
    tick's trades of a symbol, or a snapshot's, into one frame).
    """

    symbol: str
    first_id: int
    frames: list[str]
    per_frame: int = 1


@dataclass(slots=True)
class ControlFrame:
    text: str


@dataclass(slots=True)
class FaultFrame:
    kind: FaultKind
    text: str


@dataclass(slots=True)
class CloseAfter:
    """Close the connection once everything queued before it is sent (e.g. after serverShutdown)."""

    code: int
    reason: str


OutItem = TradeFrames | ControlFrame | FaultFrame | CloseAfter


class Outbox:
    def __init__(
        self,
        exchange: str,
        connection_id: int,
        ledger: TradeLedger,
        faults: FaultCounters,
        max_pending_frames: int,
        recorder: Callable[[str], None] | None = None,
    ) -> None:
        self.exchange = exchange
        self._recorder = recorder
        self.connection_id = connection_id
        self._ledger = ledger
        self._faults = faults
        self._items: deque[OutItem] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False
        # A client that cannot keep up is disconnected (as exchanges do) instead of growing memory.
        self._max_pending = max_pending_frames
        self.pending_frames = 0
        self.overflowed = False

    def push_trades(self, item: TradeFrames) -> None:
        if self._closed:
            return
        self.pending_frames += len(item.frames)
        if self.pending_frames > self._max_pending:
            self.overflowed = True
            log.warning(
                "%s connection %d: slow consumer, %d frames pending; dropping it",
                self.exchange,
                self.connection_id,
                self.pending_frames,
            )
            self.close()
            return
        self._push(item)

    def push_control(self, text: str) -> None:
        self._push(ControlFrame(text))

    def push_fault(self, kind: FaultKind, text: str) -> None:
        self._push(FaultFrame(kind, text))

    def push_close(self, code: int, reason: str) -> None:
        self._push(CloseAfter(code, reason))

    def __len__(self) -> int:
        """Items queued and not yet taken by the sender."""
        return len(self._items)

    def _push(self, item: OutItem) -> None:
        if self._closed:
            return
        self._items.append(item)
        self._wakeup.set()

    def close(self) -> None:
        """Stop the sender; what is still queued was never handed to send and is not recorded."""
        self._closed = True
        self._items.clear()
        self.pending_frames = 0
        self._wakeup.set()

    async def run(self, ws: ServerConnection) -> None:
        """Send queued items in order until closed or the connection dies."""
        items = self._items
        try:
            while True:
                if not items:
                    if self._closed:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                item = items.popleft()
                if isinstance(item, TradeFrames):
                    await self._send_trades(ws, item)
                elif isinstance(item, ControlFrame):
                    await ws.send(item.text)
                    if self._recorder is not None:
                        self._recorder(item.text)
                elif isinstance(item, FaultFrame):
                    # Counted as it is handed to send: a client may read the frame before this task resumes.
                    self._faults.add(self.exchange, item.kind)
                    if item.kind is FaultKind.INVALID_UTF8:
                        # A text frame carrying bytes that are not UTF-8 (lone surrogates become raw bytes).
                        raw = item.text.encode("utf-8", "surrogateescape")
                        await ws.send(raw, text=True)
                        text = raw.decode("utf-8", "replace")
                    else:
                        await ws.send(item.text)
                        text = item.text
                    if self._recorder is not None:
                        self._recorder(text)
                else:
                    await ws.close(item.code, item.reason)
                    return
        except ConnectionClosed:
            return
        finally:
            self.close()
            if self.overflowed:
                # Policy violation (1008) is what a real exchange uses for a client that lags behind.
                await ws.close(1008, "slow consumer")

    async def _send_trades(self, ws: ServerConnection, item: TradeFrames) -> None:
        sent = 0
        recorder = self._recorder
        try:
            for frame in item.frames:
                if self._closed:  # dropped as a slow consumer while this batch was draining
                    break
                await ws.send(frame)
                sent += 1
                if recorder is not None:
                    recorder(frame)
        finally:
            # Also on ConnectionClosed or cancellation: the prefix that was accepted counts, nothing more.
            if not self._closed:
                self.pending_frames -= len(item.frames)
            trades = sent * item.per_frame
            self._ledger.record(self.exchange, item.symbol, item.first_id, trades, self.connection_id)
