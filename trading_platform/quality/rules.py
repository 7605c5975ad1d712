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
    price, quantity = pl.col("price"), pl.col("quantity")
    bad_price = ~price.is_finite() | (price <= 0)
    bad_quantity = ~quantity.is_finite() | (quantity <= 0)
    flags = frame.select(bad_price.alias("bad_price"), bad_quantity.alias("bad_quantity"))
    rejected = [_EMPTY_REJECTS]
    if flags.select(pl.any_horizontal(pl.all().any())).item():
        is_bad = flags.get_column("bad_price") | flags.get_column("bad_quantity")
        rejected.append(frame.filter(is_bad).select(
            "frame_index",
            reason=pl.when(bad_price).then(pl.lit("bad_price")).otherwise(pl.lit("bad_quantity")),
            detail=pl.format("{} price={} quantity={}", "symbol", "price", "quantity"),
        ))
        frame = frame.filter(~is_bad)
    # Only sane rows feed the spike reference; the carried context is the tail of earlier batches.
    context_rows = sum(len(prices) for prices in reference.recent.values())
    history = frame.select("symbol", "price")
    if context_rows:
        context = pl.DataFrame(
            {"symbol": [s for s, prices in reference.recent.items() for _ in prices],
             "price": [p for prices in reference.recent.values() for p in prices]},
            schema={"symbol": pl.String, "price": pl.Float64},
        )
        history = pl.concat([context, history])
    reference_prices = history.select(
        price.shift(1).rolling_median(SPIKE_WINDOW, min_samples=1).over("symbol")
    ).to_series().slice(context_rows)
    spike = ((frame.get_column("price") / reference_prices - 1).abs() > spike_threshold).fill_null(False)
    if spike.any():
        rejected.append(frame.filter(spike).with_columns(reference=reference_prices.filter(spike)).select(
            "frame_index",
            reason=pl.lit("price_spike"),
            detail=pl.format("{} price={} quantity={} reference={}", "symbol", "price", "quantity", "reference"),
        ))
    # The carried reference holds the last sane prices (spikes included), exactly what the rolling
    # median saw, so validating a batch in one go or tick by tick gives the same answer; WAL
    # recovery relies on that to rewrite a half-flushed batch identically.
    for symbol, prices in history.group_by("symbol").agg(price.tail(SPIKE_WINDOW)).iter_rows():
        reference.recent[symbol] = list(prices)
    accepted = frame.filter(~spike) if spike.any() else frame
    return Validated(accepted.to_arrow().cast(trades.schema), pl.concat(rejected))


_EMPTY_REJECTS = pl.DataFrame(schema={"frame_index": pl.Int64, "reason": pl.String, "detail": pl.String})
