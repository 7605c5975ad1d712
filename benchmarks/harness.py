"""What every benchmark section shares: alternating contenders, medians with min-max, figures with targets.

A section is a module in this folder with ``run(quick: bool) -> list[Figure]``. ``python -m benchmarks``
runs every section, prints one table (figure, value, target, holds) and writes ``benchmarks/results.json``.

Comparisons are only meaningful on the same messages in the same run: :func:`alternate` times the contenders
in turns, round after round, so a noisy neighbour slows all of them alike, and reports each one's median with
its min and max. A ratio between contenders is taken round by round (:func:`paired_ratio`: the two ran back to
back, under the same load) and reported as the median of those ratios with their min and max: on a host whose
speed drifts by tens of percent within a run, a ratio of two medians can pair a fast round of one contender with
a slow round of the other.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, TypeVar

from trading_platform.replay import ReplayServer

_Report = TypeVar("_Report")
DROPPED = "; dropping it"  # how the replay outbox ends what it logs when it drops a connection (outbox._drop)


@dataclass(frozen=True)
class Rate:
    """Items per second over the rounds of one contender (``rounds``: each round's, in the order they ran)."""

    median: float
    low: float
    high: float
    rounds: tuple[float, ...] = ()

    def text(self) -> str:
        return f"{_human(self.median)}/s ({_human(self.low)}-{_human(self.high)})"


@dataclass(frozen=True)
class Ratio:
    """One contender's rate over another's, per round: the median and the range over the rounds."""

    median: float
    low: float
    high: float


def paired_ratio(ours: Rate, *theirs: Rate) -> Ratio:
    """``ours`` over ``theirs`` round by round (several ``theirs``: the fastest of them in that round)."""
    ratios = [mine / max(others) for mine, *others in zip(ours.rounds, *(t.rounds for t in theirs), strict=True)]
    return Ratio(statistics.median(ratios), min(ratios), max(ratios))


@dataclass
class Figure:
    """One measured figure; ``target`` and ``holds`` say what we promise about it (None: informational)."""

    section: str
    name: str
    value: float
    unit: str
    target: str | None = None
    holds: bool | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def row(self) -> tuple[str, str, str, str]:
        value = f"{_human(self.value)} {self.unit}".strip()
        verdict = "" if self.holds is None else ("yes" if self.holds else "NO")
        return f"{self.section}: {self.name}", value, self.target or "", verdict


def alternate(contenders: dict[str, Callable[[], object]], items: int, rounds: int) -> dict[str, Rate]:
    """Time each contender ``rounds`` times, in turns; each call processes ``items`` items."""
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, func in contenders.items():
            started = time.perf_counter()
            func()
            seconds[name].append(time.perf_counter() - started)
    return {name: Rate(items / statistics.median(times), items / max(times), items / min(times),
                       tuple(items / t for t in times))
            for name, times in seconds.items()}


def at_least(section: str, name: str, value: float, unit: str, target: float, detail: dict[str, Any] | None = None,
             target_text: str | None = None) -> Figure:
    """A figure that must reach ``target``."""
    return Figure(section, name, value, unit, target_text or f">= {_human(target)} {unit}".strip(), value >= target,
                  detail or {})


def at_most(section: str, name: str, value: float, unit: str, target: float, detail: dict[str, Any] | None = None,
            target_text: str | None = None) -> Figure:
    """A figure that must stay at or below ``target``."""
    return Figure(section, name, value, unit, target_text or f"<= {_human(target)} {unit}".strip(), value <= target,
                  detail or {})


def table(figures: list[Figure]) -> str:
    rows = [("figure", "value", "target", "holds"), *(f.row() for f in figures)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def as_json(figures: list[Figure]) -> list[dict[str, Any]]:
    return [asdict(f) for f in figures]


def _human(value: float) -> str:
    if abs(value) >= 1e6:
        return f"{value / 1e6:.2f}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.0f}k"
    if abs(value) >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.3g}"


# --- measuring processes (the end-to-end and replay sections) -----------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads (``/proc/<pid>/stat`` utime, stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ConnectionDrops(logging.Handler):
    """Counts the connections the replay server dropped (it logs each one): a client that stopped reading (a slow
    consumer), or one the server itself fell too far behind on."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.drops = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.drops += DROPPED in record.getMessage()


@contextmanager
def spawned(target: Callable[..., None], *args: Any) -> Iterator[tuple[BaseProcess, Connection]]:
    """``target(pipe_end, *args)`` in a child with a fresh interpreter (its CPU and RSS are its own, none of
    this process's state), and this side of the pipe; the child is joined, or killed, when the block ends."""
    context = multiprocessing.get_context("spawn")
    conn, child_end = context.Pipe()
    process = context.Process(target=target, args=(child_end, *args), daemon=True)
    process.start()
    child_end.close()
    try:
        yield process, conn
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()


def stop_child(conn: Connection, timeout_s: float, report_type: type[_Report], what: str) -> _Report:
    """Tell a :func:`spawned` child to stop and take its report."""
    conn.send("stop")
    if not conn.poll(timeout_s):
        raise RuntimeError(f"{what} did not report within {timeout_s:g} s")
    report = conn.recv()
    assert isinstance(report, report_type)
    return report


def executed_trades(replay: ReplayServer, exchange: str) -> int:
    """Trades ``exchange``'s markets have executed so far, sent or not (the asked rate): trade ids step by one
    per symbol, so the next ids add up to a running count. Read without a trip through the server's loop (an
    int attribute read is atomic), which an overloaded server may not run for a while."""
    return sum(market.next_trade_id for market in replay.feeds[exchange].market.markets.values())
