"""Order-book maintenance per exchange (issue 12, item 2): book update messages per second through the
platform's decode path (``TradeNormalizer``: the exchange's book procedure, snapshot emission at the configured
cadence) beside cryptofeed's own book handling of the same frames, in alternating rounds (see harness).

Frames (``frames.py``): Binance ``@depth@100ms`` diffs after a REST snapshot per symbol, Coinbase ``l2_data``
snapshot + updates, Kraken v2 ``book`` snapshot + updates whose CRC32 the platform verifies; 1-6 level changes
per update, 20 symbols, books of ~100 levels per side (Kraken: its subscribed depth). Each round starts from
the snapshots, and must end holding exactly the generator's books (checksums all passed)."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks import frames
from benchmarks.contenders import Run, cryptofeed, figures, platform
from benchmarks.harness import Figure, alternate
from trading_platform.config import ExchangeConfig, load_exchanges
from trading_platform.exchanges.base import Exchange
from trading_platform.exchanges.decoded import RecordKind
from trading_platform.exchanges.kraken import Kraken
from trading_platform.exchanges.registry import EXCHANGES
from trading_platform.settings import load_settings

UPDATES = 50_000  # 2,500 per symbol: steady state, not the snapshots, dominates
ROUNDS = 5
LEVELS = 100  # per side, in the Binance and Coinbase books
# What a reader of a figure must know about cryptofeed's side of it (checked against its 2.4.1 source and a run).
CRYPTOFEED_NOTES = {
    "coinbase": "cryptofeed 2.4.1 keeps snapshot levels whose side is 'bid' or 'ask', but Advanced Trade says "
                "'offer': its book starts with no asks (wrong book, a little less work); measured as is",
}


def run(quick: bool) -> list[Figure]:
    settings = load_settings()
    configs = load_exchanges(settings.exchanges_file).exchanges
    updates, rounds = (5_000, 2) if quick else (UPDATES, ROUNDS)
    builders: dict[str, Callable[[list[str], frames.Native, int], frames.BookFrames]] = {
        "binance": lambda symbols, native, count: frames.binance_books(symbols, native, count, LEVELS),
        "coinbase": lambda symbols, native, count: frames.coinbase_books(symbols, native, count, LEVELS),
        # The depth the platform subscribes at: Kraken sends nothing beyond it, and both sides truncate to it.
        "kraken": lambda symbols, native, count: frames.kraken_books(symbols, native, count,
                                                                     Kraken(configs["kraken"]).depth),
    }
    out: list[Figure] = []
    for name, build in builders.items():
        config = configs[name]
        book_frames = build(list(config.symbols), EXCHANGES[name].native_symbol, updates)
        out += _exchange(name, config, book_frames, rounds, settings.spike_threshold)
    return out


def _exchange(name: str, config: ExchangeConfig, book: frames.BookFrames, rounds: int,
              spike_threshold: float) -> list[Figure]:
    exchange_class = EXCHANGES[name]
    native = exchange_class.native_symbol
    market = book.market
    # The platform's records: the frames, with each REST snapshot answer at its place in receive order.
    records: list[bytes] = []
    kinds: list[RecordKind] = []
    for index, frame in enumerate(book.frames):
        records.append(frame)
        kinds.append(RecordKind.FRAME)
        symbol = book.rest_after.get(index)
        if symbol is not None:
            records.append(symbol.encode() + b"\n" + book.rest[symbol])
            kinds.append(RecordKind.REST)

    def same_books(exchange: Exchange, _: int) -> None:
        for symbol in market.books:
            bids, asks = market.top(symbol)
            assert exchange.synced[symbol], f"{name} {symbol}: book not in sync"
            held = exchange.books[symbol].top("bid", 10), exchange.books[symbol].top("ask", 10)
            assert held == (market.values(symbol, bids[:10]), market.values(symbol, asks[:10])), f"{name} {symbol}"
        assert not exchange.counters["checksums_failed"], f"{name}: {exchange.counters}"

    contenders: dict[str, Run] = {
        "platform": platform(lambda: exchange_class(config), spike_threshold, records, kinds, same_books)}
    theirs = cryptofeed(name, "book", {s: native(s) for s in config.symbols}, book.frames,
                        {native(s): body for s, body in book.rest.items()})
    if not isinstance(theirs, str):
        contenders["cryptofeed"] = theirs[0]
    rates = alternate(contenders, book.updates, rounds)
    books = len(market.books)
    if not isinstance(theirs, str):
        # One book callback per frame, so nothing was dropped as a gap (a Binance symbol's first diff, older than
        # its snapshot, is skipped; the snapshot's own callback stands in for it).
        assert theirs[1]() == len(book.frames), f"cryptofeed {name}: {theirs[1]()} book callbacks"
    section = f"{name} books"
    detail: dict[str, object] = {"updates": book.updates, "symbols": books, "rounds": rounds,
                                 "levels_per_update": "1-6", "book_levels_per_side": market.levels}
    if name in CRYPTOFEED_NOTES:
        detail["cryptofeed_note"] = CRYPTOFEED_NOTES[name]
    return figures(section, rates, "updates/s", "platform", theirs if isinstance(theirs, str) else None, 2, detail)
