"""What an import did, as the ``normalize`` command prints it: symbols, rows, book totals, REST snapshots
used, frames ignored, skipped and rejected."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

_CHECKSUMMED = frozenset({"kraken"})  # protocols whose books carry a checksum


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
    control_frames: int = 0  # acks, heartbeats, status: expected, neither data nor errors
    ignored_frames: int = 0  # well-formed frames of channels / message types the platform does not use
    skipped_frames: int = 0  # frames of symbols left out by `symbols`
    symbols: list[str] = field(default_factory=list)  # imported
    not_configured: list[str] = field(default_factory=list)  # imported, not in exchanges.yaml
    unmapped: list[str] = field(default_factory=list)  # native symbols found with no BASE-QUOTE spelling
    missing: list[str] = field(default_factory=list)  # asked for with `symbols`, not in the capture
    narrowed: bool = False
    symbols_with_trades: set[str] = field(default_factory=set)
    symbols_with_book_frames: set[str] = field(default_factory=set)
    symbols_with_books: set[str] = field(default_factory=set)  # at least one book snapshot emitted
    rest_files: list[str] = field(default_factory=list)
    rest_discovered: bool = False
    rest_snapshots: int = 0  # REST book snapshots handed to the books (recorded, or given as files)
    rest_unused: Counter[str] = field(default_factory=Counter)  # recorded responses not used, by why

    @property
    def checksummed(self) -> bool:
        return self.exchange in _CHECKSUMMED

    def lines(self) -> list[str]:
        c = self.counters
        unsynced = sorted(self.symbols_with_book_frames - self.symbols_with_books)
        extra = f" ({len(self.not_configured)} not in exchanges.yaml: {', '.join(self.not_configured)})" \
            if self.not_configured else ""
        out = [
            f"exchange:                       {self.exchange} (decoder: {self.decoder})",
            f"records read:                   {self.records}",
            f"symbols:                        {len(self.symbols)} imported{extra}: "
            f"{', '.join(self.symbols) or 'no trade or book frame in the recording'}",
        ]
        if self.unmapped and not self.narrowed:
            out.append(f"symbols not imported:           {len(self.unmapped)} native symbols with no known BASE-QUOTE "
                       f"spelling: {', '.join(self.unmapped)} (quarantined as unknown_symbol; to import them, list "
                       f"every symbol to import, spelled BASE-QUOTE, with --symbols)")
        if self.missing:
            out.append(f"symbols not in the recording:   {', '.join(self.missing)} (asked for with --symbols)")
        books = (f" ({len(self.symbols_with_books)} of {len(self.symbols_with_book_frames)} books synced"
                 f"{'; never synced: ' + ', '.join(unsynced) if unsynced else ''})")
        if self.checksummed:
            passed, failed = str(c["checksums_passed"]), str(c["checksums_failed"])
        else:
            passed = failed = f"n/a ({self.exchange} books carry no checksum)"
        out += [
            f"trades:                         {self.trades} ({len(self.symbols_with_trades)} symbols)",
            f"book updates applied:           {c['book_updates_applied']}",
            f"book snapshots emitted:         {self.book_snapshots}{books}",
            f"checksum verifications passed:  {passed}",
            f"checksum verifications failed:  {failed}",
            f"sequence gaps:                  {self.book_events_by_kind['sequence_gap']}",
            f"book events:                    {dict(sorted(self.book_events_by_kind.items()))}",
        ]
        if self.rest_files or self.rest_snapshots or self.rest_unused:
            source = ", ".join(self.rest_files) or "the input"
            found = " (found next to the input)" if self.rest_discovered else ""
            out.append(f"REST book snapshots:            {self.rest_snapshots} matched to their symbol by URL, from "
                       f"{source}{found}; not used: {sum(self.rest_unused.values())} {dict(self.rest_unused)}")
        out += [f"ignored frames:                 {self.ignored_frames} (channels / message types not used)",
                f"control frames:                 {self.control_frames} (acks, heartbeats, status)"]
        if self.narrowed:
            out.append(f"skipped frames:                 {self.skipped_frames} (symbols left out by --symbols)")
        out += [
            f"unrecognized / rejected frames: {self.quarantined} {dict(sorted(self.quarantined_by_reason.items()))}",
            f"files written:                  {len(self.files)}",
        ]
        return out
