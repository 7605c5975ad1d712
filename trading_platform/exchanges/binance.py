"""Binance Spot: combined-stream ``@trade`` frames (see exchange-protocols.md, section 1)."""

from __future__ import annotations

from typing import Literal

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from trading_platform.config import Endpoints, ExchangeConfig
from trading_platform.exchanges.base import DECODED_TRADE_SCHEMA, DecodedFrames, Exchange, RecordKind, Rejects


# gc=False: a tick decodes thousands of these at once and they hold no reference cycles, so keeping
# them out of the cyclic GC doubles decode speed. Fields not listed (E, M) are skipped by msgspec.
class _Trade(msgspec.Struct, tag_field="e", tag="trade", gc=False):
    s: str
    t: int
    p: str
    q: str
    T: int
    m: bool


class _Combined(msgspec.Struct, gc=False):
    data: _Trade


class _Control(msgspec.Struct):
    id: int | str | None
    result: object = None


_batch_decoder = msgspec.json.Decoder(list[_Combined])
_frame_decoder = msgspec.json.Decoder(_Combined)
_control_decoder = msgspec.json.Decoder(_Control)

_UTC_US = pa.timestamp("us", tz="UTC")
_UNSUBSCRIBE_ID = 0x7FFF_0001  # reserved request id: its reply ends a drain
_SUBSCRIBE_ID = 1


class Binance(Exchange):
    name = "binance"

    def __init__(self, config: ExchangeConfig) -> None:
        super().__init__(config)
        self._native_symbols = pa.array(list(self.native_to_symbol), pa.string())
        self._normalized_symbols = pa.array(list(self.native_to_symbol.values()), pa.string())

    @staticmethod
    def native_symbol(symbol: str) -> str:
        return symbol.replace("-", "")

    def _streams(self) -> list[str]:
        return [f"{self.native_symbol(s).lower()}@trade" for s in self.symbols]

    def connect_url(self, endpoints: Endpoints) -> str:
        # Streams ride on the URL: no SUBSCRIBE frames, so the 5 msg/s inbound limit is not touched
        # at connect (1024 streams per connection is far above 20 symbols).
        return f"{endpoints.ws_url}?streams={'/'.join(self._streams())}"

    def subscribe_frames(self) -> list[str]:
        return []

    def unsubscribe_frames(self) -> list[str]:
        request = {"method": "UNSUBSCRIBE", "params": self._streams(), "id": _UNSUBSCRIBE_ID}
        return [msgspec.json.encode(request).decode()]

    def is_unsubscribe_ack(self, frame: bytes) -> bool:
        if b'"id"' not in frame or b'"stream"' in frame:
            return False
        try:
            return _control_decoder.decode(frame).id == _UNSUBSCRIBE_ID
        except msgspec.DecodeError:
            return False

    def decode(self, frames: list[bytes], received_us: list[int],
               kinds: list[RecordKind] | None = None) -> DecodedFrames:
        rejects = Rejects()
        control = 0
        if kinds is not None and any(kinds):
            if RecordKind.CONNECTED in kinds:
                self.reset_books()
            keep = [i for i, record_kind in enumerate(kinds) if record_kind == RecordKind.FRAME]
            frames = [frames[i] for i in keep]
            received_us = [received_us[i] for i in keep]
        try:
            combined: list[_Combined] = _batch_decoder.decode(b"[" + b",".join(frames) + b"]")
            indices: list[int] = list(range(len(frames)))
        except msgspec.DecodeError:
            combined, indices = [], []
            for index, frame in enumerate(frames):
                try:
                    combined.append(_frame_decoder.decode(frame))
                    indices.append(index)
                except msgspec.DecodeError as error:
                    kind, detail = _classify(frame)
                    if kind == "control":
                        control += 1
                    else:
                        rejects.add(received_us[index], kind, detail or str(error), frame)
        return DecodedFrames(self._columns(combined, indices, received_us, frames, rejects), rejects, control)

    def _columns(self, combined: list[_Combined], indices: list[int], received_us: list[int],
                 frames: list[bytes], rejects: Rejects) -> pa.Table:
        trades = [c.data for c in combined]
        native = pa.array([t.s for t in trades], pa.string())
        # Symbol mapping in Arrow: one hash lookup per row in C, not a Python dict lookup.
        position = pc.index_in(native, value_set=self._native_symbols)
        table = pa.table(
            {
                "exchange": pa.array([self.name] * len(trades), pa.string()),
                "symbol": self._normalized_symbols.take(position),
                "native_symbol": native,
                "trade_id": pc.cast(pa.array([t.t for t in trades], pa.int64()), pa.string()),
                "price": _to_float([t.p for t in trades]),
                "quantity": _to_float([t.q for t in trades]),
                # m: the buyer is the maker, so the aggressor (taker) sold.
                "side": pc.if_else(pa.array([t.m for t in trades], pa.bool_()), "sell", "buy"),
                "timestamp": pc.multiply(pa.array([t.T for t in trades], pa.int64()), 1000).cast(_UTC_US),
                "received_at": pa.array(received_us if len(indices) == len(received_us)
                                        else [received_us[i] for i in indices], pa.int64()).cast(_UTC_US),
                "frame_index": pa.array(indices, pa.int64()),
            },
            schema=DECODED_TRADE_SCHEMA,
        )
        if position.null_count:
            unknown = table.filter(pc.is_null(position))
            for index, symbol in zip(unknown.column("frame_index").to_pylist(),
                                     unknown.column("native_symbol").to_pylist(), strict=True):
                rejects.add(received_us[index], "unknown_symbol",
                            f"symbol {symbol!r} is not configured for {self.name}", frames[index])
            table = table.filter(pc.is_valid(position))
        return table


def _to_float(values: list[str]) -> pa.Array:
    # Unparseable numbers become NaN here and are rejected by the quality rules with the raw frame.
    array = pa.array(values, pa.string())
    try:
        return pc.cast(array, pa.float64())
    except pa.ArrowInvalid:
        return pa.array([_float_or_nan(v) for v in values], pa.float64())


def _float_or_nan(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return float("nan")


FrameKind = Literal["control", "exchange_error", "malformed_json", "wrong_type"]


def _classify(frame: bytes) -> tuple[FrameKind, str | None]:
    """Why a frame failed the typed decode: a reply to a request, an error reply, or bad data."""
    try:
        message = msgspec.json.decode(frame)
    except msgspec.DecodeError as error:
        return "malformed_json", f"not valid JSON: {error}"
    if isinstance(message, dict) and "id" in message and "stream" not in message:
        return ("exchange_error", f"error reply: {message.get('error')}") if "error" in message else (
            "control", None)
    return "wrong_type", None
