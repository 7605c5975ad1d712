"""What the feeds that serve a recording share (a capture file, ``capture.py``; the lake's raw-frame archive,
``lake.py``): no synthetic market ticks or trades, connection faults only, and REST requests answered with the
recorded bodies. Each recorded answer is filed under a key the feed derives from the request; the n-th request
for a key gets the n-th answer, the last one repeats."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Hashable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from trading_platform.replay.connection import json_text_response
from trading_platform.replay.faults import CONNECTION_FAULTS, Fault
from trading_platform.replay.feed import ExchangeFeed, Session
from trading_platform.replay.market import SymbolSpec, Trade


class RecordedFeed(ExchangeFeed):
    """Serves a recording on ``/<exchange>/...`` in place of the synthetic protocol."""

    supported_faults = CONNECTION_FAULTS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._answers: dict[Hashable, list[tuple[int, str]]] = {}
        self._served: dict[Hashable, int] = {}
        self.answered = 0  # requests given a recorded answer

    @abstractmethod
    def request_key(self, url: str) -> Hashable:
        """What a request (path and query) and the recorded answer to it are filed under."""

    def add_answer(self, key: Hashable, status: int, body: str) -> None:
        self._answers.setdefault(key, []).append((status, body))

    @property
    def recorded_answers(self) -> int:
        return sum(map(len, self._answers.values()))

    def no_answer(self, ws: ServerConnection, request: Request) -> Response | None:
        """The response to a request the recording holds no answer to (None: the server's plain 404)."""
        return None

    def http_request(self, ws: ServerConnection, request: Request, path: str) -> Response | None:
        key = self.request_key(request.path)
        answers = self._answers.get(key)
        if not answers:
            return self.no_answer(ws, request)
        served = self._served.get(key, 0)
        self._served[key] = served + 1
        self.answered += 1
        status, body = answers[min(served, len(answers) - 1)]
        return json_text_response(ws, status, body)

    def tick(self, now_ms: int) -> None:
        return None  # no synthetic market

    def parse_ws_target(self, path: str, query: dict[str, list[str]]) -> object:
        return None  # any path under the prefix (the server routes by it): the recording answers what was asked

    def publish(self, batches: list[tuple[SymbolSpec, list[Trade]]], event_ms: int) -> None:
        return None

    def fault_frames(self, fault: Fault, session: Session, event_ms: int) -> list[str]:
        raise ValueError(f"{fault.kind} is not supported while replaying a recording")
