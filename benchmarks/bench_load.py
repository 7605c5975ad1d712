"""Lake -> ClickHouse (chdb): the platform's load of a day of trades beside a bare ``INSERT ... SELECT FROM
file()`` of the same files, in alternating rounds (see harness), then a 1-minute OHLCV query over that day.

The lake day is written the way ingestion writes it (``write_batch``: one file per symbol per flush, every
``TP_BATCH_MAX_AGE_S`` by default).
chdb embeds one database folder per process, so every load runs in a child process of its own on a fresh
folder. The children are started and have their (empty) database open before the timing starts: a timed
call is only "go", the load, "done".
"""

from __future__ import annotations

import multiprocessing
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.harness import Figure, alternate, at_least, at_most
from trading_platform.config import load_exchanges
from trading_platform.exchanges.binance import Binance
from trading_platform.ingestion.lake_writer import batch_id_for, write_batch
from trading_platform.load.lake_to_clickhouse import load_new_batches
from trading_platform.schema import MARKET_TRADES
from trading_platform.settings import Settings, load_settings
from trading_platform.sql import quote_string
from trading_platform.storage.clickhouse import ChdbClickHouse, ensure_schema
from trading_platform.storage.object_store import LocalObjectStore

SECTION = "lake load"
EXCHANGE = "binance"
# The default TP_BATCH_MAX_AGE_S (60 s; the issue counted 10 s, 172,800 files): one file per symbol per flush.
FLUSH_S = int(Settings.model_fields["batch_max_age_s"].default)
DEFAULT_DAY_FILES = 86_400 // FLUSH_S * 20  # a default day of one exchange's 20 symbols' trades: 28,800 files
# Lookback of the platform's load: yesterday's partition even if the UTC date turns during the benchmark.
LOOKBACK_DAYS = 3
WARM_UP_FILE = "warm_up.parquet"  # a copy of one lake file, outside the lake


@dataclass(frozen=True)
class Size:
    flushes: int
    rows_per_file: int  # the day: ~2,800 rows per file (219 k rows/s at 79 files/s)
    rounds: int


FULL = Size(flushes=60, rows_per_file=2_500, rounds=2)  # 20 symbols: 3 M rows in 1,200 files
QUICK = Size(flushes=5, rows_per_file=500, rounds=2)  # 50 k rows in 100 files
# The files of a default day: the 3 M-row day in 28,800 files is ~104 rows per file (in 172,800 files at
# a 10 s flush, 17), where the cost per file, not per row, decides. A sample of them is loaded and timed, not
# extrapolated from big files.
DAY_ROWS_PER_FILE = 3_000_000 // DEFAULT_DAY_FILES
DAY_SAMPLE = Size(flushes=150, rows_per_file=DAY_ROWS_PER_FILE, rounds=2)  # 3,000 files
QUICK_DAY_SAMPLE = Size(flushes=10, rows_per_file=DAY_ROWS_PER_FILE, rounds=2)


@dataclass
class Outcome:
    """What one child reports: rows and files it loaded, its own load seconds, then the OHLCV query seconds."""

    rows: int
    files: int
    load_seconds: float
    problems: str = ""
    query_seconds: float = 0.0


def write_lake_day(root: Path, size: Size, day: date, seed: int = 3) -> tuple[int, int]:
    """Write ``size.flushes`` batches of every Binance symbol into the lake at ``root``; returns (rows, files)."""
    symbols = Binance(load_exchanges(load_settings().exchanges_file).exchanges[EXCHANGE]).symbols
    natives = [s.replace("-", "") for s in symbols]
    rng = np.random.default_rng(seed)
    store = LocalObjectStore(root)
    day_start_us = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1_000_000)
    next_id = {s: int(rng.integers(1_000_000, 9_000_000)) for s in symbols}
    price = {s: float(rng.uniform(0.1, 90_000)) for s in symbols}
    n = size.rows_per_file
    files = 0
    for flush in range(size.flushes):
        # Flushes spread over the day so the OHLCV query sees the day's minutes, each holding a flush of trades.
        start_us = day_start_us + flush * (86_400 // size.flushes) * 1_000_000
        parts = []
        for symbol, native in zip(symbols, natives, strict=True):
            times = np.sort(rng.integers(start_us, start_us + FLUSH_S * 1_000_000, n))
            prices = price[symbol] * np.exp(np.cumsum(rng.normal(0, 0.0005, n)))
            price[symbol] = float(prices[-1])
            ids = np.arange(next_id[symbol], next_id[symbol] + n)
            next_id[symbol] += n
            parts.append(pa.table({
                "exchange": pa.array([EXCHANGE] * n), "symbol": pa.array([symbol] * n),
                "native_symbol": pa.array([native] * n), "trade_id": pa.array(ids.astype(str)),
                "price": pa.array(prices), "quantity": pa.array(rng.exponential(1.0, n) + 1e-5),
                "side": pa.array(np.where(rng.random(n) < 0.5, "buy", "sell")),
                "timestamp": pa.array(times, pa.timestamp("us", "UTC")),
                "received_at": pa.array(times + rng.integers(1_000, 50_000, n), pa.timestamp("us", "UTC")),
            }))
        batch_id = batch_id_for(EXCHANGE, flush * 1_000_000, flush * 1_000_000 + len(symbols) * n - 1)
        written = write_batch(store, EXCHANGE, batch_id, {MARKET_TRADES: pa.concat_tables(parts)})
        files += len(written.keys)
    return size.flushes * len(symbols) * n, files


def _platform_load(ch: ChdbClickHouse, lake: Path, files: int) -> tuple[int, int, str]:
    result = load_new_batches(LocalObjectStore(lake), ch, MARKET_TRADES, LOOKBACK_DAYS)
    problems = "; ".join([*(f"held back {k}: {why}" for k, why in result.held_back.items()),
                          *(f"incomplete batch {b}: {seen}" for b, seen in result.incomplete.items())])
    return result.rows, result.files, problems


def _bare_insert(ch: ChdbClickHouse, lake: Path, files: int) -> tuple[int, int, str]:
    # Columns named on both sides: file() adds the Hive partition keys (date, ...) as extra columns to `*`.
    columns = ", ".join(MARKET_TRADES.column_names)
    glob = quote_string(f"{lake}/{MARKET_TRADES.lake_prefix()}*/*/*/*.parquet")
    ch.command(f"INSERT INTO {MARKET_TRADES.sql_name} ({columns}) SELECT {columns} FROM file({glob}, Parquet)")
    rows = int(ch.query_arrow(f"SELECT count() AS n FROM {MARKET_TRADES.sql_name}").column("n")[0].as_py())
    return rows, files, ""


LOADERS: dict[str, Callable[[ChdbClickHouse, Path, int], tuple[int, int, str]]] = {
    "platform load_new_batches": _platform_load,
    "bare INSERT SELECT FROM file()": _bare_insert,
}
OHLCV = (f"SELECT symbol, toStartOfMinute(timestamp) AS minute, argMin(price, timestamp) AS open, "
         f"max(price) AS high, min(price) AS low, argMax(price, timestamp) AS close, sum(quantity) AS volume, "
         f"count() AS trades FROM {MARKET_TRADES.sql_name} WHERE exchange = {quote_string(EXCHANGE)} "
         f"AND timestamp >= toDateTime64({{day}}, 6, 'UTC') AND timestamp < toDateTime64({{day}}, 6, 'UTC') "
         f"+ INTERVAL 1 DAY GROUP BY symbol, minute ORDER BY symbol, minute")


def _warm_up(ch: ChdbClickHouse, sample: Path) -> None:
    """Pay the engine's one-time costs outside the timing, the same for both contenders: a fresh chdb
    process spends 1-3 s in its first read of such a Parquet file, whichever file it is."""
    scratch = "trading.warm_up"
    ch.command(f"CREATE TABLE {scratch} AS {MARKET_TRADES.sql_name}")
    columns = ", ".join(MARKET_TRADES.column_names)
    ch.command(f"INSERT INTO {scratch} ({columns}) SELECT {columns} FROM file({quote_string(str(sample))}, Parquet)")
    ch.insert_arrow(scratch, pq.read_table(sample).select(MARKET_TRADES.column_names))
    ch.command(f"DROP TABLE {scratch} SYNC")


def _load_child(conn: Connection, loader: str, lake: str, folder: str, files: int, day: str) -> None:
    """One round of one contender: open a fresh chdb folder, say ready, load on "go", report, exit."""
    ch = ChdbClickHouse(folder)
    try:
        ensure_schema(ch)
        _warm_up(ch, Path(folder).parent / WARM_UP_FILE)
        conn.send("ready")
        conn.recv()
        started = time.perf_counter()
        rows, loaded_files, problems = LOADERS[loader](ch, Path(lake), files)
        load_seconds = time.perf_counter() - started
        conn.send(Outcome(rows, loaded_files, load_seconds, problems))  # the parent's timing ends here
        started = time.perf_counter()
        ch.query_arrow(OHLCV.format(day=quote_string(day)))
        conn.send(time.perf_counter() - started)
    finally:
        ch.close()


class _Child:
    """A started child process holding a fresh chdb folder, waiting for "go"."""

    def __init__(self, loader: str, lake: Path, folder: Path, files: int, day: date) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
        self._conn, child_end = context.Pipe()
        self._process = context.Process(target=_load_child, daemon=True,
                                        args=(child_end, loader, str(lake), str(folder), files, day.isoformat()))
        self._process.start()
        child_end.close()
        self.outcome = Outcome(0, 0, 0.0)

    def wait_ready(self) -> None:
        if self._conn.recv() != "ready":
            raise RuntimeError("load child did not start")

    def run(self) -> None:
        """The timed part: "go", then the child's report once its load is done."""
        self._conn.send("go")
        self.outcome = self._conn.recv()
        assert isinstance(self.outcome, Outcome)

    def finish(self) -> None:
        """After the timed rounds: the OHLCV query's seconds, then the child's exit."""
        self.outcome.query_seconds = float(self._conn.recv())
        self._process.join(60)


@dataclass
class Measured:
    rates: dict[str, Any]
    outcomes: dict[str, list[Outcome]]
    rows: int
    files: int
    write_seconds: float


def _measure(size: Size) -> Measured:
    """Write a lake day of ``size``, then time every contender on it in alternating rounds."""
    day = datetime.now(UTC).date() - timedelta(days=1)  # a whole past day, inside the load's lookback
    with tempfile.TemporaryDirectory(prefix="tp-bench-load-") as tmp:
        lake = Path(tmp) / "lake"
        started = time.perf_counter()
        rows, files = write_lake_day(lake, size, day)
        write_seconds = time.perf_counter() - started
        shutil.copyfile(next(lake.rglob("*.parquet")), Path(tmp) / WARM_UP_FILE)
        children = {name: [_Child(name, lake, Path(tmp) / f"chdb-{i}-{n}", files, day) for n in range(size.rounds)]
                    for i, name in enumerate(LOADERS)}
        for queue in children.values():
            for child in queue:
                child.wait_ready()
        used = {name: list(queue) for name, queue in children.items()}

        def contender(name: str) -> Callable[[], None]:
            return lambda: children[name].pop(0).run()

        rates = alternate({name: contender(name) for name in LOADERS}, rows, size.rounds)
        for queue in used.values():
            for child in queue:
                child.finish()
        outcomes = {name: [child.outcome for child in queue] for name, queue in used.items()}
    return Measured(rates, outcomes, rows, files, write_seconds)


def run(quick: bool) -> list[Figure]:
    big = _measure(QUICK if quick else FULL)
    small = _measure(QUICK_DAY_SAMPLE if quick else DAY_SAMPLE)
    return _figures(big) + _day_figures(small)


PLATFORM, BARE = "platform load_new_batches", "bare INSERT SELECT FROM file()"


def _figures(measured: Measured) -> list[Figure]:
    rates, outcomes, rows, files = measured.rates, measured.outcomes, measured.rows, measured.files
    write_seconds = measured.write_seconds
    platform, bare = PLATFORM, BARE
    detail: dict[str, Any] = {
        "lake_rows": rows, "lake_files": files, "lake_write_seconds": round(write_seconds, 1),
        "rates_rows_per_s": {name: asdict(rate) for name, rate in rates.items()},
        "child_load_seconds": {name: [round(o.load_seconds, 3) for o in got] for name, got in outcomes.items()},
        "rows_loaded": {name: sorted({o.rows for o in got}) for name, got in outcomes.items()},
        "files_loaded": {name: sorted({o.files for o in got}) for name, got in outcomes.items()},
        "problems": {name: sorted({o.problems for o in got if o.problems}) for name, got in outcomes.items()},
    }
    # Both contenders must have loaded every row of the lake, or their rates compare different work.
    complete = all(o.rows == rows for got in outcomes.values() for o in got)
    detail["every_round_loaded_all_rows"] = complete
    files_per_s = {name: rate.median * files / rows for name, rate in rates.items()}
    day_seconds = DEFAULT_DAY_FILES / files_per_s[platform]
    detail["rows_per_file"] = rows // files
    query = statistics.median(o.query_seconds for got in outcomes.values() for o in got)
    return [
        at_least(SECTION, "platform load rows/s", rates[platform].median, "rows/s", 1_000_000, detail),
        Figure(SECTION, "bare INSERT FROM file() rows/s", rates[bare].median, "rows/s", detail=detail),
        Figure(SECTION, "platform / bare rows/s", rates[platform].median / rates[bare].median, "x", detail=detail),
        Figure(SECTION, "platform load files/s", files_per_s[platform], "files/s", detail=detail),
        Figure(SECTION, "bare INSERT FROM file() files/s", files_per_s[bare], "files/s", detail=detail),
        at_most(SECTION, f"platform: default day of {DEFAULT_DAY_FILES:,} {rows // files:,}-row files", day_seconds,
                "s", 120,
                {**detail, "implied_from": "files/s of the platform load at this file size"},
                target_text="< 2 min"),  # at 2,500 rows per file: 3.6 M rows/s, more than the bare insert
        Figure(SECTION, "1-minute OHLCV over the day", query, "s", detail={
            "query_seconds": {name: [round(o.query_seconds, 3) for o in got] for name, got in outcomes.items()}}),
    ]


def _day_figures(measured: Measured) -> list[Figure]:
    """The default day from a timed sample of day-sized files (both contenders), not extrapolated from big files."""
    rates, rows, files = measured.rates, measured.rows, measured.files
    files_per_s = {name: rate.median * files / rows for name, rate in rates.items()}
    detail: dict[str, Any] = {
        "sample_rows": rows, "sample_files": files, "rows_per_file": rows // files,
        "rates_rows_per_s": {name: asdict(rate) for name, rate in rates.items()},
        "child_load_seconds": {name: [round(o.load_seconds, 3) for o in got]
                               for name, got in measured.outcomes.items()},
        "every_round_loaded_all_rows": all(o.rows == rows for got in measured.outcomes.values() for o in got),
        "problems": {name: sorted({o.problems for o in got if o.problems}) for name, got in measured.outcomes.items()},
    }
    return [
        Figure(SECTION, f"platform files/s, {rows // files}-row files", files_per_s[PLATFORM], "files/s",
               detail=detail),
        Figure(SECTION, f"bare INSERT FROM file() files/s, {rows // files}-row files", files_per_s[BARE], "files/s",
               detail=detail),
        at_most(SECTION, f"platform: default day of {DEFAULT_DAY_FILES:,} {rows // files}-row files",
                DEFAULT_DAY_FILES / files_per_s[PLATFORM], "s", 120,
                {**detail, "implied_from": "files/s of the platform load on a sample of such files"},
                target_text="< 2 min"),
    ]
