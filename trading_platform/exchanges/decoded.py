"""What a decode produces: the columnar trade layout, rejected frames, the runner's actions, and the
collector one decode call fills (``DecodeOutput``) before it is sealed into ``DecodedFrames``.

Kept apart from the ``Exchange`` template (``base.py``) because ingestion, the quality rules and the
importer use these types without caring how an exchange decodes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Annotated, Any

import msgspec
import pyarrow as pa

from trading_platform.exchanges.book import BookEvents, BookSnapshots
from trading_platform.exchanges.wire_columns import WireColumns
from trading_platform.schema import MARKET_TRADES, QUARANTINE

# Integers the wire structs accept: a value outside fails the typed decode (wrong_type) instead of overflowing
# an Arrow column later. Ids and sequence numbers are int64 columns; exchange times in ms must stay in range
# once multiplied to µs.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
UInt32 = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
# A book level's price or quantity: a finite number, not negative. Checked by the decode, in its own pass over the
# number (a NaN, an infinity or a negative level fails its frame as wrong_type, naming the field), so applying
# the levels needs no pass of its own.
BookNumber = Annotated[float, msgspec.Meta(ge=0, le=sys.float_info.max)]

# Columns an exchange module produces; batch_id is added when the batch is sealed. Two more, internal to the
# decode (the normalizer drops them): the raw frame of each row, for quarantine, and the row's symbol as its
# position among the exchange's configured symbols, which the continuity check and the spike rule group by
# (computed once where the symbol is mapped, not hashed again from the text by each of them).
DECODED_TRADE_SCHEMA = pa.schema([f for f in MARKET_TRADES.arrow_schema if f.name != "batch_id"]).append(
    pa.field("frame_index", pa.int64(), nullable=False)).append(pa.field("symbol_code", pa.int32()))
INTERNAL_TRADE_COLUMNS = ["frame_index", "symbol_code"]
REJECT_SCHEMA = pa.schema([f for f in QUARANTINE.arrow_schema if f.name != "batch_id"])
# Built from no batches: Schema.empty_table() would run pyarrow's one-time "is pandas importable?" probe at import,
# which imports pandas into every process that imports this module (an ingestion run keeps pandas out, process.py).
_EMPTY_REJECTS = pa.Table.from_batches([], schema=REJECT_SCHEMA)

# Verdicts on a frame the typed decode refused that are not errors (any other verdict is a reject reason).
CONTROL = "control"  # replies to our requests, acks, heartbeats: expected traffic
IGNORED = "ignored"  # well-formed frames of a channel or message type nobody subscribed to


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
        if not self.reasons:  # nearly every batch: no columns to build
            return _EMPTY_REJECTS
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


class RecordKind(IntEnum):
    """What a WAL record / decode input is. Stored in the WAL, so values never change."""

    FRAME = 0  # a WebSocket frame as received
    REST = 1  # a REST response: b"<symbol>\n" + body (e.g. Binance's depth snapshot)
    CONNECTED = 2  # a new connection opened (books and per-connection sequences restart); payload: URL
    REST_FAILED = 3  # a REST request the exchange refused for good: b"<header>\n" + the error
    # Never in the WAL: a FRAME the normalizer quarantined before decoding (oversized, not UTF-8). The
    # exchange sees it only to keep its per-connection sequence (Coinbase's sequence_num) continuous.
    SCREENED = 100


@dataclass(frozen=True)
class FetchSnapshot:
    """Ask the runner to GET ``url`` and feed the body back as a REST record for ``symbol``.

    The record's first line is ``symbol`` for the book snapshot, or ``symbol purpose`` for any other
    request (e.g. ``BTC-USDT trades 101 150``, a trade-gap backfill), so the answer finds its question.
    """

    symbol: str
    url: str
    purpose: str = ""

    @property
    def header(self) -> bytes:
        return (f"{self.symbol} {self.purpose}" if self.purpose else self.symbol).encode()


@dataclass(frozen=True)
class SendFrames:
    """Ask the runner to send these frames on the current connection (e.g. resubscribe one book)."""

    frames: tuple[str, ...]


@dataclass(frozen=True)
class Reconnect:
    """Ask the session to drop the connection and reconnect (e.g. a per-connection sequence gap)."""

    reason: str


Action = FetchSnapshot | SendFrames | Reconnect


@dataclass
class DecodedFrames:
    trades: pa.Table  # DECODED_TRADE_SCHEMA
    rejects: Rejects
    control_frames: int = 0  # subscribe acks, heartbeats: expected, neither data nor errors
    book_snapshots: BookSnapshots | None = None
    book_events: BookEvents | None = None
    actions: list[Action] = field(default_factory=list)
    # Well-formed frames of a channel or message type we did not ask for (exchanges add new ones at any
    # time and clients are expected to skip them): counted, not quarantined as errors.
    ignored_frames: int = 0


@dataclass
class DecodeOutput:
    """Everything one decode call collects, routed by dataset while the records are walked in order.

    Trades are gathered as the protocol's own wire objects (``trades``, with the record index of each in
    ``trade_frames``) while a chunk of frames is handled, then appended to ``columns`` (``Exchange.collect``:
    their fields read into column buffers, the objects freed; frames the compiled scan reads add theirs to
    ``columns`` directly, ``Exchange.scan_frames``); the columns become Arrow rows whenever the
    exchange settles them: at the end of the call, at a REST record, before a Coinbase trade snapshot
    (``settled``). Everything else is recorded as it happens.
    """

    snapshots: BookSnapshots
    events: BookEvents
    rejects: Rejects = field(default_factory=Rejects)
    actions: list[Action] = field(default_factory=list)
    control: int = 0
    ignored: int = 0
    trades: list[Any] = field(default_factory=list)
    trade_frames: list[int] = field(default_factory=list)
    columns: WireColumns | None = None  # the trades of the chunks handled so far, made by the exchange
    # Trade rows already final, in record order: the frames' trades up to a REST record (checked for continuity
    # there) and the rows each REST trade-history answer brought.
    settled: list[pa.Table] = field(default_factory=list)

    @classmethod
    def for_exchange(cls, name: str) -> DecodeOutput:
        return cls(BookSnapshots(name), BookEvents(name))

    def sealed(self, trades: pa.Table) -> DecodedFrames:
        return DecodedFrames(trades, self.rejects, self.control, self.snapshots, self.events, self.actions,
                             self.ignored)
