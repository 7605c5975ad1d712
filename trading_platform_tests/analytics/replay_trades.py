"""What the analytics tests compute from: the replay market's executed trades as lake rows, and the
independent computation they are compared with (plain polars candles)."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pyarrow as pa

from trading_platform.replay.market import MarketSimulator, Trade
from trading_platform.schema import MARKET_TRADES


def market_trades_schema() -> pa.Schema:
    """The trade columns as ingestion hands them to the lake writer (which adds ``batch_id``)."""
    schema = MARKET_TRADES.arrow_schema
    return schema.remove(schema.get_field_index("batch_id"))


def trade_row(exchange: str, symbol: str, trade: Trade, id_offset: int = 0) -> dict[str, object]:
    """One executed trade as a lake row, received when it happened."""
    at = datetime.fromtimestamp(trade.time_ms / 1000, UTC)
    return {"exchange": exchange, "symbol": symbol, "native_symbol": symbol.replace("-", ""),
            "trade_id": str(trade.trade_id + id_offset), "price": trade.price, "quantity": trade.qty,
            "side": "sell" if trade.buyer_maker else "buy", "timestamp": at, "received_at": at}


def simulated_trades(exchange: str, symbols: list[str], rate_per_symbol: float, seed: int, start_ms: int,
                     end_ms: int, step_ms: int, id_offset: int = 0) -> list[dict[str, object]]:
    """Every trade the replay market executes between ``start_ms`` and ``end_ms``, advanced every ``step_ms``."""
    market = MarketSimulator(exchange, symbols, rate_per_symbol=rate_per_symbol, seed=seed, start_ms=start_ms)
    return [trade_row(exchange, spec.symbol, t, id_offset) for now_ms in range(start_ms + step_ms, end_ms, step_ms)
            for spec, trades in market.advance(now_ms) for t in trades]


def as_table(rows: list[dict[str, object]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=market_trades_schema())


def polars_candles(trades: pl.DataFrame, every: str) -> pl.DataFrame:
    """The independent computation: order by time then numeric id, group by the truncated time."""
    ordered = trades.with_columns(pl.col("trade_id").cast(pl.Int64).alias("id")).sort("timestamp", "id")
    return (
        ordered.group_by("exchange", "symbol", pl.col("timestamp").dt.truncate(every).alias("bucket"),
                         maintain_order=True)
        .agg(pl.col("price").first().alias("open"), pl.col("price").max().alias("high"),
             pl.col("price").min().alias("low"), pl.col("price").last().alias("close"),
             pl.col("quantity").sum().alias("volume"), (pl.col("price") * pl.col("quantity")).sum().alias("quote"),
             pl.len().alias("trade_count"),
             pl.col("quantity").filter(pl.col("side") == "buy").sum().alias("buy_volume"),
             pl.col("quantity").filter(pl.col("side") == "sell").sum().alias("sell_volume"))
        .with_columns((pl.col("quote") / pl.col("volume")).alias("vwap"))
        .sort("exchange", "symbol", "bucket")
    )
