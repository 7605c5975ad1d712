"""The importer on small captures written out frame by frame: ignored channels, legacy protocols' counters,
symbol spelling, REST recording lines, options and the progress bar. Each capture's expected figures are
read off the frames it holds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trading_platform.config import ExchangeConfig, ExchangesFile
from trading_platform.importer import archive
from trading_platform.importer.archive import ImportOptionError, import_capture
from trading_platform.importer.symbols import normalized_symbol
from trading_platform.storage.object_store import LocalObjectStore
from trading_platform_tests.support import read_dataset

T0 = 1_700_000_000.0  # receive times of the captures, seconds


def cryptofeed(lines: list[str], url: str = "wss://127.0.0.1/ws") -> str:
    """A cryptofeed recording of one connection: each frame received 10 ms after the previous one."""
    return "\n".join([f"{url} <-> {T0:.6f}"] + [f"{T0 + 0.01 * (i + 1):.6f}: {line}"
                                                  for i, line in enumerate(lines)]) + "\n"


def binance_trade(native: str, trade_id: int, price: str = "1.0") -> str:
    return json.dumps({"stream": f"{native.lower()}@trade", "data": {
        "e": "trade", "E": 1_700_000_000_000 + trade_id, "s": native, "t": trade_id, "p": price, "q": "2.0",
        "T": 1_700_000_000_000 + trade_id, "m": False}})


def binance_depth(native: str, first: int, last: int, at_ms: int) -> str:
    return json.dumps({"stream": f"{native.lower()}@depth@100ms", "data": {
        "e": "depthUpdate", "E": at_ms, "s": native, "U": first, "u": last,
        "b": [["0.99", str(last)]], "a": [["1.01", "1.0"]]}})


# Frames of channels each protocol's archives commonly hold next to trades and books, which the platform
# does not use; the first frame of a capture also picks its protocol.
IGNORED = {
    "binance": [
        '{"stream":"btcusdt@bookTicker","data":{"u":400900217,"s":"BTCUSDT","b":"25.35","B":"31.21",'
        '"a":"25.36","A":"40.66"}}',
        '{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1672515782136,"s":"BTCUSDT","k":{"t":1,"i":"1m"}}}',
        '{"u":400900217,"s":"BNBUSDT","b":"25.35","B":"31.21","a":"25.36","A":"40.66"}',  # raw @bookTicker
        '{"e":"kline","E":1672515782136,"s":"BNBBTC","k":{"t":1,"i":"1m"}}',  # raw @kline
        '{"lastUpdateId":160,"bids":[["0.0024","10"]],"asks":[["0.0026","100"]]}',  # raw @depth5
    ],
    "kraken_v1": [
        '{"connectionID":1,"event":"systemStatus","status":"online","version":"1.0.0"}',
        '[340,{"a":["5525.40000",1,"1.000"],"b":["5525.10000",1,"1.000"],"c":["5525.10000","0.00398963"]},'
        '"ticker","XBT/USD"]',
        '[341,["5698.40000","5700.00000","1542057299.545897","1.01234567","0.98765432"],"spread","XBT/EUR"]',
        '[342,["1542057314.748456","1542057360.435743","3586.70000","3586.70000","3586.60000","3586.60000",'
        '"3586.68894","0.03373000",2],"ohlc-5","XBT/USD"]',
    ],
    "kraken": [
        '{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":1.0,"ask":1.1}]}',
        '{"channel":"ohlc","type":"update","data":[{"symbol":"BTC/USD","open":1.0}]}',
    ],
    "coinbase": [
        '{"channel":"ticker","client_id":"","timestamp":"2023-02-09T20:30:37.167359596Z","sequence_num":0,'
        '"events":[{"type":"update","tickers":[{"type":"ticker","product_id":"BTC-USD","price":"21932.98"}]}]}',
        '{"channel":"candles","client_id":"","timestamp":"2023-06-09T20:19:35.39625135Z","sequence_num":1,'
        '"events":[{"type":"snapshot","candles":[{"start":"1688998200","product_id":"ETH-USD","open":"1"}]}]}',
    ],
}


@pytest.mark.parametrize("protocol", list(IGNORED))
def test_frames_of_unsupported_channels_are_counted_as_ignored_not_rejected(
        exchanges_config: ExchangesFile, tmp_path: Path, protocol: str) -> None:
    frames = IGNORED[protocol]
    capture = tmp_path / "capture.txt"
    capture.write_text(cryptofeed(frames))
    exchange = protocol.partition("_")[0]
    report = import_capture(exchanges_config.exchanges[exchange], capture, tmp_path / "lake")  # type: ignore[index]
    events = sum(1 for f in frames if '"event"' in f)  # Kraken v1's status event is a control frame
    assert report.ignored_frames == len(frames) - events
    assert report.quarantined == 0, report.quarantined_by_reason


def test_legacy_coinbase_feed_book_updates_applied_are_counted(exchanges_config: ExchangesFile,
                                                                tmp_path: Path) -> None:
    updates = [{"type": "l2update", "product_id": "SKL-BTC", "changes": [["buy", "0.00001304", str(size)]],
                "time": f"2021-04-17T16:43:3{size}.000000Z"} for size in range(1, 4)]
    frames = [{"type": "subscriptions", "channels": [{"name": "level2_batch", "product_ids": ["SKL-BTC"]}]},
              updates[0],  # before the snapshot: the book is not synced, nothing is applied
              {"type": "snapshot", "product_id": "SKL-BTC", "bids": [["0.00001304", "100"]],
               "asks": [["0.00001306", "50"]]},
              *updates[1:]]
    capture = tmp_path / "coinbase.txt"
    capture.write_text(cryptofeed([json.dumps(f) for f in frames], "wss://127.0.0.1:9444/coinbase-feed"))
    report = import_capture(exchanges_config.exchanges["coinbase"], capture, tmp_path / "lake")
    assert report.decoder == "CoinbaseExchangeFeedDecoder"
    assert report.symbols == ["SKL-BTC"]  # not in exchanges.yaml
    assert report.counters["book_updates_applied"] == len(updates) - 1
    assert report.book_snapshots == len(updates) - 1  # one per second of exchange time once synced


def test_kraken_v1_pairs_are_imported_under_their_normalized_symbols(exchanges_config: ExchangesFile,
                                                                     tmp_path: Path) -> None:
    trades = '[0,[["5541.20000","0.15850568","1534614057.321597","s","l",""]],"trade","{pair}"]'
    capture = tmp_path / "kraken_v1.txt"
    capture.write_text(cryptofeed(['{"event":"heartbeat"}'] + [trades.replace("{pair}", p)
                                                             for p in ("XBT/EUR", "XDG/USD", "ETH/XBT")]))
    report = import_capture(exchanges_config.exchanges["kraken"], capture, tmp_path / "lake")
    stored = read_dataset(LocalObjectStore(tmp_path / "lake"), "trades")
    assert sorted(zip(stored.column("native_symbol").to_pylist(), stored.column("symbol").to_pylist(),
                      strict=True)) == [("BTC/EUR", "BTC-EUR"), ("DOGE/USD", "DOGE-USD"), ("ETH/BTC", "ETH-BTC")]
    assert report.quarantined == 0


def test_binance_native_symbols_split_at_the_longest_known_quote_asset() -> None:
    spelled = {native: normalized_symbol("binance", native, {})
               for native in ("ETHBTC", "BTCTUSD", "BTCFDUSD", "1000SATSUSDT", "USDTTRY", "FOOXYZ")}
    assert spelled == {"ETHBTC": "ETH-BTC", "BTCTUSD": "BTC-TUSD", "BTCFDUSD": "BTC-FDUSD",
                       "1000SATSUSDT": "1000SATS-USDT", "USDTTRY": "USDT-TRY", "FOOXYZ": None}


def test_cryptofeeds_configuration_next_to_the_capture_spells_symbols_no_quote_list_knows(
        exchanges_config: ExchangesFile, tmp_path: Path) -> None:
    (tmp_path / "BINANCE.ws.1.0").write_text(cryptofeed([binance_trade("FOOXYZ", 1), binance_trade("FOOXYZ", 2)]))
    (tmp_path / "BINANCE.0").write_text('configuration: {"trades": ["FOO-XYZ"]}\n')
    report = import_capture(exchanges_config.exchanges["binance"], tmp_path / "BINANCE.ws.1.0", tmp_path / "lake")
    assert report.symbols == ["FOO-XYZ"] and report.trades == 2 and report.unmapped == []


def test_binances_exchange_info_next_to_the_capture_spells_symbols_no_quote_list_knows(
        exchanges_config: ExchangesFile, tmp_path: Path) -> None:
    (tmp_path / "BINANCE.ws.1.0").write_text(cryptofeed([binance_trade("FOOXYZ", 1)]))
    info = {"symbols": [{"symbol": "FOOXYZ", "baseAsset": "FOO", "quoteAsset": "XYZ", "status": "TRADING"}]}
    (tmp_path / "BINANCE.0").write_text(f"configuration: {{}}\nhttps://127.0.0.1:9443/api/v3/exchangeInfo -> "
                                        f"{T0}: {json.dumps(info)}\n")
    report = import_capture(exchanges_config.exchanges["binance"], tmp_path / "BINANCE.ws.1.0", tmp_path / "lake")
    assert report.symbols == ["FOO-XYZ"] and report.trades == 1


def test_a_native_symbol_with_no_spelling_is_reported_with_the_option_that_imports_it(
        exchanges_config: ExchangesFile, tmp_path: Path) -> None:
    capture = tmp_path / "binance.txt"
    capture.write_text(cryptofeed([binance_trade("BTCUSDT", 1), binance_trade("FOOXYZ", 1)]))
    report = import_capture(exchanges_config.exchanges["binance"], capture, tmp_path / "lake")
    assert report.unmapped == ["FOOXYZ"] and report.quarantined_by_reason == {"unknown_symbol": 1}
    [line] = [line for line in report.lines() if "FOOXYZ" in line]
    assert "--symbols" in line
    named = import_capture(exchanges_config.exchanges["binance"], capture, tmp_path / "named",
                           symbols=["BTC-USDT", "FOO-XYZ"])
    assert named.symbols == ["BTC-USDT", "FOO-XYZ"] and named.trades == 2 and named.quarantined == 0


def test_symbols_none_of_which_is_recorded_is_an_error_naming_the_option(exchanges_config: ExchangesFile,
                                                                         tmp_path: Path) -> None:
    capture = tmp_path / "binance.txt"
    capture.write_text(cryptofeed([binance_trade("BTCUSDT", 1)]))
    result = subprocess.run([sys.executable, "-m", "trading_platform.cli", "normalize", "--exchange", "binance",
                             "--input", str(capture), "--symbols", "ETH-USDT", "--output", str(tmp_path / "lake")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--symbols: none of ['ETH-USDT'] is in binance.txt; it holds ['BTC-USDT']" in result.stderr


def test_one_snapshot_body_needs_its_symbol_named_when_the_capture_holds_several(
        exchanges_config: ExchangesFile, tmp_path: Path) -> None:
    capture = tmp_path / "binance.txt"
    capture.write_text(cryptofeed([binance_trade("BTCUSDT", 1), binance_trade("ETHUSDT", 1)]))
    body = tmp_path / "depth.json"
    body.write_text('{"lastUpdateId":1,"bids":[],"asks":[]}')
    with pytest.raises(ImportOptionError, match=r"--snapshot: name the symbol \(SYMBOL=FILE\)"):
        import_capture(exchanges_config.exchanges["binance"], capture, tmp_path / "lake", {"": body})


def test_a_rest_line_recorded_with_its_headers_still_syncs_the_book(exchanges_config: ExchangesFile,
                                                                   tmp_path: Path) -> None:
    # Depth events 10..12, 13..14 and 15..15 (one per second); the snapshot at 12 arrives after the first.
    frames = [binance_depth("BTCUSDT", 10, 12, 1_700_000_000_000), binance_depth("BTCUSDT", 13, 14, 1_700_000_001_000),
              binance_depth("BTCUSDT", 15, 15, 1_700_000_002_000)]
    (tmp_path / "BINANCE.ws.1.0").write_text(cryptofeed(frames))
    snapshot = '{"lastUpdateId":12,"bids":[["0.99","5"]],"asks":[["1.01","5"]]}'
    header = json.dumps({"Content-Type": "application/json", "x-mbx-used-weight-1m": "50"})
    (tmp_path / "BINANCE.http.0.0").write_text(
        f"https://127.0.0.1:9443/api/v3/depth?symbol=BTCUSDT&limit=1000 -> {T0 + 0.015:.6f}: {snapshot} "
        f"header: {header}\n")
    report = import_capture(exchanges_config.exchanges["binance"], tmp_path / "BINANCE.ws.1.0", tmp_path / "lake")
    assert report.rest_snapshots == 1 and report.quarantined == 0
    assert report.counters["book_updates_applied"] == 2  # 13..14 and 15..15: 10..12 is in the snapshot
    assert report.book_snapshots == 2


def test_book_updates_applied_counts_what_binances_procedure_applies(exchanges_config: ExchangesFile,
                                                                    tmp_path: Path) -> None:
    # The documented procedure: buffer until the snapshot (lastUpdateId 14) arrives, drop what it holds (10..12),
    # then ignore a late event it also holds (u 13 < 14) and apply 14..15 and 16..16.
    frames = [binance_depth("BTCUSDT", 10, 12, 1_700_000_000_000), binance_depth("BTCUSDT", 12, 13, 1_700_000_000_500),
              binance_depth("BTCUSDT", 14, 15, 1_700_000_001_000), binance_depth("BTCUSDT", 16, 16, 1_700_000_002_000)]
    (tmp_path / "BINANCE.ws.1.0").write_text(cryptofeed(frames))
    (tmp_path / "BINANCE.http.0.0").write_text(
        f"https://127.0.0.1:9443/api/v3/depth?symbol=BTCUSDT&limit=1000 -> {T0 + 0.015:.6f}: "
        '{"lastUpdateId":14,"bids":[["0.99","5"]],"asks":[["1.01","5"]]}\n')
    report = import_capture(exchanges_config.exchanges["binance"], tmp_path / "BINANCE.ws.1.0", tmp_path / "lake")
    assert report.book_events_by_kind == {}
    assert report.counters["book_updates_applied"] == 2


def kraken_heartbeats(path: Path, size: int) -> Path:
    line = b'{"channel":"heartbeat"}\n'
    path.write_bytes(line * (size // len(line) + 1))
    return path


def test_a_large_input_shows_a_progress_bar_on_stderr(config: ExchangeConfig, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    capture = kraken_heartbeats(tmp_path / "kraken.capture", archive.PROGRESS_MIN_BYTES)
    report = import_capture(config, capture, tmp_path / "lake")
    err = capsys.readouterr().err
    assert "scanning kraken.capture" in err and "importing kraken.capture" in err and "100%" in err
    assert report.control_frames == report.records  # the bar is not in the data


def test_a_small_input_shows_no_progress_bar(config: ExchangeConfig, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    capture = kraken_heartbeats(tmp_path / "kraken.capture", 64 * 1024)
    import_capture(config, capture, tmp_path / "lake")
    assert capsys.readouterr().err == ""


@pytest.fixture
def config(exchanges_config: ExchangesFile) -> ExchangeConfig:
    return exchanges_config.exchanges["kraken"]
