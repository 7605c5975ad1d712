"""Adding a fourth exchange takes one module, one YAML block and one registry line.

The module is ``Fakex`` below: only its protocol (wire structs, field mapping, one book rule, subscribe
frames). The YAML block goes through the real config loader, the registry line is one dict entry, and the
frames then take the code path ingestion uses: ``exchange_for(config)``, the template's batch decode with its
per-frame fallback and reject classification, and the normalizer that validates the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from trading_platform.config import Endpoints, ExchangeConfig, load_exchanges
from trading_platform.exchanges import registry
from trading_platform.exchanges.base import Exchange, TradeColumns
from trading_platform.exchanges.conversions import millis_timestamps, strings_to_float
from trading_platform.exchanges.decoded import CONTROL, DecodeOutput, RecordKind
from trading_platform.ingestion.normalize import TradeNormalizer
from trading_platform.settings import ConfigError

T0_MS = 1_700_000_000_000


# --- the one module: a tiny exchange speaking a simple JSON protocol --------------------------------------
class _Trade(msgspec.Struct, tag_field="type", tag="trade", gc=False):
    market: str
    id: int
    price: str
    amount: str
    side: Literal["buy", "sell"]  # the taker's side
    time_ms: int


class _Book(msgspec.Struct, tag_field="type", tag="book", gc=False):
    """A full top-of-book snapshot per frame, numbered per market."""

    market: str
    seq: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]
    time_ms: int


class Fakex(Exchange):
    name = "fakex"
    batch_decoder = msgspec.json.Decoder(list[_Trade | _Book])
    frame_decoder = msgspec.json.Decoder(_Trade | _Book)
    trade_fields = (("market", pa.string()), ("id", pa.int64()), ("price", pa.string()), ("amount", pa.string()),
                    ("side", pa.string()), ("time_ms", pa.int64()))

    @staticmethod
    def native_symbol(symbol: str) -> str:
        return symbol.replace("-", "_").lower()

    def connect_url(self, endpoints: Endpoints) -> str:
        return endpoints.ws_url

    def subscribe_frames(self) -> list[str]:
        return [msgspec.json.encode({"op": "subscribe", "markets": list(self.native_to_symbol)}).decode()]

    def unsubscribe_frames(self) -> list[str]:
        return [msgspec.json.encode({"op": "unsubscribe", "markets": list(self.native_to_symbol)}).decode()]

    def is_unsubscribe_ack(self, frame: bytes) -> bool:
        return b'"unsubscribed"' in frame

    def classify_message(self, message: Any) -> tuple[str, str] | None:
        if isinstance(message, dict) and message.get("event") in ("subscribed", "unsubscribed"):
            return CONTROL, ""
        return None

    def on_messages(self, messages: list[Any], indices: Sequence[int], frames: list[bytes],
                    received_us: list[int], out: DecodeOutput) -> None:
        for message, index in zip(messages, indices, strict=True):
            if isinstance(message, _Trade):
                out.trades.append(message)
                out.trade_frames.append(index)
            else:
                self._book(message, received_us[index], frames[index], out)

    def _book(self, message: _Book, received_us: int, frame: bytes, out: DecodeOutput) -> None:
        """The book rule: a snapshot numbered at or below the book's is stale and changes nothing."""
        symbol = self.native_to_symbol.get(message.market)
        if symbol is None:
            self.reject_unknown_symbol(message.market, received_us, frame, out.rejects)
            return
        book = self.books[symbol]
        if self.synced[symbol] and message.seq <= book.sequence:
            out.control += 1
            return
        book.clear()
        for price, quantity in message.bids:
            book.set_level("bid", price, quantity)
        for price, quantity in message.asks:
            book.set_level("ask", price, quantity)
        book.sequence = message.seq
        self.synced[symbol] = True
        self.emit_if_due(symbol, message.time_ms * 1000, received_us, out.snapshots)

    def trade_columns(self, fields: list[pa.Array]) -> TradeColumns:
        markets, ids, prices, amounts, sides, times_ms = fields
        return TradeColumns(markets, pc.cast(ids, pa.string()), strings_to_float(prices), strings_to_float(amounts),
                            sides, millis_timestamps(times_ms))


# --- the one YAML block -------------------------------------------------------------------------------------
YAML_BLOCK = """
exchanges:
  fakex:
    enabled: true
    channels: [trades, book]
    book_depth: 5
    live:
      ws_url: ws://127.0.0.1:9555/fakex
    replay:
      ws_url: ws://{host}:{port}/fakex
    symbols: [BTC-USD, ETH-USD]
"""


@pytest.fixture
def yaml_file(tmp_path: Path) -> Path:
    path = tmp_path / "exchanges.yaml"
    path.write_text(YAML_BLOCK)
    return path


@pytest.fixture
def config(yaml_file: Path, monkeypatch: pytest.MonkeyPatch) -> ExchangeConfig:
    monkeypatch.setitem(registry.EXCHANGES, "fakex", Fakex)  # the one registry line
    return load_exchanges(yaml_file).exchanges["fakex"]


@pytest.fixture
def fakex(config: ExchangeConfig) -> Exchange:
    return registry.exchange_for(config)  # how ingestion finds the exchange of a config


def trade(trade_id: int, market: str = "btc_usd", price: str = "100.5", side: str = "buy") -> bytes:
    return msgspec.json.encode({"type": "trade", "market": market, "id": trade_id, "price": price,
                                "amount": "0.25", "side": side, "time_ms": T0_MS + trade_id})


def book(seq: int, bid: str, ask: str, time_ms: int, market: str = "btc_usd") -> bytes:
    return msgspec.json.encode({"type": "book", "market": market, "seq": seq, "bids": [[bid, "1.0"]],
                                "asks": [[ask, "2.0"]], "time_ms": time_ms})


def test_without_its_registry_line_the_yaml_block_and_the_name_are_refused(yaml_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"exchanges\.fakex.*'binance', 'coinbase' or 'kraken'"):
        load_exchanges(yaml_file)
    with pytest.raises(ConfigError, match=r"exchanges\.fakex\.enabled.*trading_platform/exchanges/fakex\.py"):
        registry.exchange_class("fakex")


def test_the_yaml_block_and_the_registry_line_make_it_an_exchange(config: ExchangeConfig, fakex: Exchange) -> None:
    assert type(fakex) is Fakex and registry.exchange_class("fakex") is Fakex
    assert config.name == "fakex" and fakex.symbols == ["BTC-USD", "ETH-USD"]
    assert fakex.native_to_symbol == {"btc_usd": "BTC-USD", "eth_usd": "ETH-USD"}


def test_a_batch_of_trades_becomes_rows_in_the_platform_layout(fakex: Exchange) -> None:
    frames = [trade(101), trade(7, market="eth_usd", side="sell"), trade(102)]
    decoded = fakex.decode(frames, [T0_MS * 1000 + i for i in range(3)])
    rows = decoded.trades.drop_columns(["timestamp", "received_at"]).to_pylist()
    assert rows == [
        {"exchange": "fakex", "symbol": "BTC-USD", "native_symbol": "btc_usd", "trade_id": "101", "price": 100.5,
         "quantity": 0.25, "side": "buy", "frame_index": 0, "symbol_code": 0},
        {"exchange": "fakex", "symbol": "ETH-USD", "native_symbol": "eth_usd", "trade_id": "7", "price": 100.5,
         "quantity": 0.25, "side": "sell", "frame_index": 1, "symbol_code": 1},
        {"exchange": "fakex", "symbol": "BTC-USD", "native_symbol": "btc_usd", "trade_id": "102", "price": 100.5,
         "quantity": 0.25, "side": "buy", "frame_index": 2, "symbol_code": 0},
    ]
    assert decoded.trades.column("timestamp")[0].value == (T0_MS + 101) * 1000  # ms -> µs by the template
    assert len(decoded.rejects) == 0 and decoded.control_frames == 0


def test_bad_frames_are_classified_and_the_rest_of_the_batch_still_decodes(fakex: Exchange) -> None:
    malformed = b'{"type": "trade", "market": '
    wrong_type = msgspec.json.encode({"type": "trade", "market": "btc_usd", "id": "x", "price": "1",
                                      "amount": "1", "side": "buy", "time_ms": T0_MS})
    frames = [trade(101), malformed, b'{"event": "subscribed"}', wrong_type, trade(5, market="doge_usd"),
              trade(102)]
    decoded = fakex.decode(frames, [T0_MS * 1000] * len(frames))
    assert decoded.trades.column("trade_id").to_pylist() == ["101", "102"]
    assert decoded.trades.column("frame_index").to_pylist() == [0, 5]
    assert decoded.rejects.reasons == ["malformed_json", "wrong_type", "unknown_symbol"]
    assert decoded.rejects.raws[0] == malformed.decode()
    assert "$.id" in decoded.rejects.details[1]
    assert "'doge_usd' is not configured for fakex" in decoded.rejects.details[2]
    assert decoded.control_frames == 1


def test_trade_ids_get_the_shared_continuity_check(fakex: Exchange) -> None:
    fakex.decode([trade(101), trade(102)], [T0_MS * 1000] * 2)
    decoded = fakex.decode([trade(101), trade(105)], [T0_MS * 1000] * 2)
    assert decoded.trades.column("trade_id").to_pylist() == ["105"]  # 101 was stored already
    assert decoded.book_events is not None
    assert decoded.book_events.kinds[0] == "trade_gap" and "103..104" in decoded.book_events.details[0]


def test_the_book_rule_and_a_new_connection(fakex: Exchange) -> None:
    frames = [book(1, "100", "101", T0_MS), book(1, "99", "102", T0_MS + 10), b"ws://127.0.0.1:9555/fakex",
              book(1, "98", "103", T0_MS + 2000)]
    kinds = [RecordKind.FRAME, RecordKind.FRAME, RecordKind.CONNECTED, RecordKind.FRAME]
    decoded = fakex.decode(frames, [T0_MS * 1000] * 4, kinds)
    assert decoded.book_snapshots is not None
    # seq 1 again is stale until the new connection resets the book: then it is the book's first snapshot.
    assert decoded.control_frames == 1
    assert [bids[0][0] for bids in decoded.book_snapshots.bids] == [100.0, 98.0]
    assert fakex.books["BTC-USD"].top("ask", 1) == [(103.0, 2.0)]


def test_frames_go_through_the_normalizer_as_in_ingestion(fakex: Exchange) -> None:
    frames = [trade(101), b"not json", trade(102, price="-1"), trade(103)]
    normalized = TradeNormalizer(fakex, spike_threshold=0.2).process(frames, [T0_MS * 1000 + 1] * 4)
    assert normalized.trades.column("trade_id").to_pylist() == ["101", "103"]
    assert normalized.trades.column("exchange").to_pylist() == ["fakex", "fakex"]
    assert sorted(normalized.rejects.column("reason").to_pylist()) == ["bad_price", "malformed_json"]
    assert set(normalized.rejects.column("exchange").to_pylist()) == {"fakex"}
