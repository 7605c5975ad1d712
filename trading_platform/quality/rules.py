"""Vectorized data-quality rules for trades, shared by the ingestion run and the asset checks.

A rejected row keeps its frame index so the quarantine can store the raw frame it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

# Spike reference: median of this many previous prices of the same symbol. A median (not the last
# price) means one bad print is rejected but the normal trade after it is not.
SPIKE_WINDOW = 5


@dataclass
class SpikeReference:
    """The last sane prices per symbol, carried from one batch to the next."""

    recent: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, list[float]]:
        return {symbol: list(prices) for symbol, prices in self.recent.items()}

    @classmethod
    def from_json(cls, data: dict[str, list[float]] | None) -> SpikeReference:
        return cls({k: list(v) for k, v in (data or {}).items()})


@dataclass
class Validated:
    accepted: pa.Table
    rejected: pl.DataFrame  # frame_index, reason, detail


def validate_trades(trades: pa.Table, reference: SpikeReference, spike_threshold: float) -> Validated:
    """Reject non-positive or non-finite prices/quantities and price spikes; update ``reference``."""
    frame = pl.from_arrow(trades)
    assert isinstance(frame, pl.DataFrame)
    if frame.is_empty():
        return Validated(trades, pl.DataFrame(schema={"frame_index": pl.Int64, "reason": pl.String,
                                                      "detail": pl.String}))
    context = pl.DataFrame(
        {
            "symbol": [s for s, prices in reference.recent.items() for _ in prices],
            "price": [p for prices in reference.recent.values() for p in prices],
        },
        schema={"symbol": pl.String, "price": pl.Float64},
    )
    rows = frame.with_row_index("_row").with_columns(
        reason=pl.when(~pl.col("price").is_finite() | (pl.col("price") <= 0)).then(pl.lit("bad_price"))
        .when(~pl.col("quantity").is_finite() | (pl.col("quantity") <= 0)).then(pl.lit("bad_quantity"))
    )
    # Only rows with sane numbers feed the spike reference.
    sane = rows.filter(pl.col("reason").is_null()).select("_row", "symbol", "price")
    history = pl.concat([context.with_columns(_row=pl.lit(None, pl.UInt32)).select("_row", "symbol", "price"),
                         sane])
    history = history.with_columns(
        reference=pl.col("price").shift(1).rolling_median(SPIKE_WINDOW, min_samples=1).over("symbol")
    ).filter(pl.col("_row").is_not_null())
    rows = rows.join(history.select("_row", "reference"), on="_row", how="left").with_columns(
        reason=pl.when(pl.col("reason").is_not_null()).then(pl.col("reason"))
        .when((pl.col("price") / pl.col("reference") - 1).abs() > spike_threshold).then(pl.lit("price_spike"))
    )
    rejected = rows.filter(pl.col("reason").is_not_null()).select(
        "frame_index",
        "reason",
        detail=pl.format(
            "{} price={} quantity={} reference={}",
            "symbol", "price", "quantity", pl.col("reference").cast(pl.String).fill_null("none"),
        ),
    )
    accepted = rows.filter(pl.col("reason").is_null()).sort("_row").drop("_row", "reason", "reference")
    # The carried reference holds the last sane prices (spikes included), exactly what the rolling
    # median saw, so validating a batch in one go or tick by tick gives the same answer; WAL
    # recovery relies on that to rewrite a half-flushed batch identically.
    for symbol, prices in sane.group_by("symbol", maintain_order=True).agg(pl.col("price").tail(SPIKE_WINDOW)
                                                                          ).iter_rows():
        kept = reference.recent.get(symbol, []) + list(prices)
        reference.recent[symbol] = kept[-SPIKE_WINDOW:]
    return Validated(accepted.to_arrow().cast(trades.schema), rejected)
