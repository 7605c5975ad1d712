"""Per-connection FIFO of outgoing frames, drained by one sender task.

Everything a connection sends — trade frames, replies to requests, injected faults — goes through its
outbox, so the order on the socket is the order things were queued. That gives the drain guarantee
exact accounting needs: an UNSUBSCRIBE removes the streams first and then queues its reply, so every
trade frame of those streams is on the wire before the reply.

Trade and control frames queued back to back go out as one write: the sender frames them itself (plain
RFC 6455 text frames; the server negotiates no extension) and hands the batch to the connection's
transport inside websockets' send context, which checks the connection is open before and applies its
flow control after. One write and one await per batch instead of per frame is what lets one connection
carry 100k frames/s. Trades are recorded in the ledger once their frames were handed to the transport
(a connection found closed before the write records nothing); faults and closes take websockets'
``send`` / ``close`` one by one.

A recorder (``trading_platform.capture_format.FrameRecorder``) gets the text of every frame once it was
handed to the transport (or, for faults, once ``send`` accepted it).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from trading_platform.replay.faults import FaultCounters, FaultKind
from trading_platform.replay.ledger import TradeLedger

log = logging.getLogger(__name__)

# Frames of a batch up to this many bytes go out in one write: websockets' write limit (high-water mark)
# on the server's connections, so one batch fills the transport's buffer at most once before a drain.
BATCH_BYTES = 2**18
_TEXT_FIN = 0x81  # FIN bit + text opcode; a server's frames are not masked
_SHORT_HEADERS = [bytes((_TEXT_FIN, length)) for length in range(126)]
# Frames pending on a connection whose client keeps up, in multiples of the slow-consumer limit, before it is
# dropped all the same: a bound on the memory of a server asked for more than its CPU can send.
SERVER_BEHIND_FACTOR = 4


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
        self.dropped: tuple[int, str] | None = None  # the close code and reason of a dropped connection
        # The sender wrote a batch the socket would not take and waits for the transport to drain (websockets' flow
        # control pauses writing over the transport's high-water mark): the client is not reading what it is sent.
        # Frames that pile up while it is not waiting wait for this server's own loop, which has not had the time
        # to write them: dropping the client for those would make an overloaded server look like a slow client.
        self._waiting_for_client = False
        self._server_behind_logged = False

    def push_trades(self, item: TradeFrames) -> None:
        if self._closed:
            return
        self.pending_frames += len(item.frames)
        if self.pending_frames > self._max_pending:
            if self._waiting_for_client:
                # Policy violation (1008) is what a real exchange uses for a client that lags behind.
                self._drop(1008, "slow consumer", f"slow consumer, {self.pending_frames} frames pending")
                return
            behind = (f"{self.pending_frames} frames pending while the client reads all it is sent: this server is "
                      "behind (its loop is CPU-bound), not the client")
            if self.pending_frames > SERVER_BEHIND_FACTOR * self._max_pending:
                self._drop(1013, "server overloaded", f"{behind}, past its bound")
                return
            if not self._server_behind_logged:
                self._server_behind_logged = True
                log.warning("%s connection %d: %s; the frames wait", self.exchange, self.connection_id, behind)
        self._push(item)

    def _drop(self, code: int, reason: str, detail: str) -> None:
        """Close the connection with ``code`` and ``reason`` once the sender stops (nothing more is queued)."""
        self.dropped = code, reason
        log.warning("%s connection %d: %s; dropping it", self.exchange, self.connection_id, detail)
        self.close()

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
                item = items[0]
                if isinstance(item, TradeFrames | ControlFrame):
                    await self._send_batch(ws)
                    continue
                items.popleft()
                if isinstance(item, FaultFrame):
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
            if self.dropped is not None:
                await ws.close(*self.dropped)

    async def _send_batch(self, ws: ServerConnection) -> None:
        """Take the trade and control frames at the head of the queue (up to BATCH_BYTES) and write them at once."""
        items = self._items
        batch: list[TradeFrames | ControlFrame] = []
        chunks: list[bytes] = []
        size = 0
        while items and size < BATCH_BYTES:
            item = items[0]
            if not isinstance(item, TradeFrames | ControlFrame):
                break
            items.popleft()
            batch.append(item)
            for text in item.frames if isinstance(item, TradeFrames) else (item.text,):
                data = text.encode()
                length = len(data)
                chunks.append(_SHORT_HEADERS[length] if length < 126 else _long_header(length))
                chunks.append(data)
                size += length
        written = False
        try:
            async with ws.send_context():  # raises ConnectionClosed, writing nothing, unless the connection is open
                transport = ws.transport
                transport.write(b"".join(chunks))
                written = True
                # On leaving, send_context waits for the transport to drain, which it does only over this mark.
                self._waiting_for_client = transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]
        finally:
            self._waiting_for_client = False
            # Also when the drain after the write fails or is cancelled: the frames were handed to the socket.
            if written:
                self._account(batch)

    def _account(self, batch: list[TradeFrames | ControlFrame]) -> None:
        recorder = self._recorder
        for item in batch:
            if isinstance(item, ControlFrame):
                if recorder is not None:
                    recorder(item.text)
                continue
            if recorder is not None:
                for frame in item.frames:
                    recorder(frame)
            if not self._closed:  # a slow consumer dropped meanwhile has nothing pending any more
                self.pending_frames -= len(item.frames)
            self._ledger.record(self.exchange, item.symbol, item.first_id, len(item.frames) * item.per_frame,
                                self.connection_id)


def _long_header(length: int) -> bytes:
    """The header of a text frame of 126 bytes or more (16-bit or 64-bit extended length)."""
    if length < 2**16:
        return struct.pack("!BBH", _TEXT_FIN, 126, length)
    return struct.pack("!BBQ", _TEXT_FIN, 127, length)
