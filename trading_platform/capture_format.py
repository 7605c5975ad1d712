"""The recording format: captures of a feed, read and written (exchange protocols notes, section 4).

A capture is a text file, one record per line, in either of two formats (mixed freely; each line is
recognized on its own):
- ``raw``: one frame per line, the exact text received, nothing else (no receive time);
- cryptofeed's raw-data recording, with ``<ts>`` the float Unix time in seconds:
  ``<ts>: <frame>`` a frame received; ``<url> <-> <ts>`` a connection opened; ``<url> <- <ts>: <msg>`` a
  message the client sent; ``<url> -> <ts>: <body>`` a REST response (cryptofeed may append
  `` header: {...}``, which is not part of the body); ``configuration: <json>`` the subscription (the first
  line of ``<FEED>.0``).
cryptofeed writes each connection to its own file, ``<FEED>.<ws|http>.<n>.<part>`` (``BINANCE.ws.1.0``;
``part`` counts 100 MB rotations), so a WebSocket capture's REST responses (Binance's depth snapshots) are in
``<FEED>.http.<n>.<part>`` beside it, and ``<FEED>.0`` holds the configuration and symbol-list answers.

This module only knows the file format: the offline importer (``importer/archive.py``) and the replay
feed (``replay/capture.py`` serves captures, ``FrameRecorder`` writes them) decide what each line means to
them. Lines are read as bytes (a frame that is not UTF-8 is still a line; its reader decides).
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Literal

import msgspec

_DIGITS = frozenset(b"0123456789"[i:i + 1] for i in range(10))
_ADDRESSED = re.compile(rb"^(\S+) (<->|<-|->) ([0-9.]+)(?:: (.*)|\s*)$", re.S)  # lines that begin with a URL
_HEADER = b" header: "  # cryptofeed's suffix on REST lines recorded with their response headers
_CONFIGURATION = b"configuration: "
_CRYPTOFEED_WS = re.compile(r"^(?P<feed>.+)\.ws\.(?P<conn>\d+)\.(?P<part>\d+)$")


class LineKind(StrEnum):
    FRAME = "frame"  # a frame received: ``<ts>: <frame>``, or a raw line
    CONNECTED = "connected"  # ``<url> <-> <ts>``
    SENT = "sent"  # ``<url> <- <ts>: <message>``
    REST = "rest"  # ``<url> -> <ts>: <body>``
    CONFIGURATION = "configuration"  # ``configuration: <json>``


@dataclass(slots=True)
class CaptureLine:
    """One line of a capture. ``payload``: the frame, the message sent, the REST body (without cryptofeed's
    header suffix), the configuration JSON, or for CONNECTED the URL. ``timed``: ``received_us`` is the
    recording's own time; else the line has none and carries the time its reader gave it."""

    kind: LineKind
    received_us: int
    payload: bytes
    url: str | None = None
    timed: bool = False

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", "replace")


def parse_line(raw: bytes, untimed_us: int = 0) -> CaptureLine | None:
    """One capture line, or None for an empty one. ``untimed_us``: the time of a line that has none (a raw
    frame, a configuration). A line that is no cryptofeed record is a raw frame (its reader may reject it)."""
    first = raw[:1]
    if first in _DIGITS:
        # Nearly every line of a cryptofeed recording is a received frame: the hot path, kept to a partition
        # and a float() (a third of what a regex match costs per line).
        stamp, found, body = raw.partition(b": ")
        if found:
            try:
                return CaptureLine(LineKind.FRAME, round(float(stamp) * 1_000_000), body.rstrip(b"\r\n"), timed=True)
            except (ValueError, OverflowError):  # not a time after all: a raw line
                pass
    line = raw.rstrip(b"\r\n")
    if not line.strip():
        return None
    if first in (b"{", b"["):
        return CaptureLine(LineKind.FRAME, untimed_us, line)
    if line.startswith(_CONFIGURATION):
        return CaptureLine(LineKind.CONFIGURATION, untimed_us, line[len(_CONFIGURATION):])
    if (match := _ADDRESSED.match(line)) is not None:
        addressed = _addressed_line(match)
        if addressed is not None:
            return addressed
    return CaptureLine(LineKind.FRAME, untimed_us, line)


def _addressed_line(match: re.Match[bytes]) -> CaptureLine | None:
    """A ``<url> <arrow> <ts>[: <body>]`` line, or None when its time or body does not fit its arrow."""
    url, arrow, stamp, body = match.groups()
    try:
        at_us = _us(stamp)
    except (ValueError, OverflowError):
        return None
    text_url = url.decode("utf-8", "replace")
    if arrow == b"<->":
        return CaptureLine(LineKind.CONNECTED, at_us, url, text_url, timed=True) if body is None else None
    if body is None:
        return None
    if arrow == b"->":
        return CaptureLine(LineKind.REST, at_us, _rest_body(body), text_url, timed=True)
    return CaptureLine(LineKind.SENT, at_us, body, text_url, timed=True)


def _us(seconds: bytes) -> int:
    return round(float(seconds) * 1_000_000)


def _rest_body(body: bytes) -> bytes:
    """The response body of a REST line, without the `` header: {...}`` cryptofeed may append."""
    head, found, tail = body.rpartition(_HEADER)
    if found and head and tail.lstrip()[:1] == b"{":
        try:
            if isinstance(msgspec.json.decode(tail), dict):
                return head
        except msgspec.DecodeError:
            pass
    return body


class CaptureReader:
    """The lines of a capture of the ``kinds`` asked for (default: all), streamed (empty lines left out);
    ``bytes_read`` drives a progress bar, so a capture of any size never has to fit in memory. A line without a
    time gets the file's modification time plus its line number in microseconds, so untimed frames stay
    ordered and the result deterministic."""

    def __init__(self, path: Path, kinds: Collection[LineKind] = frozenset(LineKind)) -> None:
        self.path = path
        self.kinds = frozenset(kinds)
        self.bytes_read = 0
        self.lines = 0  # lines yielded

    def __iter__(self) -> Iterator[CaptureLine]:
        base_us = int(self.path.stat().st_mtime * 1_000_000)
        kinds = self.kinds
        with self.path.open("rb") as handle:
            for number, raw in enumerate(handle):
                self.bytes_read += len(raw)
                line = parse_line(raw, base_us + number)
                if line is not None and line.kind in kinds:
                    self.lines += 1
                    yield line


def read_capture(path: Path, kinds: Collection[LineKind] = frozenset(LineKind)) -> Iterator[CaptureLine]:
    """The lines of a capture in either format, of the ``kinds`` asked for (default: all)."""
    return iter(CaptureReader(path, kinds))


def is_rest_recording(path: Path) -> bool:
    """True for a cryptofeed REST recording (its first line a REST response or the configuration), False for
    a file holding one response body."""
    with path.open("rb") as handle:
        for raw in handle:
            line = parse_line(raw.lstrip())
            if line is not None:
                return line.kind in (LineKind.REST, LineKind.CONFIGURATION)
    return False


def sibling_rest_recordings(capture: Path) -> list[Path]:
    """cryptofeed's REST files of the feed a ``<FEED>.ws.<n>.<part>`` capture belongs to: ``<FEED>.0`` (its
    configuration and symbol lists) and every ``<FEED>.http.<n>.<part>``, in connection and rotation order."""
    match = _CRYPTOFEED_WS.match(capture.name)
    if match is None:
        return []
    feed = match["feed"]
    http = re.compile(re.escape(feed) + r"\.http\.(\d+)\.(\d+)")
    found: list[tuple[tuple[int, int], Path]] = []
    for path in capture.parent.iterdir():
        if path.name == f"{feed}.0":
            found.append(((-1, -1), path))
        elif (part := http.fullmatch(path.name)) is not None:
            found.append(((int(part[1]), int(part[2])), path))
    return [path for _, path in sorted(found)]


# --- writing ------------------------------------------------------------------------------------------------
def format_time(at_us: int) -> str:
    """cryptofeed's ``<ts>``: Unix seconds with six decimals, written from integers so a time reads back
    to the same microsecond."""
    return f"{at_us // 1_000_000}.{at_us % 1_000_000:06d}"


def frame_line(frame: str, at_us: int | None = None) -> str:
    """A received frame: timed (cryptofeed) or, without ``at_us``, a raw line."""
    return f"{frame}\n" if at_us is None else f"{format_time(at_us)}: {frame}\n"


def connected_line(url: str, at_us: int) -> str:
    return f"{url} <-> {format_time(at_us)}\n"


def sent_line(url: str, at_us: int, message: str) -> str:
    return f"{url} <- {format_time(at_us)}: {message}\n"


def rest_line(url: str, at_us: int, body: str) -> str:
    return f"{url} -> {format_time(at_us)}: {body}\n"


def configuration_line(configuration: str) -> str:
    return f"{_CONFIGURATION.decode()}{configuration}\n"


RecordFormat = Literal["raw", "cryptofeed"]
RECORD_FORMATS: tuple[RecordFormat, ...] = ("raw", "cryptofeed")


class FrameRecorder:
    """Writes what a feed sends to a capture as it is sent: in ``raw`` only the frames; in ``cryptofeed``
    each frame, connection and REST answer with the time it was sent, so replaying it reproduces the pacing.
    Every connection writes to the same file in send order: record with one client connection for a capture
    that replays as one connection saw it."""

    def __init__(self, path: Path, record_format: RecordFormat = "raw") -> None:
        if record_format not in RECORD_FORMATS:
            raise ValueError(f"record format must be one of {RECORD_FORMATS}, got {record_format!r}")
        self.path = path
        self.format = record_format
        self._file: IO[str] = path.open("w", encoding="utf-8")
        self.frames = 0

    def frame(self, text: str) -> None:
        self.frames += 1
        self._file.write(frame_line(text, None if self.format == "raw" else _now_us()))

    def connected(self, url: str) -> None:
        if self.format == "cryptofeed":
            self._file.write(connected_line(url, _now_us()))

    def rest(self, url: str, body: str) -> None:
        if self.format == "cryptofeed":
            self._file.write(rest_line(url, _now_us(), body))

    def flush(self) -> None:
        if not self._file.closed:
            self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def _now_us() -> int:
    return time.time_ns() // 1_000
