"""Recording what the server sends on an exchange, so a test can replay exactly that later.

Two line formats (both read back by ``capture.py``):
- ``raw``: one frame per line, the exact text sent, nothing else.
- ``cryptofeed``: cryptofeed's raw-data recording — ``<url> <-> <ts>`` when a connection opens,
  ``<ts>: <frame>`` for each frame sent, ``<url> -> <ts>: <body>`` for each REST answer (Binance's
  depth snapshot), with ``<ts>`` the float Unix time of the send; replaying it reproduces the pacing.

Every connection of the exchange writes to the same file in send order: record with one client
connection per exchange for a capture that replays as one connection saw it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import IO, Literal

RecordFormat = Literal["raw", "cryptofeed"]
RECORD_FORMATS: tuple[RecordFormat, ...] = ("raw", "cryptofeed")


class FrameRecorder:
    def __init__(self, path: Path, record_format: RecordFormat = "raw") -> None:
        if record_format not in RECORD_FORMATS:
            raise ValueError(f"record format must be one of {RECORD_FORMATS}, got {record_format!r}")
        self.path = path
        self.format = record_format
        self._file: IO[str] = path.open("w", encoding="utf-8")
        self.frames = 0

    def frame(self, text: str) -> None:
        self.frames += 1
        if self.format == "raw":
            self._file.write(text + "\n")
        else:
            self._file.write(f"{time.time():.6f}: {text}\n")

    def connected(self, url: str) -> None:
        if self.format == "cryptofeed":
            self._file.write(f"{url} <-> {time.time():.6f}\n")

    def rest(self, url: str, body: str) -> None:
        if self.format == "cryptofeed":
            self._file.write(f"{url} -> {time.time():.6f}: {body}\n")

    def flush(self) -> None:
        if not self._file.closed:
            self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
