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

from websockets.exceptions import ConnectionClosed

from trading_platform import capture_format
from trading_platform.capture_format import LineKind
from trading_platform.replay.connection import ReplayConnection
from trading_platform.replay.feed import Session
from trading_platform.replay.recorded import RecordedFeed

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


class CaptureSession(Session):
    def __init__(self, ws: ReplayConnection, feed: CaptureFeed) -> None:
        super().__init__(ws, feed)
        self.frames_sent = 0
        self.done = False  # every frame of the capture is queued

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "capture_frames": self.frames_sent, "capture_done": self.done}


class CaptureFeed(RecordedFeed):
    """Serves a capture on ``/<exchange>/...`` in place of the synthetic protocol."""

    def __init__(self, exchange: str, capture: Path, speed: float, *args: Any, **kwargs: Any) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0 (0: as fast as possible), got {speed}")
        if not capture.is_file():
            raise ValueError(f"capture file not found: {capture}")
        self.name = exchange
        super().__init__(*args, **kwargs)
        self.capture = capture
        self.speed = speed
        for line in read_capture(capture):
            if line.kind == "rest":
                self.add_answer(self.request_key(line.url), 200, line.text)

    def request_key(self, url: str) -> tuple[str, str]:
        """A REST answer is found by its path's last segment and ``symbol``: the recorded host and prefix are
        another server's."""
        parts = urlsplit(url)
        symbol = parse_qs(parts.query).get("symbol", [""])[0]
        return parts.path.rstrip("/").rsplit("/", 1)[-1], symbol

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
