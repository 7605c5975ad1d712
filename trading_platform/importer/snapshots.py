"""Where an import's book snapshots come from: REST responses recorded with the capture or given as files,
matched to their symbol by request URL. When the capture has receive times, a recorded response is applied
where it was received, so the book sync rule sees exactly the order the recording client saw; otherwise the
n-th snapshot request of a symbol gets its n-th recorded response."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from trading_platform.capture_format import CaptureLine, LineKind
from trading_platform.exchanges.base import Exchange
from trading_platform.exchanges.decoded import FetchSnapshot
from trading_platform.importer.report import ImportReport
from trading_platform.ingestion.normalize import Decoder


@dataclass(slots=True)
class BookSnapshot(CaptureLine):
    """A REST response as the decoders take a book snapshot: ``b"<symbol>\\n" + body``."""


class SnapshotSources:
    """Where the books' REST snapshots come from, and which recorded responses are of use."""

    def __init__(self, decoder: Decoder, selected: set[str], report: ImportReport) -> None:
        self.decoder = decoder
        self.selected = selected
        self.report = report
        snapshot_url = getattr(decoder, "snapshot_url", None)
        # The path the decoder itself would ask (Binance /api/v3/depth); any host: replay, proxy or live.
        self.path = urlparse(snapshot_url(next(iter(selected), "X-Y"))).path if snapshot_url else None
        self.only = next(iter(selected)) if len(selected) == 1 else None
        self.on_demand: dict[str, deque[CaptureLine]] = {}  # symbol -> answers to its next requests, in order
        self.files: dict[str, Path] = {}  # symbol -> one response body, served at its first request

    def book_snapshot(self, record: CaptureLine) -> CaptureLine | None:
        """A REST response as the decoder takes it (``b"<symbol>\\n" + body``), or None when it is not a book
        snapshot of an imported symbol (counted by why)."""
        if isinstance(record, BookSnapshot):
            return record
        if self.path is None:
            self.report.rest_unused[f"{self.report.exchange} books come over the WebSocket"] += 1
            return None
        if record.url and not urlparse(record.url).path.endswith(self.path):
            self.report.rest_unused["not a book snapshot"] += 1
            return None
        symbol = _rest_symbol(record.url, self.decoder, self.only)
        if symbol is None or symbol not in self.selected:
            self.report.rest_unused["for a symbol not imported"] += 1
            return None
        return BookSnapshot(LineKind.REST, record.received_us, symbol.encode() + b"\n" + record.payload, record.url,
                             timed=record.timed)

    def take_recorded(self, responses: list[CaptureLine], first_timed_us: int | None,
                      last_timed_us: int | None) -> list[CaptureLine]:
        """The recorded book snapshots of imported symbols: returned to be merged at their receive times into a
        capture that has them, else queued to answer each symbol's requests in order."""
        timed: list[CaptureLine] = []
        for response in responses:
            answer = self.book_snapshot(response)
            if answer is None:
                continue
            if first_timed_us is None or last_timed_us is None:
                self.on_demand.setdefault(_symbol_of(answer), deque()).append(answer)
            elif first_timed_us <= answer.received_us <= last_timed_us:
                timed.append(answer)
            else:  # before the capture's first frame nothing asked for it; after its last, nothing is left
                self.report.rest_unused["outside the capture's time span"] += 1
        return timed

    def answer(self, action: FetchSnapshot, at_us: int) -> CaptureLine | None:
        """Offline, a snapshot request is answered from what was recorded or given, never from the network."""
        queue = self.on_demand.get(action.symbol)
        if queue:
            answer = queue.popleft()
            return BookSnapshot(LineKind.REST, at_us, answer.payload, answer.url)
        file = self.files.pop(action.symbol, None)
        if file is not None:
            return BookSnapshot(LineKind.REST, at_us, action.symbol.encode() + b"\n" + file.read_bytes())
        return None


def merged_at_receive_times(records: Iterable[CaptureLine], responses: Sequence[CaptureLine]) -> Iterator[CaptureLine]:
    """Capture records with recorded REST answers placed at their receive times."""
    queue = deque(responses)
    for record in records:
        while queue and record.timed and queue[0].received_us <= record.received_us:
            yield queue.popleft()
        yield record
    yield from queue


def _symbol_of(record: CaptureLine) -> str:
    """The symbol of a prefixed REST record."""
    return record.payload.partition(b"\n")[0].decode()


def book_snapshots_of(chunk: list[CaptureLine], sources: SnapshotSources) -> list[CaptureLine]:
    """The chunk with its REST records prefixed for the decoder, less those that are no book snapshot of an
    imported symbol (a decoder would take any REST record for one)."""
    kept: list[CaptureLine] = []
    for record in chunk:
        if record.kind is not LineKind.REST:
            kept.append(record)
        elif (snapshot := sources.book_snapshot(record)) is not None:
            kept.append(snapshot)
    return kept


def _rest_symbol(url: str | None, exchange: Exchange | Decoder, default: str | None) -> str | None:
    """Which symbol a REST response is for: the URL's ``symbol``/``pair``/``product_id`` parameter."""
    if url:
        query = parse_qs(urlparse(url).query)
        for key in ("symbol", "pair", "product_id"):
            if key in query:
                native = query[key][0]
                mapping = getattr(exchange, "native_to_symbol", {})
                return mapping.get(native) or mapping.get(native.upper()) or native
    return default
