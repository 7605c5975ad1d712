"""The open 1-minute candle of each symbol, kept by the ingestion run from the trades of each hot tick.

Per tick, each symbol's trades of its newest minute are aggregated in one polars pass and merged into the
symbol's open candle (a newer minute replaces it, an older minute's trades - late ones - are left to the
candles computed from ClickHouse). Open and close follow the same order as ``analytics.candles``: by exchange
time, then by trade id (shorter ids first, so numeric ids compare as numbers).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import polars as pl
import pyarrow as pa

from trading_platform.storage.redis_cache import CachedCandle

MINUTE_US = 60_000_000
OrderKey = tuple[int, int, str]  # (trade time µs, id length, id)


@dataclass(frozen=True)
class _Open:
    candle: CachedCandle
    first: OrderKey
    last: OrderKey


class OpenCandles:
    def __init__(self, exchange: str) -> None:
        self.exchange = exchange
        self._open: dict[str, _Open] = {}

    def add(self, trades: pa.Table) -> None:
        """Fold one tick's trades (symbol, price, quantity, side, trade_id, timestamp) into the open candles."""
        if not trades.num_rows:
            return
        frame = pl.from_arrow(trades.select(["symbol", "price", "quantity", "side", "trade_id", "timestamp"]))
        assert isinstance(frame, pl.DataFrame)
        frame = frame.with_columns(
            pl.col("timestamp").dt.epoch("us").alias("time_us"), pl.col("trade_id").str.len_bytes().alias("id_len"),
        ).with_columns((pl.col("time_us") // MINUTE_US * MINUTE_US).alias("bucket_us"))
        newest = frame.filter(pl.col("bucket_us") == pl.col("bucket_us").max().over("symbol"))
        ordered = newest.sort("time_us", "id_len", "trade_id")
        ticks = ordered.group_by("symbol", maintain_order=True).agg(
            pl.col("bucket_us").first(), pl.col("price").first().alias("open"), pl.col("price").max().alias("high"),
            pl.col("price").min().alias("low"), pl.col("price").last().alias("close"),
            pl.col("quantity").sum().alias("volume"), (pl.col("price") * pl.col("quantity")).sum().alias("quote"),
            pl.len().alias("trades"),
            pl.col("quantity").filter(pl.col("side") == "buy").sum().alias("buy"),
            pl.col("quantity").filter(pl.col("side") == "sell").sum().alias("sell"),
            pl.struct("time_us", "id_len", "trade_id").first().alias("first"),
            pl.struct("time_us", "id_len", "trade_id").last().alias("last"),
        )
        for row in ticks.iter_rows(named=True):  # one row per symbol
            first = (row["first"]["time_us"], row["first"]["id_len"], row["first"]["trade_id"])
            last = (row["last"]["time_us"], row["last"]["id_len"], row["last"]["trade_id"])
            tick = _Open(CachedCandle("1m", self.exchange, row["symbol"], row["bucket_us"], row["open"], row["high"],
                                      row["low"], row["close"], row["volume"], row["quote"], row["trades"],
                                      row["buy"], row["sell"]), first, last)
            self._open[row["symbol"]] = _merge(self._open.get(row["symbol"]), tick)

    def candles(self) -> list[CachedCandle]:
        return [entry.candle for entry in self._open.values()]


def _merge(current: _Open | None, tick: _Open) -> _Open:
    if current is None or tick.candle.bucket_us > current.candle.bucket_us:
        return tick
    if tick.candle.bucket_us < current.candle.bucket_us:
        return current  # late trades of a closed minute: ClickHouse's candles count them
    a, b = current.candle, tick.candle
    first, opened = (current.first, a.open) if current.first <= tick.first else (tick.first, b.open)
    last, closed = (current.last, a.close) if current.last >= tick.last else (tick.last, b.close)
    merged = replace(a, open=opened, high=max(a.high, b.high), low=min(a.low, b.low), close=closed,
                     volume=a.volume + b.volume, quote_volume=a.quote_volume + b.quote_volume,
                     trade_count=a.trade_count + b.trade_count, buy_volume=a.buy_volume + b.buy_volume,
                     sell_volume=a.sell_volume + b.sell_volume)
    return _Open(merged, first, last)
