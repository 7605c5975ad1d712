"""Trade hot path per exchange (issue 12, item 1): the platform's decode + normalize + validate into Arrow
columns, beside a bare JSON decode of the same frames and cryptofeed's own handler for that exchange, in
alternating rounds (see harness). Frames: ``frames.py`` (Binance ``@trade``, Coinbase ``market_trades``,
Kraken v2 ``trade``; one trade per frame, one Coinbase/Kraken frame in five carries 2-4)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

from benchmarks import frames
from benchmarks.contenders import Run, bare_decoders, cryptofeed, figures, platform
from benchmarks.harness import Figure, alternate, at_least, paired_ratio
from trading_platform.config import ExchangeConfig, load_exchanges
from trading_platform.exchanges.base import Exchange
from trading_platform.exchanges.registry import EXCHANGES
from trading_platform.settings import load_settings

MESSAGES = 100_000  # per exchange; 20 ticks of 5,000 frames
ROUNDS = 5
# Each exchange's trade frames: (most trades one frame carries, the frame builder). Binance's cryptofeed
# subscribes to @aggTrade instead (below).
TRADE_FRAMES: dict[str, tuple[int, Callable[[frames.Ticks, frames.Native], list[bytes]]]] = {
    "binance": (1, frames.binance_trades), "coinbase": (4, frames.coinbase_trades),
    "kraken": (4, frames.kraken_trades)}


def run(quick: bool) -> list[Figure]:
    settings = load_settings()
    configs = load_exchanges(settings.exchanges_file).exchanges
    messages, rounds = (20_000, 2) if quick else (MESSAGES, ROUNDS)
    out: list[Figure] = []
    for name, (most_per_frame, make_frames) in TRADE_FRAMES.items():
        ticks = frames.trade_ticks(list(configs[name].symbols), messages, most_per_frame)
        out += _exchange(name, configs[name], ticks, make_frames, rounds, settings.spike_threshold)
    return out


def _exchange(name: str, config: ExchangeConfig, ticks: frames.Ticks,
              make_frames: Callable[[frames.Ticks, frames.Native], list[bytes]], rounds: int,
              spike_threshold: float) -> list[Figure]:
    exchange_class = EXCHANGES[name]
    native = exchange_class.native_symbol
    wire = make_frames(ticks, native)
    messages = len(wire)
    trades = sum(len(t) for _, t in ticks)

    def every_trade_a_row(_: Exchange, rows: int) -> None:
        assert rows == trades, f"{name}: {rows} rows of {trades} trades"

    def new_exchange() -> Exchange:
        return exchange_class(config)

    contenders: dict[str, Run] = {
        **bare_decoders(wire),
        "platform": platform(new_exchange, spike_threshold, wire, None, every_trade_a_row),
    }
    detail: dict[str, object] = {"frames": messages, "trades": trades, "rounds": rounds}
    # cryptofeed's Binance subscribes to @aggTrade and reads its "a" (an @trade frame is an unexpected message
    # to it): it parses the same trades as @aggTrade frames, and the ratio is taken against the platform
    # decoding those very frames too.
    theirs_wire = frames.binance_trades(ticks, native, aggregated=True) if name == "binance" else wire
    if theirs_wire is not wire:
        contenders["platform @aggTrade"] = platform(new_exchange, spike_threshold, theirs_wire, None,
                                                    every_trade_a_row)
        detail["cryptofeed_frames"] = "the same trades as @aggTrade frames (its trade channel)"
    theirs = cryptofeed(name, "trades", {s: native(s) for s in config.symbols}, theirs_wire)
    if not isinstance(theirs, str):
        contenders["cryptofeed"] = theirs[0]
    rates = alternate(contenders, messages, rounds)
    if not isinstance(theirs, str):
        assert theirs[1]() == trades, f"cryptofeed {name}: {theirs[1]()} trade callbacks of {trades}"
    section = f"{name} trades"
    versus_bare = paired_ratio(rates["platform"], rates["bare orjson"], rates["bare msgspec"])
    ours = "platform @aggTrade" if "platform @aggTrade" in rates else "platform"
    return [
        *figures(section, rates, "msgs/s", ours, theirs if isinstance(theirs, str) else None, 3, detail),
        at_least(section, "platform / fastest bare decode", versus_bare.median, "x", 0.5,
                 {**detail, "ratio_per_round": asdict(versus_bare)}),
    ]
