"""Offline importer: recorded raw feed data -> the same normalized Parquet datasets the live path writes.

Reads captures as users keep them (section 4 of the exchange protocols notes):
- one raw frame per line (no receive time: the importer stamps each frame with the time of its line
  order, starting at the capture file's modification time, so rows stay ordered and deterministic);
- cryptofeed's raw-data recording: ``<url> <-> <ts>`` (connection opened), ``<url> <- <ts>: <json>``
  (sent by the client, ignored), ``<ts>: <json>`` (received), ``<url> -> <ts>: <json body>`` (a REST
  response, e.g. Binance's depth snapshot).
Every frame goes through the same exchange decoder, quality rules, book code and lake writer as a live
run. The decoder is chosen from the capture's first data frame, so archives in legacy formats (Binance
``@aggTrade``, Coinbase Exchange feed, Kraken WebSocket v1) are read too.
"""

from __future__ import annotations

import importlib
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from trading_platform.config import ExchangeConfig
from trading_platform.exchanges.base import Exchange, FetchSnapshot, RecordKind
from trading_platform.exchanges.registry import exchange_for
from trading_platform.ingestion.lake_writer import batch_id_for, write_batch
from trading_platform.ingestion.normalize import Decoder, TradeNormalizer
from trading_platform.schema import BOOK_EVENTS, MARKET_TRADES, ORDERBOOK_SNAPSHOTS, QUARANTINE
from trading_platform.storage.object_store import LocalObjectStore

CHUNK = 2_000  # records decoded at a time (actions such as snapshot requests are served between chunks)
BATCH_RECORDS = 200_000  # records per written lake batch

_CONNECT = re.compile(r"^(?P<url>\S+) <-> (?P<ts>[0-9.]+)\s*$")
_SENT = re.compile(r"^(?P<url>\S+) <- (?P<ts>[0-9.]+): ")
_REST = re.compile(r"^(?P<url>\S+) -> (?P<ts>[0-9.]+): (?P<body>.*)$", re.S)
_RECEIVED = re.compile(r"^(?P<ts>[0-9]+\.?[0-9]*): (?P<body>.*)$", re.S)


@dataclass
class Record:
    kind: RecordKind
    received_us: int
    payload: bytes
    url: str | None = None
    prefixed: bool = False  # REST payload already starts with b"<symbol>\n"


@dataclass
class ImportReport:
    exchange: str
    decoder: str
    records: int = 0
    trades: int = 0
    book_snapshots: int = 0
    quarantined: int = 0
    quarantined_by_reason: Counter[str] = field(default_factory=Counter)
    book_events_by_kind: Counter[str] = field(default_factory=Counter)
    counters: Counter[str] = field(default_factory=Counter)
    files: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        c = self.counters
        return [
            f"exchange:                       {self.exchange} (decoder: {self.decoder})",
            f"records read:                   {self.records}",
            f"trades:                         {self.trades}",
            f"book updates applied:           {c['book_updates_applied']}",
            f"book snapshots emitted:         {self.book_snapshots}",
            f"checksum verifications passed:  {c['checksums_passed']}",
            f"checksum verifications failed:  {c['checksums_failed'] or self.book_events_by_kind['checksum_mismatch']}",
            f"sequence gaps:                  {c['sequence_gaps'] or self.book_events_by_kind['sequence_gap']}",
            f"unrecognized / rejected frames: {self.quarantined} {dict(self.quarantined_by_reason)}",
            f"files written:                  {len(self.files)}",
        ]


def read_capture(path: Path) -> Iterator[Record]:
    """Records of a capture in either format; the format is recognized per line."""
    base_us = int(path.stat().st_mtime * 1_000_000)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle):
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            text = line.decode("utf-8", "replace")
            if text[:1] in "{[":
                yield Record(RecordKind.FRAME, base_us + number, line)
            elif match := _CONNECT.match(text):
                yield Record(RecordKind.CONNECTED, _us(match["ts"]), match["url"].encode(), match["url"])
            elif _SENT.match(text):
                continue
            elif match := _REST.match(text):
                yield Record(RecordKind.REST, _us(match["ts"]), match["body"].encode(), match["url"])
            elif match := _RECEIVED.match(text):
                yield Record(RecordKind.FRAME, _us(match["ts"]), match["body"].encode())
            else:
                yield Record(RecordKind.FRAME, base_us + number, line)  # quarantined as malformed


def _us(seconds: str) -> int:
    return round(float(seconds) * 1_000_000)


def choose_decoder(config: ExchangeConfig, first_frame: bytes) -> Decoder:
    """The live exchange module, or its legacy-format decoder for old archives."""
    exchange = exchange_for(config)
    legacy = {
        # (exchange, recognizer of a legacy frame) -> module.class
        "coinbase": (lambda f: b'"channel"' not in f and b'"type"' in f,
                     "trading_platform.exchanges.coinbase_legacy", "CoinbaseExchangeFeedDecoder"),
        "kraken": (lambda f: f.lstrip()[:1] == b"[" or b'"event"' in f,
                   "trading_platform.exchanges.kraken_legacy", "KrakenV1Decoder"),
    }.get(config.name)
    if legacy and legacy[0](first_frame):
        decoder_class = getattr(importlib.import_module(legacy[1]), legacy[2])
        return decoder_class(config)  # type: ignore[no-any-return]
    return exchange


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


def import_capture(config: ExchangeConfig, capture: Path, output: Path, snapshots: dict[str, Path] | None = None,
                   spike_threshold: float = 0.2) -> ImportReport:
    """Normalize one capture into ``output`` (a lake root). ``snapshots``: symbol -> REST body file."""
    snapshots = dict(snapshots or {})
    records = list(read_capture(capture))
    first = next((r.payload for r in records if r.kind == RecordKind.FRAME), b"{}")
    decoder = choose_decoder(config, first)
    report = ImportReport(config.name, type(decoder).__name__)
    normalizer = TradeNormalizer(decoder, spike_threshold)
    store = LocalObjectStore(output)
    parts: dict = {t: [] for t in (MARKET_TRADES, ORDERBOOK_SNAPSHOTS, BOOK_EVENTS, QUARANTINE)}
    batch_first = 0
    pending_rest: list[Record] = []
    only_symbol = config.symbols[0] if len(config.symbols) == 1 else None
    index = 0
    while index < len(records) or pending_rest:
        chunk = pending_rest + records[index:index + CHUNK]
        pending_rest = []
        index += CHUNK
        # REST records get the symbol prefix the decoders expect.
        payloads = [(_rest_symbol(r.url, decoder, only_symbol) or "").encode() + b"\n" + r.payload
                    if r.kind == RecordKind.REST and not r.prefixed else r.payload
                    for r in chunk]
        kinds = [r.kind for r in chunk]
        normalized = normalizer.process(payloads, [r.received_us for r in chunk],
                                        kinds if any(kinds) else None)
        report.records += len(chunk)
        for table, rows in ((MARKET_TRADES, normalized.trades), (ORDERBOOK_SNAPSHOTS, normalized.book_snapshots),
                            (BOOK_EVENTS, normalized.book_events), (QUARANTINE, normalized.rejects)):
            if rows is not None and rows.num_rows:
                parts[table].append(rows)
        for action in normalized.actions:
            # Offline, a snapshot request is served from a snapshot file the user gave, once.
            if isinstance(action, FetchSnapshot) and not action.purpose and action.symbol in snapshots:
                body = snapshots.pop(action.symbol).read_bytes()
                at = chunk[-1].received_us if chunk else 0
                pending_rest.append(Record(RecordKind.REST, at, action.symbol.encode() + b"\n" + body, prefixed=True))
        if report.records - batch_first >= BATCH_RECORDS or (index >= len(records) and not pending_rest):
            _flush(store, config.name, batch_first, report.records - 1, parts, report)
            parts = {t: [] for t in parts}
            batch_first = report.records
    report.counters.update(getattr(decoder, "counters", Counter()))
    return report


def _flush(store: LocalObjectStore, exchange: str, first: int, last: int, parts: dict, report: ImportReport) -> None:
    import pyarrow as pa

    tables = {t: pa.concat_tables(p) for t, p in parts.items() if p}
    if not tables:
        return
    written = write_batch(store, exchange, batch_id_for(f"{exchange}-import", first, last), tables)
    report.trades += written.trade_rows
    report.book_snapshots += written.rows.get(ORDERBOOK_SNAPSHOTS.dataset, 0)
    report.quarantined += written.quarantined_rows
    report.quarantined_by_reason.update(written.quarantined_by_reason)
    report.book_events_by_kind.update(written.book_events_by_kind)
    report.files += written.keys
