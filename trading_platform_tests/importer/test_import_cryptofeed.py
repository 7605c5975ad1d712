"""`trading-platform normalize` on recordings laid out the way cryptofeed writes them, with no `--symbols`.

The replay server serves a market of symbols half of which exchanges.yaml does not list, records a live
session in cryptofeed's format, and the test lays the recording out as cryptofeed does: the WebSocket
frames in ``<FEED>.ws.1.0``, the REST answers (Binance's depth snapshots, with their full URLs) in
``<FEED>.http.0.0`` beside it. There is no ``<FEED>.0``, so Binance's natives are spelled by its quote assets.
Every expected figure comes from the market's trade history or from the recorded frames themselves, never
from the importer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

from trading_platform.config import ExchangesFile
from trading_platform.exchanges.registry import exchange_class, exchange_for
from trading_platform.importer.archive import import_capture
from trading_platform.ingestion.runner import IngestionRunner
from trading_platform.replay import running_replay_server
from trading_platform.settings import Settings
from trading_platform.storage.object_store import LocalObjectStore
from trading_platform_tests.support import account, market_history, read_dataset, replay_endpoints, wait_for

# Two configured symbols and some exchanges.yaml does not list, with quotes that exercise Binance's split.
SYMBOLS = {
    "binance": ["BTC-USDT", "ETH-USDT", "PEPE-USDT", "WIF-USDC", "ETH-BTC", "SHIB-FDUSD"],
    "coinbase": ["BTC-USD", "ETH-USD", "PEPE-USD", "WIF-EUR"],
    "kraken": ["BTC-USD", "ETH-USD", "PEPE-USD", "WIF-EUR"],
}
RECORD_S = 1.5  # of data after every book is live: a few snapshot cadence buckets per symbol
# The URLs cryptofeed connects to, in place of the replay server's paths.
WS_URLS = {"binance": "wss://127.0.0.1:9443/", "coinbase": "wss://127.0.0.1:9444/coinbase",
           "kraken": "wss://127.0.0.1:9445/kraken/v2"}
IGNORED_EVERY = 10  # one @bookTicker and one @kline frame are added after every 10th Binance frame


@dataclass
class Recording:
    name: str
    ws: Path  # <FEED>.ws.1.0
    http: Path | None  # <FEED>.http.0.0 (Binance only: the other books come over the WebSocket)
    history: pa.Table  # every trade the market executed (support.market_history)
    served: ExchangesFile  # what the replay market served
    ignored_added: int = 0  # frames of channels the platform does not use, added to the recording

    @property
    def frames(self) -> list[tuple[float, dict]]:
        """(receive time, frame) of every received frame, as recorded."""
        out = []
        for line in self.ws.read_text().splitlines():
            stamp, sep, body = line.partition(": ")
            if sep and stamp.replace(".", "").isdigit():
                out.append((float(stamp), json.loads(body)))
        return out

    @property
    def natives(self) -> dict[str, str]:
        native = exchange_class(self.name).native_symbol
        return {native(s): s for s in SYMBOLS[self.name]}


def record(folder: Path, exchanges_config: ExchangesFile, name: str) -> Recording:
    """A live session against a replay market of SYMBOLS[name], recorded in cryptofeed's format."""
    served = ExchangesFile(exchanges={name: exchanges_config.exchanges[name].model_copy(  # type: ignore[index]
        update={"symbols": SYMBOLS[name]})})
    raw = folder / "recorded.txt"
    with running_replay_server(served, rate_per_symbol=10.0, seed=11, record={name: raw},
                               record_format="cryptofeed") as server:
        exchange = exchange_for(served.exchanges[name])  # type: ignore[index]
        url = exchange.use_endpoints(replay_endpoints(exchange.config, server.host, server.port))
        live = LocalObjectStore(folder / "live")
        runner = IngestionRunner(exchange, url, live, Settings(state_dir=folder, batch_max_age_s=0.5,
                                                               hot_tick_s=0.2))
        stop = threading.Event()
        thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
        thread.start()
        wait_for(lambda: len(set(read_dataset(live, "orderbook").column("symbol").to_pylist())) == len(SYMBOLS[name]),
                 30, "every book live")
        stop.wait(RECORD_S)
        stop.set()
        thread.join(30)
        history = market_history(server, name)
    ws, http, added = lay_out_as_cryptofeed(raw, name, exchange.subscribe_frames())
    raw.unlink()
    return Recording(name, ws, http, history, served, added)


def lay_out_as_cryptofeed(raw: Path, name: str, sent: list[str]) -> tuple[Path, Path | None, int]:
    """The replay server's one-file recording as cryptofeed's files: (ws file, http file, frames added)."""
    feed = name.upper()
    ws, http = raw.parent / f"{feed}.ws.1.0", raw.parent / f"{feed}.http.0.0"
    frames, answers, added = [], [], 0
    for line in raw.read_text().splitlines():
        if " -> " in line:  # cryptofeed records the full URL it asked
            answers.append(line.replace(f"/{name}/api/", "https://127.0.0.1:9443/api/", 1))
            continue
        if " <-> " in line:  # a connection opened, then what the client sent on it (the subscriptions)
            url, _, stamp = line.partition(" <-> ")
            url = WS_URLS[name] + url.removeprefix(f"/{name}").lstrip("/") if name == "binance" else WS_URLS[name]
            frames.append(f"{url} <-> {stamp}")
            frames += [f"{url} <- {stamp}: {message}" for message in sent]
            continue
        frames.append(line)
        if name == "binance" and ": {" in line and len(frames) % IGNORED_EVERY == 0:
            stamp = line.partition(": ")[0]
            native = json.loads(line.partition(": ")[2]).get("data", {}).get("s", "BTCUSDT")
            frames.append(f'{stamp}: {{"stream":"{native.lower()}@bookTicker","data":{{"u":1,"s":"{native}",'
                          f'"b":"1.0","B":"2.0","a":"1.1","A":"3.0"}}}}')
            frames.append(f'{stamp}: {{"stream":"{native.lower()}@kline_1m","data":{{"e":"kline","E":1,'
                          f'"s":"{native}","k":{{"t":1,"s":"{native}","i":"1m","o":"1.0","c":"1.0"}}}}}}')
            added += 2
    ws.write_text("\n".join(frames) + "\n")
    if answers:
        http.write_text("\n".join(answers) + "\n")
    return ws, http if answers else None, added


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory, exchanges_config: ExchangesFile) -> dict[str, Recording]:
    return {name: record(tmp_path_factory.mktemp(name), exchanges_config, name) for name in SYMBOLS}


# --- ground truth from the recording ------------------------------------------------------------------
def recorded_trade_ids(rec: Recording) -> dict[str, list[int]]:
    """Native symbol -> the trade ids its recorded trade frames carry."""
    ids: dict[str, list[int]] = {}
    for _, frame in rec.frames:
        if rec.name == "binance" and frame.get("data", {}).get("e") == "trade":
            ids.setdefault(frame["data"]["s"], []).append(frame["data"]["t"])
        elif rec.name == "coinbase" and frame.get("channel") == "market_trades":
            for event in frame["events"]:
                for trade in event["trades"]:
                    ids.setdefault(trade["product_id"], []).append(int(trade["trade_id"]))
        elif rec.name == "kraken" and frame.get("channel") == "trade":
            for trade in frame["data"]:
                ids.setdefault(trade["symbol"], []).append(trade["trade_id"])
    return ids


def recorded_snapshots(rec: Recording) -> dict[str, tuple[int, int]]:
    """Native symbol -> (receive time in µs, lastUpdateId) of its recorded REST depth snapshot."""
    assert rec.http is not None
    snapshots: dict[str, tuple[int, int]] = {}
    for line in rec.http.read_text().splitlines():
        url, _, answer = line.partition(" -> ")
        native = url.partition("symbol=")[2].partition("&")[0]
        stamp, _, body = answer.partition(": ")
        assert native not in snapshots, "one snapshot per symbol keeps the expectation simple"
        snapshots[native] = (round(float(stamp) * 1_000_000), json.loads(body)["lastUpdateId"])
    return snapshots


def binance_depth_truth(rec: Recording, interval_ms: int) -> tuple[Counter[str], Counter[str]]:
    """Per native symbol: the depth events Binance's documented procedure applies when each snapshot arrives
    when it was recorded, and the snapshot cadence buckets (exchange time) of those events."""
    snapshots = recorded_snapshots(rec)
    book_id: dict[str, int] = {}  # synced books: the id of their last applied event
    buffered: dict[str, list[dict]] = {}
    applied: Counter[str] = Counter()
    buckets: dict[str, set[int]] = {}

    def apply(native: str, event: dict) -> None:  # step 6
        if event["u"] < book_id[native]:
            return
        assert event["U"] <= book_id[native] + 1, "the recording has a gap"
        book_id[native] = event["u"]
        applied[native] += 1
        buckets.setdefault(native, set()).add(event["E"] // interval_ms)

    arrivals = sorted([(at, 0, native) for native, (at, _) in snapshots.items()] +
                      [(round(at * 1_000_000), 1, frame["data"]) for at, frame in rec.frames
                       if frame.get("data", {}).get("e") == "depthUpdate"], key=lambda item: item[:2])
    for _, is_event, item in arrivals:
        if not is_event:  # steps 4-5: the book is the snapshot, buffered events up to it are dropped
            native = str(item)
            book_id[native] = snapshots[native][1]
            for event in buffered.pop(native, []):
                if event["u"] > snapshots[native][1]:
                    apply(native, event)
        elif item["s"] in book_id:
            apply(item["s"], item)
        else:
            buffered.setdefault(item["s"], []).append(item)
    return applied, Counter({native: len(b) for native, b in buckets.items()})


def coinbase_updates_after_snapshot(rec: Recording) -> int:
    """level2 update events recorded after their product's snapshot (before it, the book is not synced)."""
    synced: set[str] = set()
    updates = 0
    for _, frame in rec.frames:
        if frame.get("channel") == "l2_data":
            for event in frame["events"]:
                if event["type"] == "snapshot":
                    synced.add(event["product_id"])
                elif event["product_id"] in synced:
                    updates += 1
    return updates


def cli_counts(stdout: str) -> dict[str, str]:
    return {label.strip(): value.strip() for label, _, value in
            (line.partition(":") for line in stdout.splitlines())}


# --- tests ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SYMBOLS))
def test_every_symbol_of_the_recording_is_imported_with_the_markets_trades(
        recordings: dict[str, Recording], exchanges_config: ExchangesFile, tmp_path: Path, name: str) -> None:
    rec = recordings[name]
    ids = recorded_trade_ids(rec)
    assert set(ids) == set(rec.natives)  # every symbol traded while recorded
    report = import_capture(exchanges_config.exchanges[name], rec.ws, tmp_path / "lake")  # type: ignore[index]
    stored = read_dataset(LocalObjectStore(tmp_path / "lake"), "trades")
    window = {native: (min(v), max(v)) for native, v in ids.items()}
    accounting = account(rec.history, stored, window)
    assert accounting.exact and accounting.stored == accounting.executed, accounting.summary()
    pairs = set(zip(stored.column("native_symbol").to_pylist(), stored.column("symbol").to_pylist(), strict=True))
    assert pairs == set(rec.natives.items())
    assert report.trades == accounting.executed
    assert sorted(report.symbols) == sorted(SYMBOLS[name])


def test_every_binance_book_syncs_from_the_rest_recording_next_to_it(
        recordings: dict[str, Recording], exchanges_config: ExchangesFile, tmp_path: Path) -> None:
    rec = recordings["binance"]
    config = exchanges_config.exchanges["binance"]
    applied, buckets = binance_depth_truth(rec, config.book_interval_ms)
    report = import_capture(config, rec.ws, tmp_path / "lake")  # the http file is found, not given
    assert report.rest_discovered and report.rest_snapshots == len(SYMBOLS["binance"])
    assert report.book_events_by_kind == {}  # no gap, no stale snapshot
    books = read_dataset(LocalObjectStore(tmp_path / "lake"), "orderbook")
    emitted = Counter(books.column("native_symbol").to_pylist())
    assert emitted == buckets and set(emitted) == set(rec.natives)
    assert report.counters["book_updates_applied"] == sum(applied.values())


def test_the_cli_prints_true_counts_for_a_cryptofeed_recording_and_its_rest_recording(
        recordings: dict[str, Recording], exchanges_config: ExchangesFile, tmp_path: Path) -> None:
    rec = recordings["binance"]
    assert rec.http is not None
    applied, buckets = binance_depth_truth(rec, exchanges_config.exchanges["binance"].book_interval_ms)
    trades = sum(len(v) for v in recorded_trade_ids(rec).values())
    result = subprocess.run([sys.executable, "-m", "trading_platform.cli", "normalize", "--exchange", "binance",
                             "--input", str(rec.ws), "--snapshot", str(rec.http), "--output", str(tmp_path / "cli")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    counts = cli_counts(result.stdout)
    not_configured = sorted(set(SYMBOLS["binance"]) - set(exchanges_config.exchanges["binance"].symbols))
    assert counts["symbols"].startswith(f"{len(SYMBOLS['binance'])} imported ({len(not_configured)} not in "
                                        f"exchanges.yaml: {', '.join(not_configured)})")
    assert counts["trades"] == f"{trades} ({len(SYMBOLS['binance'])} symbols)"
    assert counts["book updates applied"] == str(sum(applied.values()))
    assert counts["book snapshots emitted"] == (f"{sum(buckets.values())} ({len(SYMBOLS['binance'])} of "
                                                f"{len(SYMBOLS['binance'])} books synced)")
    assert counts["checksum verifications passed"].startswith("n/a")  # Binance books carry none
    assert counts["sequence gaps"] == "0"
    assert counts["REST book snapshots"].startswith(f"{len(SYMBOLS['binance'])} matched to their symbol by URL")
    assert counts["ignored frames"].startswith(f"{rec.ignored_added} ")
    assert counts["unrecognized / rejected frames"] == "0 {}"


def test_coinbase_book_updates_applied_are_counted(recordings: dict[str, Recording],
                                                   exchanges_config: ExchangesFile, tmp_path: Path) -> None:
    rec = recordings["coinbase"]
    report = import_capture(exchanges_config.exchanges["coinbase"], rec.ws, tmp_path / "lake")
    assert report.book_events_by_kind == {}
    assert report.counters["book_updates_applied"] == coinbase_updates_after_snapshot(rec) > 0
    assert report.symbols_with_books == set(SYMBOLS["coinbase"])


def test_every_kraken_checksum_of_every_recorded_symbol_verifies(
        recordings: dict[str, Recording], exchanges_config: ExchangesFile, tmp_path: Path) -> None:
    rec = recordings["kraken"]
    checksummed = sum(len(frame["data"]) for _, frame in rec.frames if frame.get("channel") == "book")
    report = import_capture(exchanges_config.exchanges["kraken"], rec.ws, tmp_path / "lake")
    assert report.counters["checksums_passed"] == checksummed
    assert report.counters["checksums_failed"] == 0
    assert report.symbols_with_books == set(SYMBOLS["kraken"])


def test_symbols_narrows_the_import_and_skips_the_other_symbols_frames(
        recordings: dict[str, Recording], exchanges_config: ExchangesFile, tmp_path: Path) -> None:
    rec = recordings["binance"]
    chosen = ["ETH-BTC", "PEPE-USDT"]
    others = sum(1 for _, f in rec.frames if f.get("data", {}).get("e") in ("trade", "depthUpdate")
                 and rec.natives[f["data"]["s"]] not in chosen)
    report = import_capture(exchanges_config.exchanges["binance"], rec.ws, tmp_path / "lake", symbols=chosen)
    lake = LocalObjectStore(tmp_path / "lake")
    assert set(read_dataset(lake, "trades").column("symbol").to_pylist()) == set(chosen)
    assert set(read_dataset(lake, "orderbook").column("symbol").to_pylist()) == set(chosen)
    assert report.skipped_frames == others and report.quarantined == 0
    assert report.rest_unused == {"for a symbol not imported": len(SYMBOLS["binance"]) - len(chosen)}


def test_rest_answers_are_matched_to_their_symbol_by_url_when_the_capture_has_no_times(
        recordings: dict[str, Recording], exchanges_config: ExchangesFile, tmp_path: Path) -> None:
    rec = recordings["binance"]
    assert rec.http is not None
    # One raw frame per line (no times: each book's answer is served at its request) and the answers reversed,
    # so an answer handed out by its place in the file would meet another symbol's book.
    raw = tmp_path / "binance.raw"
    raw.write_text("".join(json.dumps(frame) + "\n" for _, frame in rec.frames))
    answers = tmp_path / "answers.txt"
    answers.write_text("\n".join(reversed(rec.http.read_text().splitlines())) + "\n")
    report = import_capture(exchanges_config.exchanges["binance"], raw, tmp_path / "lake", rest_recordings=[answers])
    assert report.rest_snapshots == len(SYMBOLS["binance"])
    assert report.book_events_by_kind == {}  # no stale snapshot, no gap
    books = read_dataset(LocalObjectStore(tmp_path / "lake"), "orderbook")
    snapshot_ids = {native: last for native, (_, last) in recorded_snapshots(rec).items()}
    synced_from = {}
    for native, sequence in zip(books.column("native_symbol").to_pylist(), books.column("sequence").to_pylist(),
                                strict=True):
        synced_from[native] = min(sequence, synced_from.get(native, sequence))
    assert set(synced_from) == set(rec.natives)
    assert all(synced_from[n] >= snapshot_ids[n] for n in synced_from)  # each book grew from its own snapshot
