"""What every exchange module provides, and the columnar result all of them decode into.

An exchange module turns a list of raw frames into one Arrow table in the ``schema.MARKET_TRADES``
layout (without ``batch_id``, which the batcher assigns) plus rejected frames with their raw text.
Frames are decoded a batch at a time: the fast path is one typed msgspec decode of the whole batch;
only a batch holding a control or malformed frame falls back to frame-by-frame decoding.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import pyarrow as pa

from trading_platform.config import Endpoints, ExchangeConfig
from trading_platform.schema import MARKET_TRADES, QUARANTINE

# Columns an exchange module produces; batch_id is added when the batch is sealed.
DECODED_TRADE_SCHEMA = pa.schema([f for f in MARKET_TRADES.arrow_schema if f.name != "batch_id"]).append(
    pa.field("frame_index", pa.int64(), nullable=False)  # row -> raw frame, for quarantine
)
REJECT_SCHEMA = pa.schema([f for f in QUARANTINE.arrow_schema if f.name != "batch_id"])


@dataclass
class Rejects:
    """Frames (or rows of frames) set aside, with the rule that rejected them and the raw text."""

    received_us: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    raws: list[str] = field(default_factory=list)

    def add(self, received_us: int, reason: str, detail: str, raw: bytes | str) -> None:
        self.received_us.append(received_us)
        self.reasons.append(reason)
        self.details.append(detail)
        self.raws.append(raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw)

    def __len__(self) -> int:
        return len(self.reasons)

    def to_arrow(self, exchange: str) -> pa.Table:
        return pa.table(
            {
                "exchange": pa.array([exchange] * len(self), pa.string()),
                "received_at": pa.array(self.received_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                "reason": pa.array(self.reasons, pa.string()),
                "detail": pa.array(self.details, pa.string()),
                "raw": pa.array(self.raws, pa.string()),
            },
            schema=REJECT_SCHEMA,
        )


@dataclass
class DecodedFrames:
    trades: pa.Table  # DECODED_TRADE_SCHEMA
    rejects: Rejects
    control_frames: int = 0  # subscribe acks, heartbeats: expected, neither data nor errors


class Exchange(ABC):
    """One exchange's protocol. Subclasses live one per module in ``trading_platform.exchanges``."""

    name: str

    def __init__(self, config: ExchangeConfig) -> None:
        self.config = config
        self.symbols = list(config.symbols)
        self.native_to_symbol = {self.native_symbol(s): s for s in self.symbols}

    @staticmethod
    @abstractmethod
    def native_symbol(symbol: str) -> str:
        """The exchange's spelling of a normalized BASE-QUOTE symbol."""

    @abstractmethod
    def connect_url(self, endpoints: Endpoints) -> str:
        """The WebSocket URL to open (may already carry the subscriptions)."""

    @abstractmethod
    def subscribe_frames(self) -> list[str]:
        """Frames to send after connecting (empty when the URL subscribes)."""

    @abstractmethod
    def unsubscribe_frames(self) -> list[str]:
        """Frames that stop the data; every data frame sent before the ack precedes it on the wire."""

    @abstractmethod
    def is_unsubscribe_ack(self, frame: bytes) -> bool:
        """True for the reply that ends the drain."""

    @abstractmethod
    def decode(self, frames: list[bytes], received_us: list[int]) -> DecodedFrames:
        """Decode a batch of raw frames into normalized trade columns and rejects."""
