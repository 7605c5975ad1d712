"""The batch-decode skeleton every decoder of exchange records follows: the live exchanges (``base.Exchange``)
and the legacy archive decoders alike.

``RecordDecoder.decode`` walks the records of one call in receive order: runs of WebSocket frames are decoded
a run at a time (one typed msgspec decode of the whole run; only a run holding a control or malformed frame
falls back to frame-by-frame decoding, where each refused frame is classified as control, ignored or a
reject), and every other record (a new connection, a REST answer) is handed over at its place between them.
Frames the protocol can read without the typed decode (``scan_frames``: an exchange's common trade frame, read by
the compiled scan) are read so at the start of each chunk, as long as they last.
"""

from __future__ import annotations

import gc
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import msgspec
import pyarrow as pa

from trading_platform.exchanges.decoded import CONTROL, IGNORED, DecodedFrames, DecodeOutput, RecordKind

# Frames per typed decode. A run is decoded a chunk at a time, each chunk's messages handled and freed before the next
# is decoded, so its objects (a few hundred KB) are made in the memory the last chunk freed, still in the CPU cache,
# where a whole tick's (several MB for 5,000 book frames) took fresh memory each time. Measured on the bench's book
# frames, in-process against one decode per tick: Binance 1.34x, Coinbase 1.45x the updates per second. Trades gain
# once each chunk's wire trades go into the columns before the next chunk is decoded (``collect``; on Coinbase
# trades 250 still beat 125, 500 and 1,000). A chunk also bounds the frame-by-frame fallback: a refused frame sends
# only its chunk down that path.
DECODE_CHUNK = 250
_OPENING, _CLOSING = ord("["), ord("]")
_gc_lock = threading.Lock()
_gc_holders = 0  # decode calls (any thread) inside paused_gc
_gc_was_enabled = False  # the collector's state when the first holder paused it


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector held off for the duration of one batch decode.

    A batch decode allocates tens of thousands of containers at once (the wire structs' lists, the per-row
    Python values the columns are built from) and keeps them alive until the batch's columns exist. Each
    700 allocations the collector would traverse them, promote them, and soon run a full collection of the
    whole heap (Arrow, polars, Dagster): measured, that was half of Coinbase's and Kraken's decode time. None
    of these objects is part of a reference cycle, so reference counting frees all of them; the collector
    runs as usual once the batch is done. Counted, so concurrent decodes in threads resume it only once the
    last one is out, and a collector someone else disabled stays disabled."""
    global _gc_holders, _gc_was_enabled
    with _gc_lock:
        if _gc_holders == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_holders += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_holders -= 1
            if _gc_holders == 0 and _gc_was_enabled:
                gc.enable()


def json_array(frames: list[bytes]) -> bytearray:
    """Frames (at least one) as one JSON array, copied once: the brackets ride on the first and last. Mutable: the
    decode reads it a chunk at a time, writing each chunk's brackets over the commas around it."""
    if len(frames) == 1:
        return bytearray(b"[" + frames[0] + b"]")
    return bytearray(b",").join([b"[" + frames[0], *frames[1:-1], frames[-1] + b"]"])


class RecordDecoder(ABC):
    """The batch-decode skeleton, shared by the live exchanges and the legacy archive decoders.

    Deterministic: the same record sequence always yields the same output, which is what lets WAL recovery
    and the offline importer reproduce the live path.
    """

    name: str
    batch_decoder: msgspec.json.Decoder[Any]  # a JSON array of frames -> list of messages
    frame_decoder: msgspec.json.Decoder[Any]  # one frame -> one message

    def decode(self, frames: list[bytes], received_us: list[int], kinds: list[RecordKind] | None = None,
               joined: bytearray | None = None) -> DecodedFrames:
        """Decode records in receive order (``kinds`` None: all are FRAME) into trades, book output,
        rejects and actions. ``joined``: ``json_array(frames)``, when the caller already built it (the
        normalizer screens a batch on it), so a batch of frames only is not copied a second time; the decode
        writes over the commas between its frames."""
        with paused_gc():
            out = DecodeOutput.for_exchange(self.name)
            start = 0
            if kinds is not None and any(kinds):  # FRAME is 0: a batch of frames only skips the walk
                for index, kind in enumerate(kinds):
                    if kind != RecordKind.FRAME:
                        self._decode_run(frames, received_us, start, index, out)
                        if kind in (RecordKind.REST, RecordKind.REST_FAILED):
                            self.settle(frames, received_us, out)
                        self.on_record(kind, frames[index], index, received_us[index], out)
                        start = index + 1
            self._decode_run(frames, received_us, start, len(frames), out, joined if start == 0 else None)
            return out.sealed(self.finish(frames, received_us, out))

    def _decode_run(self, frames: list[bytes], received_us: list[int], lo: int, hi: int,
                    out: DecodeOutput, array: bytearray | None = None) -> None:
        """Frames ``lo..hi-1`` (``array``: the run already joined by ``json_array``), ``DECODE_CHUNK`` at a time."""
        if lo >= hi:
            return
        if array is None:
            array = json_array(frames if lo == 0 and hi == len(frames) else frames[lo:hi])
        view = memoryview(array)
        opening = 0  # the "[" before the run's first frame, then the "," before each chunk's first frame
        for first in range(lo, hi, DECODE_CHUNK):
            end = min(first + DECODE_CHUNK, hi)
            # The "," (or the final "]") after the chunk's last frame: each frame adds its bytes and the one before it.
            closing = opening + sum(map(len, frames[first:end])) + end - first
            # The chunk read in place as a JSON array of its own: the commas around it become its brackets. Frames'
            # own bytes are never written (a msgspec.Raw may point into them).
            array[opening], array[closing] = _OPENING, _CLOSING
            self._decode_chunk(view[opening:closing + 1], frames, received_us, first, end, out)
            opening = closing

    def _decode_chunk(self, array: memoryview, frames: list[bytes], received_us: list[int], lo: int, hi: int,
                      out: DecodeOutput) -> None:
        """Frames ``lo..hi-1`` as the JSON array ``array``: those the protocol reads with no typed decode first
        (``scan_frames``, from the chunk's first frame on), then one typed decode of the rest (``_decode_frames``).
        Only a chunk's first frames are scanned: looking for runs further in, and splitting the decode of the rest
        around them, cost each split a decode call and an ``on_messages`` pass of its own and each look a second read
        of the frames it found. Measured on trades with a book frame after every k (with books subscribed), that
        lost 10% (Coinbase) and 23% (Binance) on runs of ten and won only on runs of 25 to 50 and more; reading only
        the chunks' first frames stays within 3% of the decode alone there, and trades without books start nearly
        every chunk anyway."""
        scanned = self.scan_frames(frames, lo, hi, out)
        if scanned:
            if scanned == hi - lo:
                return
            # The rest as an array of its own, from the comma before its first frame.
            start = sum(map(len, frames[lo:lo + scanned])) + scanned
            array[start] = _OPENING
            array, lo = array[start:], lo + scanned
        self._decode_frames(array, frames, received_us, lo, hi, out)

    def _decode_frames(self, array: memoryview, frames: list[bytes], received_us: list[int], lo: int, hi: int,
                       out: DecodeOutput) -> None:
        """Frames ``lo..hi-1`` as the JSON array ``array``: one typed decode, or frame by frame when that fails."""
        try:
            messages: list[Any] = self.batch_decoder.decode(array)
            if len(messages) == hi - lo:  # else an empty frame, or one holding "a,b", shifted the rest
                self.on_messages(messages, range(lo, hi), frames, received_us, out)
                self.collect(out)
                return
        except msgspec.DecodeError:
            pass
        messages, indices = [], []
        for index in range(lo, hi):
            frame = frames[index]
            try:
                messages.append(self.decode_frame(frame))
                indices.append(index)
                continue
            except msgspec.DecodeError as error:
                verdict, detail = self.classify_rejected(frame, error)
            if verdict == CONTROL:
                out.control += 1
            elif verdict == IGNORED:
                out.ignored += 1
            else:
                out.rejects.add(received_us[index], verdict, detail, frame)
            stand_in = self.stand_in(frame)
            if stand_in is not None:
                messages.append(stand_in)
                indices.append(index)
        self.on_messages(messages, indices, frames, received_us, out)
        self.collect(out)

    def scan_frames(self, frames: list[bytes], lo: int, hi: int, out: DecodeOutput) -> int:
        """How many of frames ``lo..hi-1``, from the first on, the protocol read into ``out`` with no typed decode
        (``Exchange``: the compiled scan of its common trade frame). A decoder with no such path reads none."""
        return 0

    def decode_frame(self, frame: bytes) -> Any:
        """One frame on its own (the fallback path); raises ``msgspec.DecodeError`` when refused."""
        return self.frame_decoder.decode(frame)

    def classify_rejected(self, frame: bytes, error: msgspec.DecodeError) -> tuple[str, str]:
        """Why a frame failed the typed decode: ``CONTROL``, ``IGNORED`` or a reject reason, with a detail.
        Not JSON at all is ``malformed_json``; JSON the protocol does not recognize is ``wrong_type``."""
        try:
            message = msgspec.json.decode(frame)
        except msgspec.DecodeError as invalid:
            return "malformed_json", f"not valid JSON: {invalid}"
        verdict = self.classify_message(message)
        return verdict if verdict is not None else ("wrong_type", str(error))

    def classify_message(self, message: Any) -> tuple[str, str] | None:
        """The protocol's reading of a JSON message its wire structs refused: a reply to a request
        (``CONTROL``), a channel nobody subscribed to (``IGNORED``), an ``exchange_error``; None: bad data."""
        return None

    def stand_in(self, frame: bytes) -> Any | None:
        """A message to keep in place of a refused frame (e.g. one that still consumes a sequence number)."""
        return None

    @abstractmethod
    def on_messages(self, messages: list[Any], indices: Sequence[int], frames: list[bytes],
                    received_us: list[int], out: DecodeOutput) -> None:
        """Decoded messages in receive order (``indices``: their positions in ``frames``)."""

    @abstractmethod
    def on_record(self, kind: RecordKind, payload: bytes, index: int, received_us: int,
                  out: DecodeOutput) -> None:
        """A record that is not a WebSocket frame, at its place between the frames."""

    def collect(self, out: DecodeOutput) -> None:
        """After each chunk of frames: keep what its wire objects hold that later records need, so they can be
        freed (``Exchange`` reads the trades into columns). A decoder that keeps them until ``finish`` needs
        nothing here."""
        return None

    def settle(self, frames: list[bytes], received_us: list[int], out: DecodeOutput) -> None:
        """Before a REST answer: make the trades decoded so far final, so the answer meets exactly the state
        they leave (the trade gaps they open). Live, a backfill answer always follows its gap in a later call;
        recovery and re-normalization decode a whole batch in one call and must produce the same rows, in the
        same order, whatever the call boundaries were. A decoder that asks for no trade history has nothing
        to settle."""
        return None

    @abstractmethod
    def finish(self, frames: list[bytes], received_us: list[int], out: DecodeOutput) -> pa.Table:
        """The call's trade rows (``DECODED_TRADE_SCHEMA``), once every record is walked."""
