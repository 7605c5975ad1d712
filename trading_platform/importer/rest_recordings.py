"""What cryptofeed's REST recordings tell an import: the recorded responses (book snapshots to match to
their symbols), the symbols the feed subscribed (its ``configuration:`` line) and the natives Binance listed
(its ``exchangeInfo`` answer), which give native symbols their BASE-QUOTE spelling. The line format itself is
``trading_platform/capture_format.py``'s."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import msgspec

from trading_platform.capture_format import CaptureLine, LineKind, read_capture
from trading_platform.config import SYMBOL_PATTERN


class _ListedSymbol(msgspec.Struct, gc=False):
    symbol: str
    baseAsset: str
    quoteAsset: str


class _ExchangeInfo(msgspec.Struct, gc=False):
    symbols: list[_ListedSymbol]


_exchange_info_decoder = msgspec.json.Decoder(_ExchangeInfo)


@dataclass
class RestRecording:
    """What REST recording files hold: the responses, and what cryptofeed noted about the feed's symbols."""

    files: list[Path] = field(default_factory=list)
    responses: list[CaptureLine] = field(default_factory=list)
    subscribed: set[str] = field(default_factory=set)  # BASE-QUOTE symbols of cryptofeed's configuration
    listed: dict[str, str] = field(default_factory=dict)  # native -> BASE-QUOTE from Binance exchangeInfo
    unreadable_lines: int = 0


def read_rest_recordings(paths: Sequence[Path]) -> RestRecording:
    recording = RestRecording(files=list(paths))
    for path in paths:
        for line in read_capture(path):
            if line.kind is LineKind.CONFIGURATION:
                _collect_subscribed(line.payload, recording.subscribed)
            elif line.kind is not LineKind.REST:
                recording.unreadable_lines += 1  # e.g. a body that spanned lines: not a response we can use
            elif urlparse(line.url or "").path.endswith("/exchangeInfo"):
                _collect_listed(line.payload, recording.listed)
            else:
                recording.responses.append(line)
    recording.responses.sort(key=lambda r: r.received_us)
    return recording


def _collect_subscribed(text: bytes, into: set[str]) -> None:
    try:
        configuration = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return
    if isinstance(configuration, dict):
        for symbols in configuration.values():
            if isinstance(symbols, list):
                into.update(s for s in symbols if isinstance(s, str) and SYMBOL_PATTERN.match(s))


def _collect_listed(body: bytes, into: dict[str, str]) -> None:
    try:
        info = _exchange_info_decoder.decode(body)
    except msgspec.DecodeError:
        return
    into.update({s.symbol: f"{s.baseAsset}-{s.quoteAsset}" for s in info.symbols})
