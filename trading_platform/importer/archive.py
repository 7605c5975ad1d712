"""Offline importer: recorded raw feed data -> the same normalized Parquet datasets the live path writes.

Reads captures as users keep them, one raw frame per line or cryptofeed's raw-data recordings (the format:
``trading_platform/capture_format.py``). A raw frame has no receive time: it gets the time of its line order,
starting at the capture file's modification time, so rows stay ordered and deterministic. What the
recording client sent is not received data and is left out. Every frame goes through the same exchange
decoder, quality rules, book code and lake writer as a live run. The decoder is chosen from the capture's
first data frame, so archives in legacy formats (Binance ``@aggTrade``, Coinbase Exchange feed, Kraken
WebSocket v1) are read too (``decoders.py``).

Two passes. The first collects the native symbols of the capture's trade and book frames
(``symbols.py``); every one of them is imported (``symbols`` narrows that; frames of the others are
then skipped, not quarantined). The second decodes the capture a chunk at a time and writes the lake a batch
at a time; between chunks, the books' snapshot requests are answered from the REST recordings
(``rest_recordings.py``: passed as ``rest_recordings`` or found next to a ``<FEED>.ws.*`` input) or
the snapshot files given (``snapshots.py``). What was done is an ``ImportReport`` (``report.py``).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from trading_platform.capture_format import CaptureLine, CaptureReader, LineKind, sibling_rest_recordings
from trading_platform.config import SYMBOL_PATTERN, ExchangeConfig
from trading_platform.exchanges.decoded import FetchSnapshot, RecordKind
from trading_platform.exchanges.registry import exchange_class
from trading_platform.importer.decoders import choose_decoder, decoder_label
from trading_platform.importer.report import ImportReport
from trading_platform.importer.rest_recordings import RestRecording, read_rest_recordings
from trading_platform.importer.snapshots import SnapshotSources, book_snapshots_of, merged_at_receive_times
from trading_platform.importer.symbols import PROBES, FrameProbe, normalized_symbol
from trading_platform.ingestion.lake_writer import batch_id_for, write_batch
from trading_platform.ingestion.normalize import Decoder, TradeNormalizer
from trading_platform.schema import BOOK_EVENTS, MARKET_TRADES, ORDERBOOK_SNAPSHOTS, QUARANTINE, Table
from trading_platform.settings import ConfigError
from trading_platform.storage.object_store import LocalObjectStore

if TYPE_CHECKING:
    from tqdm import tqdm

CHUNK = 2_000  # records decoded at a time (actions such as snapshot requests are served between chunks)
BATCH_RECORDS = 200_000  # records per written lake batch
PROGRESS_MIN_BYTES = 4 << 20  # inputs at least this large show a progress bar on stderr
MAX_SYMBOLS = 1024  # what one exchange config (and so one import) takes


class ImportOptionError(ValueError):
    """What the importer was asked cannot be done; the message names the option to change."""


# What the decoders take of each capture line; what the client sent and the configuration are no received data.
_DECODED_AS = {LineKind.FRAME: RecordKind.FRAME, LineKind.CONNECTED: RecordKind.CONNECTED,
               LineKind.REST: RecordKind.REST}


def _received(capture: Path) -> CaptureReader:
    """The capture's received records (frames, connections, REST responses), streamed."""
    return CaptureReader(capture, _DECODED_AS.keys())


# --- the import --------------------------------------------------------------------------------------------
@dataclass
class _Scan:
    """What the first pass learned."""

    first_frame: bytes | None = None
    trade_natives: set[str] = field(default_factory=set)
    book_natives: set[str] = field(default_factory=set)
    first_timed_us: int | None = None
    last_timed_us: int | None = None  # first and last receive time of a cryptofeed capture's frames


def _scan(capture: Path, probe: FrameProbe, bar: tqdm) -> _Scan:
    scan = _Scan()
    reader = _received(capture)
    records = iter(reader)
    while chunk := list(islice(records, CHUNK)):
        frames = [r.payload for r in chunk if r.kind is LineKind.FRAME]
        if scan.first_frame is None and frames:
            scan.first_frame = frames[0]
        for found in probe.symbols(frames):
            for native, book in found:
                (scan.book_natives if book else scan.trade_natives).add(native)
        timed = [r.received_us for r in chunk if r.timed and r.kind is LineKind.FRAME]
        if timed:
            low, high = min(timed), max(timed)
            scan.first_timed_us = low if scan.first_timed_us is None else min(scan.first_timed_us, low)
            scan.last_timed_us = high if scan.last_timed_us is None else max(scan.last_timed_us, high)
        bar.update(reader.bytes_read - bar.n)
    return scan


def _progress(capture: Path, what: str, enabled: bool) -> tqdm:
    from tqdm import tqdm

    # sys.stderr is read at call time so a redirected stderr gets the bar; in a log (not a terminal) it is
    # redrawn rarely rather than ten times a second.
    interactive = sys.stderr.isatty()
    return tqdm(total=capture.stat().st_size, desc=f"{what} {capture.name}", unit="B", unit_scale=True,
                unit_divisor=1024, file=sys.stderr, disable=not enabled, mininterval=0.2 if interactive else 15.0,
                dynamic_ncols=interactive)


def _import_config(config: ExchangeConfig, symbols: list[str]) -> ExchangeConfig:
    data = {**config.model_dump(), "symbols": symbols, "channels": ["trades", "book"]}
    try:
        imported = ExchangeConfig.model_validate(data)
    except ValidationError as error:
        raise ImportOptionError(f"--symbols: {error.errors()[0]['msg']}") from None
    imported.name = config.name
    return imported


@dataclass
class _Selection:
    """Which of the capture's symbols are imported, and under which spelling."""

    chosen: list[str]  # the decoder's symbols
    mapped: dict[str, str]  # native -> BASE-QUOTE, for every native of the capture that has a spelling
    natives: set[str]  # natives of the imported symbols
    unmapped: list[str]  # natives of the capture with no spelling
    narrowed: bool


def _select_symbols(config: ExchangeConfig, capture: Path, scan: _Scan, rest: RestRecording,
                    symbols: Sequence[str] | None) -> _Selection:
    native_symbol = exchange_class(config.name).native_symbol
    # Spellings by trust: the configuration, then what the recording says, then the exchange's convention.
    known = {native_symbol(s): s for s in sorted(rest.subscribed)} | rest.listed
    known |= {native_symbol(s): s for s in config.symbols}
    natives = scan.trade_natives | scan.book_natives
    mapped = {n: s for n in sorted(natives) if (s := normalized_symbol(config.name, n, known)) is not None}
    if symbols is None:
        chosen = sorted(set(mapped.values()))
    else:
        bad = [s for s in symbols if not SYMBOL_PATTERN.match(s)]
        if bad:
            raise ImportOptionError(f"--symbols: symbols are upper-case BASE-QUOTE (e.g. BTC-USDT), got {bad}")
        chosen = list(dict.fromkeys(symbols))
        # Naming a symbol is also how a native with an unknown quote asset gets its spelling.
        mapped |= {native_symbol(s): s for s in chosen if native_symbol(s) in natives}
        if natives and not set(mapped.values()).intersection(chosen):
            raise ImportOptionError(f"--symbols: none of {chosen} is in {capture.name}; it holds "
                                    f"{sorted(set(mapped.values())) or sorted(natives)}")
    if len(chosen) > MAX_SYMBOLS:
        raise ImportOptionError(f"{capture.name} holds {len(chosen)} symbols, more than one import takes "
                                f"({MAX_SYMBOLS}): import it in parts with --symbols")
    return _Selection(chosen, mapped, {n for n, s in mapped.items() if s in set(chosen)},
                      sorted(natives - set(mapped)), symbols is not None)


def import_capture(config: ExchangeConfig, capture: Path, output: Path, snapshots: dict[str, Path] | None = None,
                   spike_threshold: float = 0.2, *, symbols: Sequence[str] | None = None,
                   rest_recordings: Sequence[Path] | None = None, progress: bool | None = None) -> ImportReport:
    """Normalize one capture into ``output`` (a lake root).

    ``snapshots``: symbol -> one REST body file, served at the symbol's first snapshot request (key ``""``:
    the capture's only symbol). ``symbols``: import only these (default: every symbol in the capture).
    ``rest_recordings``: cryptofeed REST recordings (None: the ones next to a cryptofeed ``<FEED>.ws.*``
    capture, when no ``snapshots`` are given either). ``progress``: a bar on stderr (None: for inputs of
    ``PROGRESS_MIN_BYTES`` and more). Raises ImportOptionError naming the option to change.
    """
    if not capture.is_file():
        raise ImportOptionError(f"--input: no such file: {capture}")
    discovered = rest_recordings is None and not snapshots
    rest = read_rest_recordings(sibling_rest_recordings(capture) if discovered else list(rest_recordings or []))
    show = capture.stat().st_size >= PROGRESS_MIN_BYTES if progress is None else progress
    probe = PROBES[config.name]
    with _progress(capture, "scanning", show) as bar:
        scan = _scan(capture, probe, bar)
    selection = _select_symbols(config, capture, scan, rest, symbols)
    # A capture with no trade or book frame still needs symbols to build the decoder with.
    try:
        decoder = choose_decoder(_import_config(config, selection.chosen or list(config.symbols)),
                                 scan.first_frame or b"{}")
    except ConfigError as error:
        raise ImportOptionError(f"{error}; import the capture in parts with --symbols") from None

    report = ImportReport(config.name, decoder_label(decoder), narrowed=selection.narrowed)
    present = set(selection.mapped.values())
    report.symbols = [s for s in selection.chosen if s in present]
    report.not_configured = [s for s in report.symbols if s not in config.symbols]
    report.unmapped = selection.unmapped
    report.missing = [s for s in selection.chosen if s not in present]
    report.symbols_with_book_frames = {selection.mapped[n] for n in scan.book_natives if n in selection.natives}
    report.rest_files = [p.name for p in rest.files]
    report.rest_discovered = discovered and bool(rest.files)
    if rest.unreadable_lines:
        report.rest_unused["unreadable line"] += rest.unreadable_lines
    sources = SnapshotSources(decoder, set(selection.chosen), report)
    for symbol, path in (snapshots or {}).items():
        if not symbol:
            if len(selection.chosen) != 1:
                raise ImportOptionError(f"--snapshot: name the symbol (SYMBOL=FILE): {capture.name} holds "
                                        f"{len(selection.chosen)} symbols")
            symbol = selection.chosen[0]
        sources.files[symbol] = path
    timed_answers = sources.take_recorded(rest.responses, scan.first_timed_us, scan.last_timed_us)
    with _progress(capture, "importing", show) as bar:
        _decode_capture(capture, decoder, timed_answers, sources, probe if selection.narrowed else None,
                        selection.natives, LocalObjectStore(output), spike_threshold, report, bar)
    report.counters.update(getattr(decoder, "counters", Counter()))
    return report


def _decode_capture(capture: Path, decoder: Decoder, timed_answers: list[CaptureLine], sources: SnapshotSources,
                    narrow: FrameProbe | None, selected_natives: set[str], store: LocalObjectStore,
                    spike_threshold: float, report: ImportReport, bar: tqdm) -> None:
    """The second pass: every record through the live path's normalizer, written a batch at a time."""
    normalizer = TradeNormalizer(decoder, spike_threshold)
    parts: dict[Table, list[pa.Table]] = {t: [] for t in (MARKET_TRADES, ORDERBOOK_SNAPSHOTS, BOOK_EVENTS, QUARANTINE)}
    decoded = batch_first = 0
    pending: list[CaptureLine] = []  # snapshot answers served before the next chunk
    reader = _received(capture)
    stream = merged_at_receive_times(reader, timed_answers)
    while chunk := pending + list(islice(stream, CHUNK)):
        pending = []
        kinds = [_DECODED_AS[r.kind] for r in chunk]
        if RecordKind.REST in kinds:
            chunk = book_snapshots_of(chunk, sources)
            kinds = [_DECODED_AS[r.kind] for r in chunk]
        if narrow is not None:
            report.skipped_frames += _skip_unselected(chunk, kinds, narrow, selected_natives)
        report.rest_snapshots += kinds.count(RecordKind.REST)
        normalized = normalizer.process([r.payload for r in chunk], [r.received_us for r in chunk],
                                        kinds if any(kinds) else None)
        decoded += len(chunk)
        report.control_frames += normalized.control_frames
        report.ignored_frames += normalized.ignored_frames
        _symbols_of(normalized.trades, report.symbols_with_trades)
        _symbols_of(normalized.book_snapshots, report.symbols_with_books)
        for table, rows in ((MARKET_TRADES, normalized.trades), (ORDERBOOK_SNAPSHOTS, normalized.book_snapshots),
                            (BOOK_EVENTS, normalized.book_events), (QUARANTINE, normalized.rejects)):
            if rows is not None and rows.num_rows:
                parts[table].append(rows)
        for action in normalized.actions:
            # Trade-gap backfills (those with a purpose) cannot be answered offline; book snapshots may be.
            if isinstance(action, FetchSnapshot) and not action.purpose:
                answer = sources.answer(action, chunk[-1].received_us)
                if answer is not None:
                    pending.append(answer)
        if decoded - batch_first >= BATCH_RECORDS:
            _flush(store, report.exchange, batch_first, decoded - 1, parts, report)
            parts = {t: [] for t in parts}
            batch_first = decoded
        bar.update(reader.bytes_read - bar.n)
    _flush(store, report.exchange, batch_first, max(decoded - 1, batch_first), parts, report)
    report.records = reader.lines


def _skip_unselected(chunk: list[CaptureLine], kinds: list[RecordKind], probe: FrameProbe, selected: set[str]) -> int:
    """Mark the frames of symbols not imported; returns how many. They stay in place as SCREENED records, which
    decoders skip but still count in a per-connection sequence (Coinbase's sequence_num), so leaving out a
    symbol never looks like lost messages."""
    positions = [i for i, kind in enumerate(kinds) if kind == RecordKind.FRAME]
    skipped = 0
    for i, found in zip(positions, probe.symbols([chunk[i].payload for i in positions]), strict=True):
        if found and not any(native in selected for native, _ in found):
            kinds[i] = RecordKind.SCREENED
            skipped += 1
    return skipped


def _symbols_of(rows: pa.Table | None, into: set[str]) -> None:
    if rows is not None and rows.num_rows:
        into.update(pc.unique(rows.column("symbol")).to_pylist())


def _flush(store: LocalObjectStore, exchange: str, first: int, last: int, parts: dict[Table, list[pa.Table]],
           report: ImportReport) -> None:
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
