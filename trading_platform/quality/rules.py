"""Vectorized data-quality rules for trades, shared by the ingestion run and the asset checks.

A rejected row keeps its frame index so the quarantine can store the raw frame it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
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
    """Reject non-positive or non-finite prices/quantities and price spikes; update ``reference``.

    The checks run in numpy on the price and quantity columns, and the accepted rows are the input table
    filtered (not copied when nothing is rejected): polars only formats the rare rejected rows' details. A
    trade's spike reference is the median of the up to ``SPIKE_WINDOW`` sane prices before it of its symbol,
    the carried ``reference`` first."""
    prices = _float64(trades.column("price"))
    quantities = _float64(trades.column("quantity"))
    with np.errstate(invalid="ignore"):
        bad_price = ~np.isfinite(prices) | (prices <= 0)
        bad_quantity = ~np.isfinite(quantities) | (quantities <= 0)
    rejected = [_EMPTY_REJECTS]
    is_bad = bad_price | bad_quantity
    sane = trades
    if is_bad.any():
        rejected.append(_details(trades.filter(pa.array(is_bad))).select(
            "frame_index",
            reason=pl.when(_BAD_PRICE).then(pl.lit("bad_price")).otherwise(pl.lit("bad_quantity")),
            detail=pl.format("{} price={} quantity={}", "symbol", "price", "quantity"),
        ))
        sane = trades.filter(pa.array(~is_bad))
        prices = prices[~is_bad]
    # Only sane rows feed the spike reference; the carried context is the tail of earlier batches.
    batch_codes, names = _symbol_codes(sane)
    code_of = {name: code for code, name in names.items()}
    next_code = max(names, default=-1) + 1
    for name in reference.recent:  # symbols of earlier batches only
        if name not in code_of:
            code_of[name] = next_code
            next_code += 1
    names = {code: name for name, code in code_of.items()}
    context_codes = [code_of[s] for s, recent in reference.recent.items() for _ in recent]
    context_prices = [p for recent in reference.recent.values() for p in recent]
    history = np.concatenate([np.array(context_prices, np.float64), prices])
    # Each symbol's rows together, in their order (the context first): a row's window is the rows before it
    # in its run.
    # Codes in the narrowest integer type: numpy's stable sort of 8/16-bit integers is a radix sort, ten times
    # faster than the merge sort it uses for wider ones.
    all_codes = np.concatenate([np.array(context_codes, np.int64), batch_codes]).astype(np.min_scalar_type(next_code))
    order = np.argsort(all_codes, kind="stable")
    codes = all_codes[order]
    ordered = history[order]
    run_starts = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    if len(codes):
        run_starts = np.concatenate([np.zeros(1, run_starts.dtype), run_starts])
    medians = np.empty(len(history))
    # The context rows' own medians are never read: only the batch's rows are judged.
    medians[order] = _previous_median(ordered, run_starts, order >= len(context_prices))
    reference_prices = medians[len(context_prices):]
    with np.errstate(invalid="ignore"):
        spike = np.abs(prices / reference_prices - 1) > spike_threshold  # no reference (NaN): no spike
    if spike.any():
        rejected.append(_details(sane.filter(pa.array(spike))).with_columns(
            reference=pl.Series(reference_prices[spike])).select(
            "frame_index",
            reason=pl.lit("price_spike"),
            detail=pl.format("{} price={} quantity={} reference={}", "symbol", "price", "quantity", "reference"),
        ))
    # The carried reference holds the last sane prices (spikes included), exactly what the medians saw, so
    # validating a batch in one go or tick by tick gives the same answer; WAL recovery relies on that to
    # rewrite a half-flushed batch identically.
    if len(codes):
        for run_start, run_end in zip(run_starts.tolist(), [*run_starts[1:].tolist(), len(codes)], strict=True):
            reference.recent[names[codes[run_start]]] = ordered[max(run_start, run_end - SPIKE_WINDOW):run_end].tolist()
    accepted = sane.filter(pa.array(~spike)) if spike.any() else sane
    return Validated(accepted, pl.concat(rejected))


def _symbol_codes(trades: pa.Table) -> tuple[np.ndarray, dict[int, str]]:
    """The decoder's ``symbol_code`` of each row (its symbol's position in the exchange's list, mapped once where
    the rows were built, so not hashed again from the text here), and the symbol of each code present."""
    codes = np.asarray(trades.column("symbol_code").to_numpy(), np.int64)
    if not len(codes):
        return codes, {}
    some_row = np.zeros(int(codes.max()) + 1, np.int64)
    some_row[codes] = np.arange(len(codes))  # any row of each code will do: they all carry the same symbol
    present = np.flatnonzero(np.bincount(codes))
    symbols = trades.column("symbol").take(pa.array(some_row[present])).to_pylist()
    return codes, dict(zip(present.tolist(), symbols, strict=True))


def _float64(column: pa.ChunkedArray) -> np.ndarray:
    """A float64 column as numpy (a null becomes NaN: not a usable number)."""
    return np.asarray(column.to_numpy(), np.float64)


def _details(rows: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(rows.select(["symbol", "price", "quantity", "frame_index"]))
    assert isinstance(frame, pl.DataFrame)
    return frame


def _previous_median(prices: np.ndarray, run_starts: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """For each ``wanted`` row of runs (one symbol each, starting at ``run_starts``): the median of the up to
    SPIKE_WINDOW prices before it in its run (NaN for a run's first row); the other rows' values are undefined.

    Nearly every row has a full window of finite prices, whose median is its middle value: picked with a
    min/max selection network over the five lagged price columns (a few numpy passes, no sort; the network is
    the one for SPIKE_WINDOW = 5). The rows near a run's start (a shorter window) go through
    :func:`_window_median`, which also takes every row when a price is not finite (the network would not
    skip it)."""
    rows = len(prices)
    row_numbers = np.arange(rows)
    start_of_row = np.zeros(rows, row_numbers.dtype)
    start_of_row[run_starts] = run_starts
    position = row_numbers - np.maximum.accumulate(start_of_row)  # within the run
    if not np.isfinite(prices).all():
        return _window_median(prices, row_numbers, position)
    medians = np.empty(rows)
    if rows > SPIKE_WINDOW:
        # Row i's window is prices[i-5..i-1]; the rows before their run's sixth are overwritten below.
        a, b, c, d, e = (prices[SPIKE_WINDOW - back:rows - back] for back in range(1, SPIKE_WINDOW + 1))
        low = np.maximum(np.minimum(a, b), np.minimum(c, d))  # neither the least nor the greatest of a-d
        high = np.minimum(np.maximum(a, b), np.maximum(c, d))
        medians[SPIKE_WINDOW:] = np.maximum(np.minimum(e, low), np.minimum(np.maximum(e, low), high))
    # Steady state, the short windows are those of the carried context (each symbol's first rows), not wanted.
    short = np.flatnonzero((position < SPIKE_WINDOW) & wanted)
    if short.size:
        medians[short] = _window_median(prices, short, position[short])
    return medians


def _window_median(prices: np.ndarray, rows: np.ndarray, position: np.ndarray) -> np.ndarray:
    """The previous-prices median of ``rows`` (``position``: each one's place in its run), however short their
    window or whatever it holds: the windows as a (rows, SPIKE_WINDOW) matrix (NaN outside the run, and a NaN
    price is no price), sorted row-wise in numpy."""
    window = np.full((len(rows), SPIKE_WINDOW), np.nan)
    for back in range(1, SPIKE_WINDOW + 1):
        earlier = np.take(prices, rows - back, mode="clip")  # before the first row: clipped, then masked
        window[:, back - 1] = np.where(position >= back, earlier, np.nan)
    window.sort(axis=1)  # NaN sorts last
    count = SPIKE_WINDOW - np.isnan(window).sum(axis=1)
    low = np.maximum(count - 1, 0) // 2
    high = count // 2 - (count == 0)
    lower = np.take_along_axis(window, low[:, None], axis=1)[:, 0]
    upper = np.take_along_axis(window, np.maximum(high, 0)[:, None], axis=1)[:, 0]
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, lower + (upper - lower) * 0.5, np.nan)  # as polars interpolates


_BAD_PRICE = ~pl.col("price").is_finite() | (pl.col("price") <= 0)
_EMPTY_REJECTS = pl.DataFrame(schema={"frame_index": pl.Int64, "reason": pl.String, "detail": pl.String})
