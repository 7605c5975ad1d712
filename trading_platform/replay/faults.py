"""Fault injection: what can go wrong on an exchange feed, as data the tests (or HTTP callers) send.

Frame faults (malformed JSON, wrong types, unknown symbol, serverShutdown) are queued on every open
connection of the target exchange(s) at injection time, in order with the trade frames, and are never
recorded in the trade ledger; :class:`FaultCounters` counts them once sent. Connection faults act on
sockets: ``drop_connections`` aborts the TCP transports (no close handshake), ``refuse_connections``
rejects new WebSocket handshakes for a while (``reset``: the TCP connection is aborted; ``http_503``:
a 503 response, like an overloaded exchange). The admin HTTP endpoints keep working meanwhile.

Book faults, per exchange (``symbol`` picks the native symbol, default the exchange's first one):
- ``sequence_gap``: Binance skips ``count`` depth update ids of one symbol (the next diff's ``U`` is
  ``previous u + 1 + count`` on both diff cadences; no level change is lost, the ids are just never
  used); Coinbase skips ``count`` ``sequence_num`` values on every open connection.
- ``bad_checksum``: Kraken sends the next ``count`` book updates of one symbol with a wrong
  ``checksum`` (levels are right, and the server's book is untouched, so a resubscribe's snapshot is
  correct).
An exchange a fault makes no sense for (e.g. ``bad_checksum`` on Binance) is skipped when the fault
targets every exchange, and refused (ValueError, HTTP 400) when it names that exchange.
"""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Literal

_NATIVE_SYMBOL = re.compile(r"^[A-Za-z0-9/_-]{1,30}$")

RefuseMode = Literal["reset", "http_503"]
WrongTypeVariant = Literal["price_object", "trade_id_string"]


class FaultKind(StrEnum):
    MALFORMED_JSON = "malformed_json"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_SYMBOL = "unknown_symbol"
    SERVER_SHUTDOWN = "server_shutdown"
    DROP_CONNECTIONS = "drop_connections"
    REFUSE_CONNECTIONS = "refuse_connections"
    SEQUENCE_GAP = "sequence_gap"
    BAD_CHECKSUM = "bad_checksum"
    OVERSIZED = "oversized"  # a trade frame padded past the platform's frame limit
    REST_ERROR = "rest_error"  # every REST answer is an HTTP error (429 + Retry-After, 418, 451, ...) for a while
    UNKNOWN_TYPE = "unknown_type"  # a well-formed frame of a channel / event type the client never asked for
    INVALID_UTF8 = "invalid_utf8"  # a text frame whose bytes are not UTF-8


FRAME_FAULTS = frozenset(
    {FaultKind.MALFORMED_JSON, FaultKind.WRONG_TYPE, FaultKind.UNKNOWN_SYMBOL, FaultKind.SERVER_SHUTDOWN,
     FaultKind.OVERSIZED, FaultKind.UNKNOWN_TYPE, FaultKind.INVALID_UTF8}
)
OVERSIZED_BYTES = 2 << 20
# The network side: sockets and the REST endpoints.
CONNECTION_FAULTS = frozenset({FaultKind.DROP_CONNECTIONS, FaultKind.REFUSE_CONNECTIONS, FaultKind.REST_ERROR})


@dataclass(frozen=True)
class Fault:
    """One injection. ``exchange`` None targets every served exchange.

    - ``count``: bad frames per connection (frame faults); ids / sequence numbers skipped
      (``sequence_gap``); book updates with a wrong checksum (``bad_checksum``).
    - ``variant``: for ``wrong_type``: ``price_object`` (price is ``{"x":1}``) or ``trade_id_string``
      (trade id is ``"abc"``).
    - ``symbol``: native symbol for ``unknown_symbol`` (default: the exchange's ``ZZZ`` pair), or the
      symbol ``sequence_gap`` (Binance) / ``bad_checksum`` (Kraken) hits (default: the first one).
    - ``seconds`` / ``mode``: for ``refuse_connections``; ``seconds`` / ``status`` for ``rest_error``
      (429 and 418 carry ``Retry-After`` with the seconds left).
    """

    kind: FaultKind
    exchange: str | None = None
    count: int = 1
    variant: WrongTypeVariant = "price_object"
    symbol: str | None = None
    seconds: float = 5.0
    mode: RefuseMode = "reset"
    status: int = 429

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"count must be >= 1, got {self.count}")
        if self.seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {self.seconds}")
        if self.variant not in ("price_object", "trade_id_string"):
            raise ValueError(f"variant must be price_object or trade_id_string, got {self.variant!r}")
        if not 400 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP error status (400-599), got {self.status}")
        if self.mode not in ("reset", "http_503"):
            raise ValueError(f"mode must be reset or http_503, got {self.mode!r}")
        if self.symbol is not None and not _NATIVE_SYMBOL.match(self.symbol):
            # It is pasted into a JSON frame verbatim: keep it to the characters exchanges use.
            raise ValueError(f"symbol must look like an exchange symbol (e.g. ZZZUSDT), got {self.symbol!r}")

    @classmethod
    def from_json(cls, doc: object) -> Fault:
        """Build from the ``POST /_replay/faults`` body; ValueError names the bad key."""
        if not isinstance(doc, dict):
            raise ValueError('body must be a JSON object like {"kind": "malformed_json"}')
        unknown = set(doc) - {"kind", "exchange", "count", "variant", "symbol", "seconds", "mode", "status"}
        if unknown:
            raise ValueError(f"unknown keys: {sorted(unknown)}")
        try:
            kind = FaultKind(str(doc.get("kind")))
        except ValueError:
            allowed = ", ".join(k.value for k in FaultKind)
            raise ValueError(f"kind must be one of {allowed}; got {doc.get('kind')!r}") from None
        fields: dict[str, Any] = {"kind": kind}
        for key, types in (
            ("exchange", str),
            ("count", int),
            ("variant", str),
            ("symbol", str),
            ("seconds", (int, float)),
            ("mode", str),
            ("status", int),
        ):
            if key in doc and doc[key] is not None:
                value = doc[key]
                if isinstance(value, bool) or not isinstance(value, types):
                    raise ValueError(f"{key} has the wrong type: {value!r}")
                fields[key] = value
        return cls(**fields)

    def to_json(self) -> dict[str, Any]:
        return {key: str(value) if key == "kind" else value for key, value in asdict(self).items()}


@dataclass(frozen=True)
class FaultResult:
    """What an injection reached: connections that got the frames / were dropped."""

    kind: FaultKind
    exchanges: list[str]
    connections: int

    def to_json(self) -> dict[str, Any]:
        return {"kind": str(self.kind), "exchanges": self.exchanges, "connections": self.connections}


class FaultCounters:
    """Injected faults that took effect: bad frames sent, connections dropped or refused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}

    def add(self, exchange: str, kind: FaultKind, n: int = 1) -> None:
        with self._lock:
            per_kind = self._counts.setdefault(exchange, {})
            per_kind[kind.value] = per_kind.get(kind.value, 0) + n

    def get(self, kind: FaultKind, exchange: str | None = None) -> int:
        with self._lock:
            names = [exchange] if exchange is not None else list(self._counts)
            return sum(self._counts.get(name, {}).get(kind.value, 0) for name in names)

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {name: dict(kinds) for name, kinds in self._counts.items()}

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
