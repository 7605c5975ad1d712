"""Kraken v1 archive frames (exchange-protocols.md, section 3, "v1 variant") through the shared book path.

Fixtures follow the documented v1 shapes; the v1 trade frame is the Kraken v1 docs' example. Expected
checksums are written out as the literal documented string (price then volume, '.' and leading zeros
removed, asks ascending then bids descending), so the test does not check the code against itself.
"""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from trading_platform.config import ExchangeConfig, ExchangesFile
from trading_platform.exchanges.base import Exchange
from trading_platform.exchanges.decoded import RecordKind
from trading_platform.exchanges.kraken import Kraken
from trading_platform.exchanges.legacy.kraken import KrakenV1Decoder, epoch_text_us, normalize_pair
from trading_platform.importer.archive import import_capture
from trading_platform_tests.exchanges.test_kraken import DOC_ASKS, DOC_BIDS, DOC_SNAPSHOT, book_config

SNAPSHOT = [0, {
    "as": [["5290.80000", "1.00000000", "1556724667.748660"], ["5290.90000", "4.49956524", "1556724664.331028"],
           ["5291.70000", "1.00000000", "1556724653.480504"]],
    "bs": [["5290.10000", "1.43195600", "1556724666.594179"], ["5289.80000", "2.00000000", "1556724663.082526"],
           ["5289.40000", "0.49400000", "1556724665.274827"]],
}, "book-10", "XBT/USD"]
# After UPDATE: the best ask is gone, a republished bid 5290.20000 is the new best bid.
AFTER_UPDATE_TEXT = (b"529090000449956524" b"529170000100000000"  # asks ascending
                     b"52902000050000000" b"529010000143195600" b"528980000200000000" b"52894000049400000")
AFTER_UPDATE_CHECKSUM = zlib.crc32(AFTER_UPDATE_TEXT)
DOC_V1_TRADES = (b'[0,[["5541.20000","0.15850568","1534614057.321597","s","l",""],'
                 b'["6060.00000","0.02455000","1534614057.324998","b","l",""]],"trade","XBT/USD"]')


def frame(message: object) -> bytes:
    return json.dumps(message).encode()


def update(checksum: str | None, time: str = "1556724668.100000") -> bytes:
    bids: dict[str, object] = {"b": [["5290.20000", "0.50000000", time, "r"]]}
    if checksum is not None:
        bids["c"] = checksum
    return frame([0, {"a": [["5290.80000", "0.00000000", "1556724668.000000"]]}, bids, "book-10", "XBT/USD"])


@pytest.fixture
def config(exchanges_config: ExchangesFile) -> ExchangeConfig:
    return book_config(exchanges_config)


@pytest.fixture
def decoder(config: ExchangeConfig) -> KrakenV1Decoder:
    decoder = KrakenV1Decoder(config)
    decoded = decoder.decode([frame(SNAPSHOT)], [0])
    assert decoded.book_events is not None and len(decoded.book_events) == 0
    assert decoder.kraken.synced["BTC-USD"]
    return decoder


def test_snapshot_keeps_the_text_and_is_emitted_at_its_newest_level_time(config: ExchangeConfig) -> None:
    decoded = KrakenV1Decoder(config).decode([frame(SNAPSHOT)], [7])
    assert decoded.book_snapshots is not None
    assert decoded.book_snapshots.timestamps_us == [1556724667748660]
    assert decoded.book_snapshots.bids[0][0] == (5290.1, 1.431956)
    assert decoded.book_snapshots.asks[0][0] == (5290.8, 1.0)


def test_update_with_the_right_checksum_verifies(decoder: KrakenV1Decoder) -> None:
    decoded = decoder.decode([update(str(AFTER_UPDATE_CHECKSUM))], [1])
    assert decoded.book_events is not None and len(decoded.book_events) == 0
    book = decoder.kraken.books["BTC-USD"]
    assert book.top("ask", 10) == [(5290.9, 4.49956524), (5291.7, 1.0)]
    assert book.top("bid", 1) == [(5290.2, 0.5)]
    assert decoder.kraken.synced["BTC-USD"]


def test_update_with_a_wrong_checksum_is_a_mismatch_and_waits_for_a_snapshot(decoder: KrakenV1Decoder) -> None:
    decoded = decoder.decode([update(str(AFTER_UPDATE_CHECKSUM ^ 1), "1556724669.000000")], [1])
    assert decoded.book_events is not None and decoded.book_events.kinds == ["checksum_mismatch"]
    assert str(AFTER_UPDATE_CHECKSUM) in decoded.book_events.details[0]
    assert decoded.actions == []  # offline: nothing to send; the archive's next snapshot repairs it
    assert decoded.book_snapshots is not None and len(decoded.book_snapshots) == 0
    ignored = decoder.decode([update(str(AFTER_UPDATE_CHECKSUM), "1556724670.000000")], [2])
    assert ignored.book_snapshots is not None and len(ignored.book_snapshots) == 0
    assert ignored.book_events is not None and len(ignored.book_events) == 0
    repaired = decoder.decode([b"ws://127.0.0.1/kraken", frame(SNAPSHOT)], [3, 4],
                              [RecordKind.CONNECTED, RecordKind.FRAME])
    assert repaired.book_events is not None and repaired.book_events.kinds == ["resync"]
    assert decoder.kraken.synced["BTC-USD"]


def test_a_malformed_update_makes_the_book_untrusted(decoder: KrakenV1Decoder) -> None:
    broken = b'[0,{"a":[["5290.80000",0,"1556724668.000000"]]},"book-10","XBT/USD"]'
    decoded = decoder.decode([broken], [1])
    assert decoded.rejects.reasons == ["wrong_type"]
    assert decoded.book_events is not None and decoded.book_events.kinds == ["update_rejected"]
    assert not decoder.kraken.synced["BTC-USD"]


def test_update_without_a_checksum_is_applied_unverified(decoder: KrakenV1Decoder) -> None:
    decoded = decoder.decode([update(None)], [1])  # archives from before Kraken added "c"
    assert decoded.book_events is not None and len(decoded.book_events) == 0
    assert decoder.kraken.books["BTC-USD"].top("bid", 1) == [(5290.2, 0.5)]


def test_levels_beyond_the_channel_depth_are_dropped(config: ExchangeConfig) -> None:
    asks = [[f"53{n:02d}.00000", "1.00000000", "1556724667.000000"] for n in range(10)]
    bids = [[f"52{n:02d}.00000", "1.00000000", "1556724667.000000"] for n in range(10)]
    decoder = KrakenV1Decoder(config)
    decoder.decode([frame([0, {"as": asks, "bs": bids}, "book-10", "XBT/USD"])], [0])
    # A new best bid pushes 5200.00000 out of the top 10; the checksum covers the truncated book.
    text = "".join(f"53{n:02d}00000100000000" for n in range(10)) + "525000000200000000" + "".join(
        f"52{n:02d}00000100000000" for n in range(9, 0, -1))
    push = [0, {"b": [["5250.00000", "2.00000000", "1556724668.000000"]], "c": str(zlib.crc32(text.encode()))},
            "book-10", "XBT/USD"]
    decoded = decoder.decode([frame(push)], [1])
    assert decoded.book_events is not None and len(decoded.book_events) == 0
    assert len(decoder.kraken.books["BTC-USD"].bids) == 10
    assert 5200.0 not in decoder.kraken.books["BTC-USD"].bids


def test_v1_and_v2_books_go_through_the_same_path(config: ExchangeConfig) -> None:
    live = Kraken(config)
    v2 = live.decode([DOC_SNAPSHOT], [1])
    v1_snapshot = [7, {"as": [[p, q, "1696613755.440295"] for p, q in DOC_ASKS],
                       "bs": [[p, q, "1696613755.440295"] for p, q in DOC_BIDS]}, "book-10", "XBT/USD"]
    v1 = KrakenV1Decoder(config).decode([frame(v1_snapshot)], [1])
    assert v1.book_snapshots is not None and v2.book_snapshots is not None
    assert v1.book_snapshots.to_arrow().equals(v2.book_snapshots.to_arrow())


def test_documented_v1_trades_decode_to_normalized_columns(config: ExchangeConfig) -> None:
    decoded = KrakenV1Decoder(config).decode([DOC_V1_TRADES], [1534614057400000])
    rows = decoded.trades.to_pylist()
    assert rows[0] == {
        "exchange": "kraken", "symbol": "BTC-USD", "native_symbol": "BTC/USD", "trade_id": "1534614057.321597-0",
        "price": 5541.2, "quantity": 0.15850568, "side": "sell",
        "timestamp": datetime(2018, 8, 18, 17, 40, 57, 321597, tzinfo=UTC),
        "received_at": datetime(2018, 8, 18, 17, 40, 57, 400000, tzinfo=UTC), "frame_index": 0,
        "symbol_code": config.symbols.index("BTC-USD"),
    }
    assert (rows[1]["side"], rows[1]["price"], rows[1]["trade_id"]) == ("buy", 6060.0, "1534614057.324998-1")
    assert len(decoded.rejects) == 0


def test_events_are_control_frames(config: ExchangeConfig) -> None:
    frames = [
        b'{"event":"heartbeat"}',
        b'{"connectionID":8628615390848610000,"event":"systemStatus","status":"online","version":"1.0.0"}',
        b'{"channelID":10001,"channelName":"book-10","event":"subscriptionStatus","pair":"XBT/USD",'
        b'"status":"subscribed","subscription":{"depth":10,"name":"book"}}',
    ]
    decoded = KrakenV1Decoder(config).decode(frames, [0, 0, 0])
    assert decoded.control_frames == 3 and len(decoded.rejects) == 0


def test_subscription_error_is_an_exchange_error(config: ExchangeConfig) -> None:
    error = (b'{"errorMessage":"Currency pair not in ISO 4217-A3 format foo","event":"subscriptionStatus",'
             b'"pair":"foo","status":"error","subscription":{"name":"ticker"}}')
    decoded = KrakenV1Decoder(config).decode([error], [0])
    assert decoded.rejects.reasons == ["exchange_error"]


def test_bad_frames_are_quarantined(config: ExchangeConfig) -> None:
    frames = [
        DOC_V1_TRADES[:30],
        DOC_V1_TRADES.replace(b"XBT/USD", b"FOO/USD"),
        DOC_V1_TRADES.replace(b'"s","l"', b'"x","l"'),
        DOC_V1_TRADES.replace(b'"5541.20000"', b"5541.2"),
        b'[0,{"as":[["5290.80000","1.00000000"]]},"book-10","XBT/USD"]',
    ]
    decoded = KrakenV1Decoder(config).decode(frames, [0] * len(frames))
    assert decoded.rejects.reasons == ["malformed_json", "unknown_symbol", "wrong_type", "wrong_type", "wrong_type"]
    assert decoded.trades.num_rows == 0  # a frame with one bad trade is rejected whole


def test_old_asset_names_are_normalized() -> None:
    assert normalize_pair("XBT/USD") == "BTC-USD"
    assert normalize_pair("XDG/USD") == "DOGE-USD"
    assert normalize_pair("ETH/XBT") == "ETH-BTC"
    assert epoch_text_us("1534614057.321597") == 1534614057321597
    assert epoch_text_us("1534614057.3") == 1534614057300000


def test_doge_trades_map_to_the_configured_symbol(config: ExchangeConfig) -> None:
    decoded = KrakenV1Decoder(config).decode([DOC_V1_TRADES.replace(b"XBT/USD", b"XDG/USD")], [0])
    assert set(decoded.trades.column("symbol").to_pylist()) == {"DOGE-USD"}


def test_the_decoder_is_not_an_exchange_the_registry_would_find() -> None:
    assert not issubclass(KrakenV1Decoder, Exchange)


def test_importer_reads_a_v1_capture_through_this_decoder(config: ExchangeConfig, tmp_path: Path) -> None:
    capture = tmp_path / "kraken.log"
    lines = [
        "ws://127.0.0.1/k <-> 1556724667.0",
        'ws://127.0.0.1/k <- 1556724667.01: {"event":"subscribe","pair":["XBT/USD"],"subscription":{"name":"book"}}',
        '1556724667.1: {"connectionID":1,"event":"systemStatus","status":"online","version":"1.0.0"}',
        "1556724667.2: " + frame(SNAPSHOT).decode(),
        "1556724668.2: " + update(str(AFTER_UPDATE_CHECKSUM)).decode(),
        "1556724668.3: " + DOC_V1_TRADES.decode(),
    ]
    capture.write_text("\n".join(lines) + "\n")
    report = import_capture(config, capture, tmp_path / "lake")
    assert report.decoder == "KrakenV1Decoder"
    assert report.trades == 2
    assert report.book_snapshots == 2  # the snapshot's second, then the update's
    assert report.counters["checksums_passed"] == 1 and report.counters["checksums_failed"] == 0
    assert report.quarantined == 0
