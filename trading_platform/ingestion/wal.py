"""Write-ahead log of received frames, so a crashed or killed run loses nothing it had received.

Layout, one folder per exchange:
- ``{first_offset:012d}.wal`` segments of records ``offset u64 | received_us i64 | kind u8 | length u32 |
  crc32 u32 | payload`` (kind: ``exchanges.base.RecordKind``: frame, REST response, connection
  opened). Offsets number frames from 0, forever, across runs. A new segment starts at every batch
  boundary, so a segment is deleted whole once its batch is durably in the object store.
- ``checkpoint.json``: the last offset durably flushed, the quality-rule state after it, and the sealed
  batches not yet confirmed in the store (a new run re-flushes exactly those, with the same batch ids,
  so a half-written batch is overwritten rather than duplicated).

Appends are gathered in memory and go to the OS with one ``os.write`` per burst (``write``): the ingestion
run writes each burst of received frames before the event loop moves on, and always before it decodes them,
so every frame that reaches a batch, Redis or the lake is in the file first (a ``kill -9`` loses nothing
written; what it loses was never acknowledged, and the trade-gap backfill refetches it). One write per burst
instead of one per frame: the syscall and its Python overhead were a fixed cost per message. Sealing,
syncing, reading and closing write what is gathered first. fsync runs at most every ``fsync_interval_s``
so a machine crash loses at most that window.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import struct
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

_HEADER = struct.Struct("<QqBII")
# Segments are scanned and copied this much at a time: a batch's archive never holds its whole segment.
_CHUNK_BYTES = 1 << 20
_CHECKPOINT = "checkpoint.json"


@dataclass
class SealedBatch:
    first: int
    last: int
    reference: dict[str, Any]  # quality-rule state before the batch's first frame

    def to_json(self) -> dict[str, Any]:
        return {"first": self.first, "last": self.last, "reference": self.reference}


@dataclass
class Checkpoint:
    flushed_through: int = -1
    reference: dict[str, Any] = field(default_factory=dict)  # quality-rule state after flushed_through
    pending: list[SealedBatch] = field(default_factory=list)
    exchange_state: dict[str, Any] = field(default_factory=dict)  # Exchange.export_state() at the last flush


@dataclass
class WrittenSpan:
    """Records of the WAL files, in order: the byte range of each file that holds some of them."""

    first: int = -1  # offset of the first record
    last: int = -1  # offset of the last record
    first_received_us: int = 0
    parts: list[tuple[Path, int, int]] = field(default_factory=list)  # (segment, start byte, end byte)

    def chunks(self) -> Iterator[bytes]:
        """The records in the WAL's framing, a chunk of at most ``_CHUNK_BYTES`` at a time."""
        for path, start, end in self.parts:
            with path.open("rb", buffering=0) as handle:
                handle.seek(start)
                while start < end:
                    chunk = handle.read(min(_CHUNK_BYTES, end - start))
                    if not chunk:
                        raise OSError(f"WAL segment {path.name} ended at byte {start}, before byte {end}")
                    start += len(chunk)
                    yield chunk


class WriteAheadLog:
    def __init__(self, directory: Path, fsync_interval_s: float = 0.2) -> None:
        self.directory = directory
        self.fsync_interval_s = fsync_interval_s
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock(directory)
        self.checkpoint = self._read_checkpoint()
        self.next_offset = self._recover_tail()
        self._fd: int | None = None
        self._segment_first = self.next_offset
        self._last_sync = time.monotonic()
        self._dirty = False
        self._gathered: list[bytes] = []  # appended records not yet written: header, payload, header, ...

    # --- appending -------------------------------------------------------------------------------
    def append(self, received_us: int, payload: bytes, kind: int = 0) -> int:
        """Number a record and gather it; ``write`` hands it to the OS (callers write before they act on it)."""
        offset = self.next_offset
        self._gathered += (_HEADER.pack(offset, received_us, kind, len(payload), zlib.crc32(payload)), payload)
        self.next_offset += 1
        return offset

    @property
    def gathered(self) -> int:
        """Records appended and not yet written."""
        return len(self._gathered) // 2

    def write(self) -> None:
        """Hand every gathered record to the OS in one write (then fsync if the interval has passed)."""
        if self._gathered:
            if self._fd is None:
                self._open_segment(self.next_offset - self.gathered)  # named by its first record
            assert self._fd is not None
            data = memoryview(b"".join(self._gathered))
            self._gathered = []
            while data:  # a regular file takes it whole; a short write (e.g. a signal) continues
                data = data[os.write(self._fd, data):]
            self._dirty = True
        if self._dirty and (self.fsync_interval_s == 0
                            or time.monotonic() - self._last_sync >= self.fsync_interval_s):
            self.sync()

    def sync(self) -> None:
        if self._gathered:
            self.write()  # fsyncs when due; this sync then makes it durable regardless
        if self._fd is not None and self._dirty:
            os.fsync(self._fd)
        self._dirty = False
        self._last_sync = time.monotonic()

    def seal(self, reference: dict[str, Any], through: int | None = None) -> SealedBatch | None:
        """Close the open batch at offset ``through`` (default: the last appended record) and record it as
        pending. Records after ``through`` were appended but not decoded into this batch: they open the next
        one (its segment file may start inside the current one; files are deleted only once fully flushed)."""
        self.write()  # the records being sealed (and any after them) are in the file before the checkpoint
        first = self._segment_first
        last = self.next_offset - 1 if through is None else min(through, self.next_offset - 1)
        if last < first:
            return None
        batch = SealedBatch(first, last, reference)
        self._close_segment()
        self._segment_first = last + 1
        self.checkpoint.pending.append(batch)
        self._write_checkpoint()
        return batch

    def mark_flushed(self, batch: SealedBatch, reference_after: dict[str, Any],
                     exchange_state: dict[str, Any] | None = None) -> None:
        """The batch is durably in the store: advance the checkpoint and drop its segments."""
        self.checkpoint.pending = [p for p in self.checkpoint.pending if p.first != batch.first]
        self.checkpoint.flushed_through = max(self.checkpoint.flushed_through, batch.last)
        self.checkpoint.reference = reference_after
        if exchange_state is not None:
            self.checkpoint.exchange_state = exchange_state
        self._write_checkpoint()
        for path, _first, last in self._segments():
            if last is not None and last <= self.checkpoint.flushed_through:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        self.write()
        self._close_segment()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    # --- reading ---------------------------------------------------------------------------------
    def records(self, first: int, last: int | None = None) -> Iterator[tuple[int, int, int, bytes]]:
        """(offset, received_us, kind, payload) for offsets in [first, last] (last None: to the end)."""
        self.write()
        for path, seg_first, seg_last in self._segments():
            if seg_last is not None and seg_last < first:
                continue
            if last is not None and seg_first > last:
                break
            for offset, received_us, kind, payload in _read_segment(path):
                if offset < first:
                    continue
                if last is not None and offset > last:
                    return
                yield offset, received_us, kind, payload

    def written_span(self, first: int, last: int) -> WrittenSpan | None:
        """Where records ``first..last`` that are already in the files (a sealed batch's) lie, for copying them
        verbatim: found a chunk at a time, without holding the files or a Python object per record. Reads
        without writing what is gathered: safe from another thread while the run appends. None: no record."""
        span = WrittenSpan()
        for path, seg_first, seg_last in self._segments():
            if (seg_last is not None and seg_last < first) or seg_first > last:
                continue
            start = end = -1
            with path.open("rb", buffering=0) as handle:
                for offset, received_us, _kind, payload, record_start in _scan(handle):
                    if offset > last:
                        break
                    if offset < first:
                        continue
                    if span.first < 0:
                        span.first, span.first_received_us = offset, received_us
                    span.last = offset
                    start = record_start if start < 0 else start
                    end = record_start + _HEADER.size + len(payload)
            if start >= 0:
                span.parts.append((path, start, end))
        return span if span.parts else None

    def unflushed_tail_start(self) -> int:
        """First offset after everything flushed or sealed-pending."""
        ends = [self.checkpoint.flushed_through] + [p.last for p in self.checkpoint.pending]
        return max(ends) + 1

    def start_batch_at(self, offset: int) -> None:
        """After recovery: the open batch begins at ``offset`` (records from there are re-decoded)."""
        self._segment_first = offset

    # --- internals -------------------------------------------------------------------------------
    def _segments(self) -> list[tuple[Path, int, int | None]]:
        paths = sorted(self.directory.glob("*.wal"))
        firsts = [int(p.stem) for p in paths]
        return [(p, f, (firsts[i + 1] - 1) if i + 1 < len(firsts) else None)
                for i, (p, f) in enumerate(zip(paths, firsts, strict=True))]

    def _open_segment(self, first_offset: int) -> None:
        path = self.directory / f"{first_offset:012d}.wal"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        _fsync_dir(self.directory)

    def _close_segment(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None

    def _recover_tail(self) -> int:
        """Next offset to assign; truncates a record torn by a crash at the end of the last segment."""
        segments = self._segments()
        if not segments:
            return self.checkpoint.flushed_through + 1
        path, first, _ = segments[-1]
        next_offset, good_bytes = first, 0
        for offset, _received, _kind, payload in _read_segment(path):
            next_offset = offset + 1
            good_bytes += _HEADER.size + len(payload)
        if good_bytes != path.stat().st_size:
            with path.open("r+b") as handle:
                handle.truncate(good_bytes)
        return max(next_offset, self.checkpoint.flushed_through + 1)

    def _read_checkpoint(self) -> Checkpoint:
        path = self.directory / _CHECKPOINT
        if not path.exists():
            return Checkpoint()
        data = json.loads(path.read_text())
        return Checkpoint(
            flushed_through=data["flushed_through"],
            reference=data.get("reference", {}),
            pending=[SealedBatch(p["first"], p["last"], p["reference"]) for p in data["pending"]],
            exchange_state=data.get("exchange_state", {}),
        )

    def _write_checkpoint(self) -> None:
        path = self.directory / _CHECKPOINT
        tmp = path.with_suffix(".tmp")
        payload = {
            "flushed_through": self.checkpoint.flushed_through,
            "reference": self.checkpoint.reference,
            "pending": [p.to_json() for p in self.checkpoint.pending],
            "exchange_state": self.checkpoint.exchange_state,
        }
        with tmp.open("w") as handle:
            json.dump(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.directory)


def encode_records(records: Iterable[tuple[int, int, int, bytes]]) -> bytes:
    """(offset, received_us, kind, payload) records in the WAL's own framing (also the frame archive's)."""
    return b"".join(_HEADER.pack(offset, received_us, kind, len(payload), zlib.crc32(payload)) + payload
                    for offset, received_us, kind, payload in records)


def _read_segment(path: Path) -> Iterator[tuple[int, int, int, bytes]]:
    with path.open("rb", buffering=0) as handle:
        for offset, received_us, kind, payload, _start in _scan(handle):
            yield offset, received_us, kind, bytes(payload)


def decode_records(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """The records of ``encode_records`` output, up to the first torn or corrupt one."""
    for offset, received_us, kind, payload, _start in _scan(io.BytesIO(data)):
        yield offset, received_us, kind, bytes(payload)


def _scan(stream: BinaryIO) -> Iterator[tuple[int, int, int, memoryview, int]]:
    """(offset, received_us, kind, payload, start byte) of the records in ``stream`` (the WAL's framing), up to
    the first torn or corrupt one - everything before it is intact - read a chunk at a time, so a segment is
    never held whole."""
    data, base, position = b"", 0, 0  # data[0] is at stream byte ``base``; the next record at data[position]
    while True:
        if len(data) - position < _HEADER.size:
            data, base, position = _refill(stream, data, base, position, _HEADER.size)
            if len(data) < _HEADER.size:
                return
        offset, received_us, kind, length, crc = _HEADER.unpack_from(data, position)
        size = _HEADER.size + length
        if len(data) - position < size:
            data, base, position = _refill(stream, data, base, position, size)
            if len(data) < size:
                return  # torn by a crash mid-append
        payload = memoryview(data)[position + _HEADER.size:position + size]
        if zlib.crc32(payload) != crc:
            return
        yield offset, received_us, kind, payload, base + position
        position += size


def _refill(stream: BinaryIO, data: bytes, base: int, position: int, needed: int) -> tuple[bytes, int, int]:
    """Keep ``data[position:]`` and read on until it holds ``needed`` bytes or the stream ends; the new
    (data, base, position)."""
    parts = [data[position:]]
    held = len(parts[0])
    while held < needed:
        more = stream.read(max(_CHUNK_BYTES, needed - held))
        if not more:
            break
        parts.append(more)
        held += len(more)
    return b"".join(parts), base + position, 0


class WalLocked(RuntimeError):
    """Another live process owns this WAL (two runs of one exchange would interleave their frames)."""


def _lock(directory: Path) -> int | None:
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 64, 0).decode(errors="replace").strip()
        os.close(fd)
        raise WalLocked(f"WAL {directory} is in use by another ingestion process ({owner or 'unknown'}); "
                        "a second run of the same exchange must not start") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
    return fd


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
