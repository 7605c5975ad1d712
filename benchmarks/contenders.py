"""The contenders the decode and book sections time on the same frames: a bare JSON decode, the platform's
decode path (``TradeNormalizer``: decode + normalize + validate, books included), and cryptofeed's own
exchange handlers driven offline, and the figures comparing them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import orjson

from benchmarks.harness import Figure, Rate, at_least, paired_ratio
from trading_platform.exchanges.base import Exchange
from trading_platform.exchanges.decoded import RecordKind
from trading_platform.ingestion.normalize import TradeNormalizer

TICK_BATCH = 5_000  # records decoded per call: ~1 s of a busy exchange, as the ingestion tick hands them over
WARM_UP = 200  # records each contender handles once, untimed, before the rounds
Run = Callable[[], object]


def bare_decoders(frames: list[bytes]) -> dict[str, Run]:
    """A plain JSON decode of every frame into Python objects: the bound any decode path works against."""

    def bare_orjson() -> None:
        for frame in frames:
            orjson.loads(frame)

    def bare_msgspec() -> None:
        decode = msgspec.json.decode
        for frame in frames:
            decode(frame)

    return {"bare orjson": bare_orjson, "bare msgspec": bare_msgspec}


def platform(new_exchange: Callable[[], Exchange], spike_threshold: float, records: list[bytes],
             kinds: list[RecordKind] | None, check: Callable[[Exchange, int], None]) -> Run:
    """The platform's hot path over ``records`` in ticks of ``TICK_BATCH``; ``check(exchange, trade_rows)`` proves
    the round did the whole work. A fresh exchange per round: its continuity state (trade ids, book ids) would
    otherwise drop a repeated round as already seen."""
    received = [time.time_ns() // 1000] * len(records)
    batches = [(records[i:i + TICK_BATCH], received[i:i + TICK_BATCH],
                None if kinds is None else kinds[i:i + TICK_BATCH]) for i in range(0, len(records), TICK_BATCH)]

    def run() -> None:
        exchange = new_exchange()
        normalizer = TradeNormalizer(exchange, spike_threshold)
        rows = 0
        for batch, times, batch_kinds in batches:
            rows += normalizer.process(batch, times, batch_kinds).trades.num_rows
        check(exchange, rows)

    # Warm up untimed: lazy imports (pyarrow pulls in pandas on first use) and first-call caches would
    # otherwise land in the first timed round.
    batch, times, batch_kinds = batches[0]
    TradeNormalizer(new_exchange(), spike_threshold).process(batch[:WARM_UP], times[:WARM_UP],
                                                             None if batch_kinds is None else batch_kinds[:WARM_UP])
    return run


# --- cryptofeed ---------------------------------------------------------------------------------------------
try:
    from cryptofeed.defines import L2_BOOK, TRADES
    from cryptofeed.exchanges import Binance as CryptofeedBinance
    from cryptofeed.exchanges import Coinbase as CryptofeedCoinbase
    from cryptofeed.feed import Feed
    from cryptofeed.symbols import Symbols

    CRYPTOFEED = f"cryptofeed {version('cryptofeed')}"
    _FEEDS: dict[str, type[Feed]] = {"binance": CryptofeedBinance, "coinbase": CryptofeedCoinbase}
    _MISSING = ""
except (ImportError, PackageNotFoundError) as error:
    CRYPTOFEED = "cryptofeed"
    _FEEDS = {}
    _MISSING = f"cryptofeed is not installed ({error}): run with `uv run --group bench` (make bench does)"
# Exchanges cryptofeed cannot parse in the protocol we speak.
_UNSPOKEN = {"kraken": "cryptofeed 2.4.1 speaks Kraken WebSocket v1 only (array frames, "
                       "XBT/USD); these are v2 frames, so there is nothing of its to run on them"}


class _Snapshots:
    """Stands in for cryptofeed's HTTP connection: answers its REST depth request with the snapshot body the
    platform gets for the same symbol (offline, so both rebuild the same book)."""

    def __init__(self, bodies: dict[str, str]) -> None:
        self.bodies = bodies

    async def read(self, address: str, **_: Any) -> str:
        return self.bodies[parse_qs(urlsplit(address).query)["symbol"][0]]


def cryptofeed(exchange: str, channel: str, symbols: dict[str, str], frames: list[bytes],
               rest: dict[str, bytes] | None = None) -> tuple[Run, Callable[[], int]] | str:
    """cryptofeed's handler for ``exchange`` parsing ``frames`` (as the text its connection delivers) through
    ``message_handler`` with a no-op callback that only counts; returns the round and the count of the last
    round, or why it cannot run. ``symbols``: normalized -> native; ``rest``: depth snapshots by native symbol.
    """
    if _MISSING:
        return _MISSING
    if exchange in _UNSPOKEN:
        return _UNSPOKEN[exchange]
    feed_class = _FEEDS[exchange]
    # cryptofeed loads its symbol table from the exchange's REST API at construction; set it instead (offline).
    Symbols.set(feed_class.id, dict(symbols), {})
    kind = TRADES if channel == "trades" else L2_BOOK
    texts = [frame.decode() for frame in frames]
    bodies = {native: body.decode() for native, body in (rest or {}).items()}
    delivered = [0]

    async def count(_: object, __: float) -> None:
        delivered[0] += 1

    async def feed_all(texts: list[str]) -> None:
        feed = feed_class(symbols=list(symbols), channels=[kind], callbacks={kind: count})
        feed.http_conn = _Snapshots(bodies)
        handler = feed.message_handler
        receipt = time.time()
        for text in texts:
            await handler(text, None, receipt)

    def run() -> None:
        delivered[0] = 0
        asyncio.run(feed_all(texts))

    asyncio.run(feed_all(texts[:WARM_UP]))  # untimed, as the platform's

    return run, lambda: delivered[0]


# --- figures ------------------------------------------------------------------------------------------------
def figures(section: str, rates: dict[str, Rate], unit: str, ours: str, not_run: str | None, target: float,
            detail: dict[str, Any]) -> list[Figure]:
    """Each contender's median rate (the detail carries every median, min and max), then platform / cryptofeed
    on the same frames, round by round (``paired_ratio``): ``ours`` names the platform's contender; ``not_run``
    says why cryptofeed could not run (its figures stay in the table, with the reason)."""
    rates_detail = {name: asdict(rate) for name, rate in rates.items()}
    out = [Figure(section, name, rate.median, unit, detail=rates_detail) for name, rate in rates.items()]
    versus = f"{ours} / {CRYPTOFEED}"
    if not_run is not None:
        reason = {"not_run": not_run, **detail}
        return [*out, Figure(section, "cryptofeed", 0, f"{unit} (not run)", detail=reason),
                Figure(section, versus, 0, "x (not run)", f">= {target:g} x", None, reason)]
    ratio = paired_ratio(rates[ours], rates["cryptofeed"])
    return [*out, at_least(section, versus, ratio.median, "x", target, {**detail, "ratio_per_round": asdict(ratio)})]
