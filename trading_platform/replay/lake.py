"""Replaying recorded days from the lake's raw-frame archive in the exchange's own protocol
(``trading-platform replay --from-lake EXCHANGE DATE[..DATE]``): the feed a strategy or a backtest reads live,
served from what the platform received those days (``ingestion/frame_archive.py``).

What a client of ``/<exchange>/...`` gets:
- the archived frames, byte for byte and in order, paced by their receive times (``speed`` 1 as recorded,
  10 ten times faster, 0 as fast as the client reads);
- connections that end where the recorded ones did: at a recorded connection's end the server closes the
  socket (1012, service restart) and the client's next connection continues with the next recorded one, so
  per-connection protocol state (Coinbase's ``sequence_num``, book snapshots) is what it was live;
- the recorded REST answers (``recorded.py``): each is filed under the URL the platform asked it under
  (``Exchange.request_url`` inverts the record's header), the n-th request for a URL gets the n-th answer (the
  last repeats); a request refused for good live is refused again (400 with the recorded error); a request the
  recording holds no answer to gets 404, so the client records what it wanted to fill as lost, as it would
  have live.

One client replays at a time: frames go to the newest connection, each frame once; a frame the closing
connection did not accept goes to the next connection. A day that begins inside a connection opened the day
before starts mid-connection: trades and sequences continue as a restarted platform's would, while books
resync at the next recorded connection (their snapshot is in the previous day's archive). The first pass over
the archive (at start, logged) indexes the REST answers; the frames are then streamed a batch at a time, so a
day of any size is replayed in bounded memory. Faults: connection faults only (``drop_connections``,
``refuse_connections``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from trading_platform.exchanges.decoded import RecordKind
from trading_platform.exchanges.registry import exchange_for
from trading_platform.ingestion.frame_archive import archive_keys, read_archive
from trading_platform.replay.connection import ReplayConnection, json_text_response
from trading_platform.replay.feed import Session
from trading_platform.replay.recorded import RecordedFeed
from trading_platform.storage.object_store import ObjectStore

log = logging.getLogger(__name__)

RECORDED_CONNECTION_ENDED = 1012  # "service restart": the client reconnects, as it did live


def parse_days(span: str) -> tuple[date, ...]:
    """``YYYY-MM-DD`` or ``YYYY-MM-DD..YYYY-MM-DD`` (inclusive) -> the days, in order."""
    first, dots, last = span.partition("..")
    try:
        start = date.fromisoformat(first)
        end = date.fromisoformat(last) if dots else start
    except ValueError:
        raise ValueError(f"dates {span!r}: expected YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD") from None
    if end < start:
        raise ValueError(f"dates {span!r}: the range ends before it starts")
    return tuple(start + timedelta(days=n) for n in range((end - start).days + 1))


@dataclass(frozen=True)
class LakeDays:
    """What ``--from-lake`` replays: ``exchange``'s archived frames of ``days`` in the lake ``store``."""

    exchange: str
    store: ObjectStore
    days: tuple[date, ...]

    def describe(self) -> str:
        span = self.days[0].isoformat()
        return span if len(self.days) == 1 else f"{span}..{self.days[-1].isoformat()}"


class LakeSession(Session):
    def __init__(self, ws: ReplayConnection, feed: LakeFeed) -> None:
        super().__init__(ws, feed)
        self.frames_sent = 0

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "replayed_frames": self.frames_sent}


class LakeFeed(RecordedFeed):
    """Serves archived days on ``/<exchange>/...`` in place of the synthetic market."""

    def __init__(self, recording: LakeDays, speed: float, *args: Any, **kwargs: Any) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0 (0: as fast as possible), got {speed}")
        self.name = recording.exchange
        super().__init__(*args, **kwargs)
        self.recording = recording
        self.speed = speed
        self.keys = [key for day in recording.days for key in archive_keys(recording.store, self.name, day)]
        if not self.keys:
            raise ValueError(
                f"the lake holds no raw-frame archive of {self.name} for {recording.describe()} "
                f"(raw/frames/exchange={self.name}/date=...): ingestion runs archive every batch they flush; is "
                "TP_STORAGE_URL the lake they wrote?")
        self.unmatched_answers = 0  # REST records whose header names no request (logged)
        self.unanswered: list[str] = []  # requests the recording holds no answer to (logged)
        self._index_answers()
        self._current: LakeSession | None = None
        self._connected = asyncio.Event()
        self._player: asyncio.Task[None] | None = None
        self._clock: float | None = None  # loop time at which the first frame was due (pacing)
        self._first_us = 0
        self.frames_sent = 0
        self.connections_ended = 0  # recorded connections played to their end
        self.done = False  # every archived frame has been sent

    def _index_answers(self) -> None:
        client = exchange_for(self.config)
        client.rest_url = self.path_prefix  # URLs come out as this feed's paths
        for key in self.keys:
            for _offset, _received, kind, payload in read_archive(self.recording.store, key).records:
                if kind not in (RecordKind.REST, RecordKind.REST_FAILED):
                    continue
                header, _, body = payload.partition(b"\n")
                url = client.request_url(header.decode("utf-8", "replace"))
                if url is None:
                    self.unmatched_answers += 1
                    continue
                self.add_answer(self.request_key(url), 200 if kind == RecordKind.REST else 400,
                                body.decode("utf-8", "replace"))
        log.info("replay %s from the lake (%s): %d archived batches, %d recorded REST answers%s", self.name,
                 self.recording.describe(), len(self.keys), self.recorded_answers,
                 f" ({self.unmatched_answers} with a header no request matches, not served)"
                 if self.unmatched_answers else "")

    def request_key(self, url: str) -> str:
        """The path and query, the query in a canonical order: the platform asked this very server's paths."""
        parts = urlsplit(url)
        return f"{parts.path.rstrip('/')}?{urlencode(sorted(parse_qsl(parts.query, keep_blank_values=True)))}"

    def no_answer(self, ws: ServerConnection, request: Request) -> Response:
        self.unanswered.append(request.path)
        log.warning("replay %s from the lake: no recorded answer to GET %s (404)", self.name, request.path)
        return json_text_response(ws, 404, json.dumps(
            {"error": f"the recording of {self.name} {self.recording.describe()} holds no answer to "
                      f"GET {request.path}"}))

    # -- connections ----------------------------------------------------------------------------------------
    async def serve(self, ws: ReplayConnection, target: object) -> None:
        session = LakeSession(ws, self)
        sender = self.start_session(session)  # idle: the player sends, so a frame is sent once whatever closes
        self._current = session
        self._connected.set()
        if self._player is None:
            self._player = asyncio.create_task(self._play(), name=f"{self.name}-lake-replay")
        try:
            async for _ in ws:
                pass  # subscriptions and pings are not answered: the recording holds the answers
        except ConnectionClosed:
            pass
        finally:
            if self._current is session:
                self._current = None
            await self.end_session(session, sender)

    async def _open_connection(self) -> LakeSession:
        """The connection frames go to, waiting for the client to (re)connect; the wait does not count as
        recorded time (pacing resumes where it stopped)."""
        loop = asyncio.get_running_loop()
        waited_from = loop.time()
        while (session := self._current) is None or session.ws.state is not State.OPEN:
            self._connected.clear()
            await self._connected.wait()
        if self._clock is not None:
            self._clock += loop.time() - waited_from
        return session

    async def _end_recorded_connection(self) -> None:
        session = self._current
        if session is None or not session.frames_sent:
            return  # nothing of the recorded connection was sent here: the client opened a new one already
        self._current = None
        self.connections_ended += 1
        await session.ws.close(RECORDED_CONNECTION_ENDED, "the recorded connection ended here")

    async def _play(self) -> None:
        loop = asyncio.get_running_loop()
        for key in self.keys:
            batch = await asyncio.to_thread(read_archive, self.recording.store, key)
            for _offset, received_us, kind, payload in batch.records:
                if kind == RecordKind.CONNECTED:
                    await self._end_recorded_connection()
                    continue
                if kind != RecordKind.FRAME:
                    continue  # REST answers are served on request
                if self.speed > 0:
                    if self._clock is None:
                        self._clock, self._first_us = loop.time(), received_us
                    delay = self._clock + (received_us - self._first_us) / 1e6 / self.speed - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await self._send(payload)
        self.done = True
        log.info("replay %s from the lake (%s): all %d frames sent", self.name, self.recording.describe(),
                 self.frames_sent)

    async def _send(self, frame: bytes) -> None:
        while True:
            session = await self._open_connection()
            try:
                await session.ws.send(frame, text=True)  # the received bytes, as they were (text frames)
            except ConnectionClosed:
                continue  # not accepted: the client's next connection gets it
            session.frames_sent += 1
            self.frames_sent += 1
            if self.recorder is not None:
                self.recorder.frame(frame.decode("utf-8", "replace"))
            return

    def progress(self) -> dict[str, object]:
        """This feed's part of ``GET /_replay/health``: how far the replay is."""
        return {"archived_batches": len(self.keys), "frames_sent": self.frames_sent,
                "recorded_connections_ended": self.connections_ended, "rest_answered": self.answered,
                "rest_unanswered": len(self.unanswered), "done": self.done}
