"""Binance trade hot path (decode + normalize + validate into Arrow columns) vs a bare JSON decode.

Writes benchmarks/results.json. One process, one core; each figure is the best of several rounds.
"""

from __future__ import annotations

import json
import platform
import random
import sys
import time
from pathlib import Path

import msgspec
import orjson

from trading_platform.config import load_exchanges
from trading_platform.exchanges.binance import Binance
from trading_platform.ingestion.normalize import TradeNormalizer
from trading_platform.settings import load_settings

RESULTS = Path(__file__).resolve().parent / "results.json"
MESSAGES = 200_000
TICK_BATCH = 5_000  # frames decoded per tick: ~1 s of a busy exchange
ROUNDS = 5


def make_frames(exchange: Binance, count: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    prices = {s: rng.uniform(0.1, 90_000) for s in exchange.symbols}
    next_id = {s: rng.randrange(1_000_000, 9_000_000) for s in exchange.symbols}  # consecutive per symbol
    now_ms = int(time.time() * 1000)
    frames = []
    for i in range(count):
        symbol = rng.choice(exchange.symbols)
        prices[symbol] *= 1 + rng.gauss(0, 0.0005)
        native = exchange.native_symbol(symbol)
        next_id[symbol] += 1
        frames.append(orjson.dumps({
            "stream": f"{native.lower()}@trade",
            "data": {"e": "trade", "E": now_ms + i, "s": native, "t": next_id[symbol], "p": f"{prices[symbol]:.8f}",
                     "q": f"{0.00001 + rng.expovariate(1.0):.5f}", "T": now_ms + i, "m": rng.random() < 0.5, "M": True},
        }))
    return frames


def best_rate(func, count: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - started)
    return count / best


def main() -> None:
    settings = load_settings()
    exchange = Binance(load_exchanges(settings.exchanges_file).exchanges["binance"])
    frames = make_frames(exchange, MESSAGES)
    received = [time.time_ns() // 1000] * len(frames)
    batches = [(frames[i:i + TICK_BATCH], received[i:i + TICK_BATCH]) for i in range(0, len(frames), TICK_BATCH)]

    def bare_orjson() -> None:
        for frame in frames:
            orjson.loads(frame)

    def bare_msgspec() -> None:
        decode = msgspec.json.decode
        for frame in frames:
            decode(frame)

    def platform_path() -> None:
        normalizer = TradeNormalizer(exchange, settings.spike_threshold)
        rows = 0
        for batch, times in batches:
            rows += normalizer.process(batch, times).trades.num_rows
        assert rows == len(frames), rows

    results = {
        "benchmark": "binance_trade_hot_path",
        "messages": MESSAGES,
        "tick_batch": TICK_BATCH,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "bare_orjson_msgs_per_s": round(best_rate(bare_orjson, MESSAGES)),
        "bare_msgspec_msgs_per_s": round(best_rate(bare_msgspec, MESSAGES)),
        "platform_decode_normalize_validate_msgs_per_s": round(best_rate(platform_path, MESSAGES)),
    }
    bare = max(results["bare_orjson_msgs_per_s"], results["bare_msgspec_msgs_per_s"])
    results["ratio_to_fastest_bare_decode"] = round(results["platform_decode_normalize_validate_msgs_per_s"] / bare, 3)
    results["target_ratio"] = 0.5
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
