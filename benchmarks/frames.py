"""Deterministic, realistic exchange frames for the benchmarks: one synthetic market (trades, book changes)
spelled in each exchange's wire format, exactly as exchange-protocols.md and the replay feed print them.

Prices and quantities are integers (ticks, lots) printed with the symbol's fixed decimals (the replay's
``SymbolSpec``), so every text is exact and Kraken's checksum is the replay book's own (``SyntheticBook``).
A fixed seed and start time: every run measures the same bytes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from trading_platform.replay.book import SyntheticBook
from trading_platform.replay.clock import rfc3339_ns, rfc3339_us
from trading_platform.replay.market import SymbolSpec

START_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
SEED = 7
Native = Callable[[str], str]  # normalized symbol -> the exchange's spelling


# --- trades -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trade:
    trade_id: int  # consecutive per symbol, as all three exchanges number them
    price: str
    qty: str
    time_us: int
    buyer_maker: bool  # the aggressor sold


def trade_ticks(symbols: list[str], frames: int, most_per_frame: int) -> list[tuple[str, list[Trade]]]:
    """``frames`` groups of trades of one symbol each (what one frame carries): mostly one trade, one in five
    carries up to ``most_per_frame`` (an order sweeping levels)."""
    rng = random.Random(SEED)
    specs = {s: SymbolSpec.for_symbol(s) for s in symbols}
    ticks = {s: round(spec.start_price * 10**spec.price_decimals) for s, spec in specs.items()}
    next_id = {s: rng.randrange(1_000_000, 9_000_000) for s in symbols}
    out = []
    for i in range(frames):
        symbol = rng.choice(symbols)
        spec = specs[symbol]
        count = rng.randint(2, most_per_frame) if most_per_frame > 1 and rng.random() < 0.2 else 1
        trades = []
        for _ in range(count):
            ticks[symbol] = max(1, round(ticks[symbol] * (1 + rng.gauss(0, 0.0005))))
            notional = rng.expovariate(1 / 200)  # quote currency, ~200 on average
            lots = max(1, round(notional / (ticks[symbol] / 10**spec.price_decimals) * 10**spec.qty_decimals))
            next_id[symbol] += 1
            trades.append(Trade(next_id[symbol], spec.price_text(ticks[symbol]), spec.qty_text(lots),
                                START_US + i * 1000, rng.random() < 0.5))
        out.append((symbol, trades))
    return out


Ticks = list[tuple[str, list[Trade]]]


def binance_trades(ticks: Ticks, native: Native, aggregated: bool = False) -> list[bytes]:
    """Combined-stream ``@trade`` frames (one trade each), or the same trades as ``@aggTrade`` (one trade per
    aggregate)."""
    frames = []
    for symbol, (trade,) in ticks:
        name = native(symbol)
        ms = trade.time_us // 1000
        data = ({"e": "aggTrade", "E": ms, "s": name, "a": trade.trade_id, "p": trade.price, "q": trade.qty,
                 "f": trade.trade_id, "l": trade.trade_id, "T": ms, "m": trade.buyer_maker, "M": True}
                if aggregated else
                {"e": "trade", "E": ms, "s": name, "t": trade.trade_id, "p": trade.price, "q": trade.qty, "T": ms,
                 "m": trade.buyer_maker, "M": True})
        stream = f"{name.lower()}@{'aggTrade' if aggregated else 'trade'}"
        frames.append(orjson.dumps({"stream": stream, "data": data}))
    return frames


def coinbase_trades(ticks: Ticks, native: Native) -> list[bytes]:
    """Advanced Trade ``market_trades`` updates, one connection's consecutive ``sequence_num``; ``side`` is the
    maker's (as the replay feed and the platform read it)."""
    frames = []
    for number, (symbol, trades) in enumerate(ticks):
        product = native(symbol)
        body = ",".join(
            f'{{"trade_id":"{t.trade_id}","product_id":"{product}","price":"{t.price}","size":"{t.qty}",'
            f'"side":"{"BUY" if t.buyer_maker else "SELL"}","time":"{rfc3339_us(t.time_us)}"}}' for t in trades)
        frames.append(_coinbase_envelope("market_trades", number, trades[0].time_us,
                                         f'[{{"type":"update","trades":[{body}]}}]'))
    return frames


def kraken_trades(ticks: Ticks, native: Native) -> list[bytes]:
    """Kraken v2 ``trade`` updates: numbers as JSON numbers, ``side`` the taker's."""
    frames = []
    for symbol, trades in ticks:
        pair = native(symbol)
        body = ",".join(
            f'{{"symbol":"{pair}","side":"{"sell" if t.buyer_maker else "buy"}","price":{t.price},"qty":{t.qty},'
            f'"ord_type":"{"limit" if t.trade_id % 4 == 0 else "market"}","trade_id":{t.trade_id},'
            f'"timestamp":"{rfc3339_us(t.time_us)}"}}' for t in trades)
        frames.append(f'{{"channel":"trade","type":"update","data":[{body}]}}'.encode())
    return frames


def _coinbase_envelope(channel: str, number: int, time_us: int, events: str) -> bytes:
    return (f'{{"channel":"{channel}","client_id":"","timestamp":"{rfc3339_ns(time_us * 1000 + 123)}",'
            f'"sequence_num":{number},"events":{events}}}').encode()


# --- books --------------------------------------------------------------------------------------------------
Levels = list[tuple[int, int]]  # (price ticks, qty lots); 0 lots removes the level


@dataclass(frozen=True)
class BookStep:
    """The level changes of one book message of one symbol, already applied to the driver's book."""

    symbol: str
    time_us: int
    bids: Levels
    asks: Levels


class BookMarket:
    """Every symbol's book (integers, the replay's ``SyntheticBook``) and the changes a busy market makes to it:
    quantities change near the touch most, levels appear and vanish, the book never crosses.

    ``depth``: the subscribed depth of a client that drops levels beyond it with no message (Kraken v2); the
    books here are truncated alike, so they stay exactly what such a client holds.
    """

    def __init__(self, symbols: list[str], levels: int, depth: int | None = None) -> None:
        self.rng = random.Random(SEED)
        self.levels = levels
        self.depth = depth
        self.specs = {s: SymbolSpec.for_symbol(s) for s in symbols}
        self.books: dict[str, SyntheticBook] = {}
        for symbol, spec in self.specs.items():
            book = SyntheticBook()
            mid = round(spec.start_price * 10**spec.price_decimals)
            for side in (True, False):
                price = mid
                for _ in range(levels):
                    price += -self.rng.randint(1, 3) if side else self.rng.randint(1, 3)
                    book.set_level(side, price, self._lots(spec))
            self.books[symbol] = book
        self.steps = 0

    def _lots(self, spec: SymbolSpec) -> int:
        return max(1, round(self.rng.expovariate(1 / 2_000) / spec.start_price * 10**spec.qty_decimals))

    def step(self) -> BookStep:
        rng = self.rng
        symbol = rng.choice(list(self.books))
        book, spec = self.books[symbol], self.specs[symbol]
        changes: dict[bool, Levels] = {True: [], False: []}
        for _ in range(rng.randint(1, 6)):
            is_bid = rng.random() < 0.5
            prices = book.bid_prices if is_bid else book.ask_prices
            rank = min(int(rng.expovariate(0.2)), len(prices) - 1)  # 0 is the touch
            price = prices[-1 - rank] if is_bid else prices[rank]
            roll = rng.random()
            if roll < 0.3 and len(prices) > 12:  # the checksummed top 10 stays full
                qty = 0
            elif roll < 0.6 and len(prices) < self.levels * 3 // 2:
                best_bid, best_ask = book.best_bid(), book.best_ask()
                inside = best_ask - best_bid > 1 and rng.random() < 0.2  # improve the touch
                if is_bid:
                    price = best_bid + 1 if inside else best_bid - rng.randint(1, 2 * len(prices))
                else:
                    price = best_ask - 1 if inside else best_ask + rng.randint(1, 2 * len(prices))
                qty = self._lots(spec)
            else:
                qty = self._lots(spec)
            book.set_level(is_bid, price, qty)
            changes[is_bid].append((price, qty))
        if self.depth is not None:
            for is_bid, prices in ((True, book.bid_prices), (False, book.ask_prices)):
                while len(prices) > self.depth:  # the client truncates too: no message
                    book.set_level(is_bid, prices[0] if is_bid else prices[-1], 0)
        self.steps += 1
        return BookStep(symbol, START_US + self.steps * 5_000, changes[True], changes[False])

    def top(self, symbol: str) -> tuple[Levels, Levels]:
        """(bids best first, asks best first) of one book."""
        book = self.books[symbol]
        return ([(p, book.bids[p]) for p in reversed(book.bid_prices)],
                [(p, book.asks[p]) for p in book.ask_prices])

    def texts(self, symbol: str, levels: Levels) -> list[tuple[str, str]]:
        spec = self.specs[symbol]
        return [(spec.price_text(p), spec.qty_text(q)) for p, q in levels]

    def values(self, symbol: str, levels: Levels) -> list[tuple[float, float]]:
        """The levels as a client reads them off the wire: the floats of their texts."""
        return [(float(price), float(qty)) for price, qty in self.texts(symbol, levels)]


@dataclass
class BookFrames:
    """One exchange's book traffic: WebSocket frames in receive order, the REST snapshot bodies its book
    procedure fetches (Binance; by symbol) and where each answer arrives (after frame ``index``), and the
    market whose final books the client must hold."""

    frames: list[bytes]
    updates: int  # book update messages among the frames (snapshots excluded)
    market: BookMarket
    rest: dict[str, bytes]
    rest_after: dict[int, str]


def binance_books(symbols: list[str], native: Native, updates: int, levels: int) -> BookFrames:
    """``@depth@100ms`` diffs with consecutive update ids, and a REST snapshot per symbol. As the local book
    procedure runs: a symbol's first diff is buffered, the snapshot asked then is at least as new (here: its
    ``lastUpdateId`` is that diff's ``u``, so the diff is discarded and the next one continues the snapshot), and
    its answer arrives right after that diff."""
    market = BookMarket(symbols, levels)
    rng = random.Random(SEED)
    last_id = {s: rng.randrange(10**9, 5 * 10**9) for s in symbols}
    frames: list[bytes] = []
    rest: dict[str, bytes] = {}
    rest_after: dict[int, str] = {}
    for _ in range(updates):
        step = market.step()
        name = native(step.symbol)
        first = last_id[step.symbol] + 1
        last_id[step.symbol] += rng.randint(1, 4)  # several book events per 100 ms
        ms = step.time_us // 1000
        frames.append(orjson.dumps({"stream": f"{name.lower()}@depth@100ms", "data": {
            "e": "depthUpdate", "E": ms, "s": name, "U": first, "u": last_id[step.symbol],
            "b": market.texts(step.symbol, step.bids), "a": market.texts(step.symbol, step.asks)}}))
        if step.symbol not in rest:
            bids, asks = (market.texts(step.symbol, side) for side in market.top(step.symbol))
            rest[step.symbol] = orjson.dumps({"lastUpdateId": last_id[step.symbol], "bids": bids, "asks": asks})
            rest_after[len(frames) - 1] = step.symbol
    return BookFrames(frames, updates, market, rest, rest_after)


def coinbase_books(symbols: list[str], native: Native, updates: int, levels: int) -> BookFrames:
    """``l2_data``: a snapshot per product (bids then offers, best first, epoch ``event_time``), then updates."""
    market = BookMarket(symbols, levels)
    frames = []
    for number, symbol in enumerate(symbols):
        bids, asks = market.top(symbol)
        body = _coinbase_levels(market, symbol, bids, asks, "1970-01-01T00:00:00Z")
        frames.append(_coinbase_envelope("l2_data", number, START_US, f'[{{"type":"snapshot","product_id":'
                                                                      f'"{native(symbol)}","updates":[{body}]}}]'))
    for number in range(len(symbols), len(symbols) + updates):
        step = market.step()
        body = _coinbase_levels(market, step.symbol, step.bids, step.asks, rfc3339_us(step.time_us))
        frames.append(_coinbase_envelope("l2_data", number, step.time_us, f'[{{"type":"update","product_id":'
                                                                          f'"{native(step.symbol)}","updates":[{body}]}}]'))
    return BookFrames(frames, updates, market, {}, {})


def _coinbase_levels(market: BookMarket, symbol: str, bids: Levels, asks: Levels, event_time: str) -> str:
    return ",".join(
        f'{{"side":"{side}","event_time":"{event_time}","price_level":"{price}","new_quantity":"{qty}"}}'
        for side, levels in (("bid", bids), ("offer", asks)) for price, qty in market.texts(symbol, levels))


def kraken_books(symbols: list[str], native: Native, updates: int, depth: int) -> BookFrames:
    """Kraken v2 ``book`` at ``depth``: a snapshot per pair, then updates, each with the CRC32 of the top 10
    after the client applies and truncates (the replay book's checksum)."""
    market = BookMarket(symbols, depth, depth)
    frames = []
    for symbol in symbols:
        bids, asks = market.top(symbol)
        frames.append(_kraken_book(market, "snapshot", symbol, native, bids, asks, START_US))
    for _ in range(updates):
        step = market.step()
        frames.append(_kraken_book(market, "update", step.symbol, native, step.bids, step.asks, step.time_us))
    return BookFrames(frames, updates, market, {}, {})


def _kraken_book(market: BookMarket, kind: str, symbol: str, native: Native, bids: Levels, asks: Levels,
                 time_us: int) -> bytes:
    def levels(side: Levels) -> str:
        return ",".join(f'{{"price":{p},"qty":{q}}}' for p, q in market.texts(symbol, side))

    return (f'{{"channel":"book","type":"{kind}","data":[{{"symbol":"{native(symbol)}","bids":[{levels(bids)}],'
            f'"asks":[{levels(asks)}],"checksum":{market.books[symbol].checksum()},'
            f'"timestamp":"{rfc3339_us(time_us)}"}}]}}').encode()
