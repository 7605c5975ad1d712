"""Replaying a recorded capture: clients of one exchange's path get the recorded frames, in order.

A capture is a file in the recording format (``trading_platform/capture_format.py``, the one
``FrameRecorder`` writes and users' archives use, protocols doc section 4); the replay gives its lines
this meaning:
- a raw frame (one per line, the exact text): sent back to back, as fast as the client reads;
- a cryptofeed frame ``<unix_ts>: <frame>``: its timestamp drives the pacing (``speed`` 2 plays twice as
  fast, 0 as fast as possible);
- a REST answer ``<url> -> <ts>: <body>``: served on the same port: the n-th request for a path's last
  segment and ``symbol`` (e.g. Binance ``/api/v3/depth?symbol=BTCUSDT``) gets the n-th recorded body, the
  last one repeats;
- every other line (connection opened, client sent, configuration) is skipped.

Every WebSocket connection to any path under the exchange's prefix gets the whole capture from its
first frame; what the client sends is ignored. After the last frame the connection stays open and
idle (a client that reconnected would otherwise get everything again). Replayed frames are not parsed
and not recorded in the trade ledger; only connection faults (drop / refuse) apply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from trading_platform import capture_format
from trading_platform.capture_format import LineKind
from trading_platform.replay.connection import ReplayConnection, json_text_response
from trading_platform.replay.faults import CONNECTION_FAULTS, Fault
from trading_platform.replay.feed import ExchangeFeed, RequestRejected, Session
from trading_platform.replay.market import SymbolSpec, Trade

MAX_QUEUED = 1000  # frames queued ahead of a slow client before the reader waits


@dataclass(frozen=True)
class ReplayLine:
    """What the replay does with one capture line: play a frame, serve a REST answer, or skip it."""

    kind: str  # "frame", "rest", "skip"
    text: str
    timestamp: float | None = None  # the recorded time in seconds, which paces the frames
    url: str = ""


def parse_line(line: str) -> ReplayLine:
    parsed = capture_format.parse_line(line.encode())
    return ReplayLine("skip", "") if parsed is None else _replay_line(parsed)


def _replay_line(line: capture_format.CaptureLine) -> ReplayLine:
    timestamp = line.received_us / 1_000_000 if line.timed else None
    if line.kind is LineKind.FRAME:
        return ReplayLine("frame", line.text, timestamp)
    if line.kind is LineKind.REST:
        return ReplayLine("rest", line.text, timestamp, line.url or "")
    return ReplayLine("skip", "", timestamp, line.url or "")


def read_capture(path: Path) -> Iterator[ReplayLine]:
    """The frames and REST answers of a capture, in file order."""
    for line in capture_format.read_capture(path, (LineKind.FRAME, LineKind.REST)):
        yield _replay_line(line)


def _rest_key(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    symbol = parse_qs(parts.query).get("symbol", [""])[0]
    return parts.path.rstrip("/").rsplit("/", 1)[-1], symbol


class CaptureSession(Session):
    def __init__(self, ws: ReplayConnection, feed: CaptureFeed) -> None:
        super().__init__(ws, feed)
        self.frames_sent = 0
        self.done = False  # every frame of the capture is queued

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "capture_frames": self.frames_sent, "capture_done": self.done}


class CaptureFeed(ExchangeFeed):
    """Serves a capture on ``/<exchange>/...`` in place of the synthetic protocol."""

    supported_faults = CONNECTION_FAULTS

    def __init__(self, exchange: str, capture: Path, speed: float, *args: Any, **kwargs: Any) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0 (0: as fast as possible), got {speed}")
        if not capture.is_file():
            raise ValueError(f"capture file not found: {capture}")
        self.name = exchange
        super().__init__(*args, **kwargs)
        self.capture = capture
        self.speed = speed
        self._rest: dict[tuple[str, str], list[str]] = {}
        self._rest_served: dict[tuple[str, str], int] = {}
        for line in read_capture(capture):
            if line.kind == "rest":
                self._rest.setdefault(_rest_key(line.url), []).append(line.text)

    def tick(self, now_ms: int) -> None:
        return None  # no synthetic market

    def parse_ws_target(self, path: str, query: dict[str, list[str]]) -> object:
        if path != self.path_prefix and not path.startswith(self.path_prefix + "/"):
            raise RequestRejected(404, f"Not Found: {path}\n")
        return None

    async def serve(self, ws: ReplayConnection, target: object) -> None:
        session = CaptureSession(ws, self)
        sender = self.start_session(session)
        player = asyncio.create_task(self._play(session), name=f"{self.name}-capture-{session.connection_id}")
        try:
            async for _ in ws:
                pass  # subscriptions and pings of the client are not answered: the capture has the answers
        except ConnectionClosed:
            pass
        finally:
            player.cancel()
            await asyncio.gather(player, return_exceptions=True)
            await self.end_session(session, sender)

    async def _play(self, session: CaptureSession) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        first_ts: float | None = None
        outbox = session.outbox
        for line in read_capture(self.capture):
            if line.kind != "frame":
                continue
            if line.timestamp is not None and self.speed > 0:
                if first_ts is None:
                    first_ts = line.timestamp
                delay = started + (line.timestamp - first_ts) / self.speed - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            while len(outbox) > MAX_QUEUED:
                await asyncio.sleep(0.005)
            outbox.push_control(line.text)
            session.frames_sent += 1
        session.done = True

    def http_request(self, ws: ServerConnection, request: Request, path: str) -> Response | None:
        key = _rest_key(request.path)
        bodies = self._rest.get(key)
        if not bodies:
            return None
        served = self._rest_served.get(key, 0)
        self._rest_served[key] = served + 1
        return json_text_response(ws, 200, bodies[min(served, len(bodies) - 1)])

    def publish(self, batches: list[tuple[SymbolSpec, list[Trade]]], event_ms: int) -> None:
        return None

    def fault_frames(self, fault: Fault, session: Session, event_ms: int) -> list[str]:
        raise ValueError(f"{fault.kind} is not supported while replaying a capture")
