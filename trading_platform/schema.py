"""Table layouts, defined once: Arrow schemas (Parquet lake and loads), ClickHouse DDL and lake paths.

Every exchange normalizes into these columns, the lake writes them, ClickHouse is created from them and
the quality rules check against them, so a column added here reaches all four.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from functools import cached_property

import pyarrow as pa

from trading_platform.sql import qualified_name, quote_identifier, quote_string

DATABASE = "trading"
UTC_MICROS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Column:
    name: str
    arrow_type: pa.DataType
    clickhouse_type: str
    description: str


@dataclass(frozen=True, eq=False)  # identity equality: each table is one module-level object
class Table:
    name: str
    dataset: str  # folder name in the lake: raw/{dataset}/...
    columns: tuple[Column, ...]
    order_by: tuple[str, ...]
    partition_by: str
    ttl: str | None
    lake_partitions: tuple[str, ...] = ("exchange", "symbol", "date")
    time_column: str = "timestamp"  # the lake's date partition and the reconciliation's day come from it
    description: str = ""
    engine_settings: dict[str, str] = field(default_factory=dict)

    @property
    def qualified_name(self) -> str:
        """``trading.name`` as people read it (logs, metadata, the adapters' ``insert_arrow``)."""
        return f"{DATABASE}.{self.name}"

    @property
    def sql_name(self) -> str:
        """The qualified name quoted for a SQL statement: every statement names its table through this."""
        return qualified_name(DATABASE, self.name)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @cached_property  # built once: loads compare every file's schema with it
    def arrow_schema(self) -> pa.Schema:
        return pa.schema(
            [pa.field(c.name, c.arrow_type, nullable=False, metadata={"description": c.description})
             for c in self.columns]
        )

    def ddl(self) -> str:
        columns = ",\n    ".join(
            f"{quote_identifier(c.name)} {c.clickhouse_type} COMMENT {quote_string(c.description)}"
            for c in self.columns
        )
        settings = ", ".join(f"{k} = {v}" for k, v in self.engine_settings.items())
        ttl = f"\nTTL {self.ttl}" if self.ttl else ""
        return (
            f"CREATE TABLE IF NOT EXISTS {self.sql_name}\n(\n    {columns}\n)\n"
            f"ENGINE = MergeTree\nPARTITION BY {self.partition_by}\n"
            f"ORDER BY ({', '.join(self.order_by)}){ttl}"
            + (f"\nSETTINGS {settings}" if settings else "")
            + f"\nCOMMENT {quote_string(self.description)}"
        )

    def lake_prefix(self, exchange: str | None = None, symbol: str | None = None,
                    day: date | None = None) -> str:
        """Key prefix of a Hive-style partition; stops at the first partition key not given."""
        parts = ["raw", self.dataset]
        values = {"exchange": exchange, "symbol": symbol, "date": day.isoformat() if day else None}
        for key in self.lake_partitions:
            if values[key] is None:
                break
            parts.append(f"{key}={values[key]}")
        return "/".join(parts) + "/"

    def lake_key(self, batch_id: str, exchange: str, day: date, symbol: str | None = None) -> str:
        return f"{self.lake_prefix(exchange, symbol, day)}{batch_id}.parquet"


# Parquet key-value metadata on every lake file the platform writes: how many files of its dataset the
# batch wrote. The loader loads a batch only when it sees all of them, as one insert.
BATCH_FILES_METADATA = b"trading_platform.batch_files"

# Dedup by insert token on a plain MergeTree needs a non-zero window (replicated tables have one).
_DEDUP = {"non_replicated_deduplication_window": "100000"}

# Columns several tables share, declared once.
_EXCHANGE = Column("exchange", pa.string(), "LowCardinality(String)", "exchange name")
_SYMBOL = Column("symbol", pa.string(), "LowCardinality(String)", "normalized BASE-QUOTE symbol")
_NATIVE_SYMBOL = Column("native_symbol", pa.string(), "LowCardinality(String)", "the exchange spelling")
_BATCH_ID = Column("batch_id", pa.string(), "String", "lake batch that carried the row")

MARKET_TRADES = Table(
    name="market_trades",
    dataset="trades",
    description="Normalized trades of every exchange, one row per exchange trade",
    columns=(
        Column("exchange", pa.string(), "LowCardinality(String)", "exchange name, e.g. binance"),
        _SYMBOL,
        _NATIVE_SYMBOL,
        Column("trade_id", pa.string(), "String", "exchange trade id"),
        Column("price", pa.float64(), "Float64", "trade price in quote currency"),
        Column("quantity", pa.float64(), "Float64", "trade size in base currency"),
        Column("side", pa.string(), "LowCardinality(String)", "taker side: buy or sell"),
        Column("timestamp", UTC_MICROS, "DateTime64(6, 'UTC')", "exchange trade time"),
        Column("received_at", UTC_MICROS, "DateTime64(6, 'UTC')", "time the platform received it"),
        _BATCH_ID,
    ),
    order_by=("exchange", "symbol", "timestamp"),
    partition_by="toYYYYMM(timestamp)",
    ttl="toDateTime(timestamp) + INTERVAL 90 DAY",
    engine_settings=_DEDUP,
)

QUARANTINE = Table(
    name="quarantine",
    dataset="quarantine",
    description="Frames or rows rejected by parsing or validation, with the raw text",
    columns=(
        _EXCHANGE,
        Column("received_at", UTC_MICROS, "DateTime64(6, 'UTC')", "time the platform received it"),
        Column("reason", pa.string(), "LowCardinality(String)", "rule that rejected it"),
        Column("detail", pa.string(), "String", "human-readable explanation"),
        Column("raw", pa.string(), "String", "the frame exactly as received"),
        _BATCH_ID,
    ),
    order_by=("exchange", "received_at"),
    partition_by="toYYYYMM(received_at)",
    ttl="toDateTime(received_at) + INTERVAL 90 DAY",
    lake_partitions=("exchange", "date"),
    time_column="received_at",
)

BOOK_LEVELS = pa.list_(pa.struct([("price", pa.float64()), ("quantity", pa.float64())]))

ORDERBOOK_SNAPSHOTS = Table(
    name="orderbook_snapshots",
    dataset="orderbook",
    description="Top-N levels of each maintained order book at a fixed cadence; never emitted out of sync",
    columns=(
        _EXCHANGE,
        _SYMBOL,
        _NATIVE_SYMBOL,
        Column("timestamp", UTC_MICROS, "DateTime64(6, 'UTC')", "exchange time of the last applied update"),
        Column("received_at", UTC_MICROS, "DateTime64(6, 'UTC')", "time the platform received that update"),
        Column("sequence", pa.int64(), "Int64", "exchange update id / sequence of the book state (0 if none)"),
        Column("bids", BOOK_LEVELS, "Array(Tuple(Float64, Float64))", "[(price, qty)] best first"),
        Column("asks", BOOK_LEVELS, "Array(Tuple(Float64, Float64))", "[(price, qty)] best first"),
        _BATCH_ID,
    ),
    order_by=("exchange", "symbol", "timestamp"),
    partition_by="toYYYYMM(timestamp)",
    ttl="toDateTime(timestamp) + INTERVAL 30 DAY",
    engine_settings=_DEDUP,
)

BOOK_EVENTS = Table(
    name="book_events",
    dataset="book_events",
    description="Order-book integrity events: sequence gaps, checksum mismatches, resyncs",
    columns=(
        _EXCHANGE,
        _SYMBOL,
        Column("timestamp", UTC_MICROS, "DateTime64(6, 'UTC')", "time the platform detected it"),
        Column("kind", pa.string(), "LowCardinality(String)", "sequence_gap, checksum_mismatch, resync, ..."),
        Column("detail", pa.string(), "String", "expected vs got, ids involved"),
        _BATCH_ID,
    ),
    order_by=("exchange", "symbol", "timestamp"),
    partition_by="toYYYYMM(timestamp)",
    ttl="toDateTime(timestamp) + INTERVAL 90 DAY",
    engine_settings=_DEDUP,
)

LOAD_MANIFEST = Table(
    name="load_manifest",
    dataset="",
    description="One row per lake file loaded into ClickHouse",
    columns=(
        Column("table_name", pa.string(), "LowCardinality(String)", "target table"),
        Column("lake_key", pa.string(), "String", "object key of the Parquet file"),
        Column("batch_id", pa.string(), "String", "lake batch (one flush) the file belongs to"),
        Column("rows", pa.uint64(), "UInt64", "rows inserted"),
        Column("checksum", pa.string(), "String", "content checksum of the loaded rows"),
        Column("loaded_at", UTC_MICROS, "DateTime64(6, 'UTC')", "load time"),
    ),
    order_by=("table_name", "lake_key"),
    partition_by="tuple()",
    ttl=None,
    time_column="loaded_at",
)

# A load inserts many lake batches at once; before each such insert it claims the table's next epoch here
# with one row naming the group's files. The claim's insert carries the token "<table>:<epoch>", so of two
# loaders claiming the same epoch ClickHouse keeps the first row only (hence the dedup window), and a load
# after a crash re-sends exactly the recorded group under the recorded token.
LOAD_INTENTS = Table(
    name="load_intents",
    dataset="",
    description="One row per grouped lake -> ClickHouse insert, written before the insert",
    columns=(
        Column("table_name", pa.string(), "LowCardinality(String)", "target table"),
        Column("epoch", pa.uint64(), "UInt64", "the table's load epoch this group claimed (1, 2, ...)"),
        Column("token", pa.string(), "String", "insert_deduplication_token of the group's insert"),
        Column("lake_keys", pa.list_(pa.string()), "Array(String)", "object keys of the group's Parquet files"),
        Column("created_at", UTC_MICROS, "DateTime64(6, 'UTC')", "claim time"),
    ),
    order_by=("table_name", "epoch"),
    partition_by="tuple()",
    ttl=None,
    time_column="created_at",
    engine_settings=_DEDUP,
)



def _per_day(name: str, description: str, keys: tuple[Column, ...], values: tuple[Column, ...]) -> Table:
    """An analytics table: rows keyed by ``keys`` (the last one the interval start, ``bucket``), one
    partition per UTC day, so recomputing a day replaces its partition in one step."""
    return Table(name=name, dataset="", description=description, columns=(*keys, *values),
                 order_by=tuple(c.name for c in keys), partition_by="toDate(bucket)", ttl=None, time_column="bucket")


def _symbol_keys(what: str) -> tuple[Column, ...]:
    return (_EXCHANGE, _SYMBOL, Column("bucket", UTC_MICROS, "DateTime64(6, 'UTC')", f"start of the {what} (UTC)"))


def _candles(interval: str, description: str) -> Table:
    """OHLCV of one interval. Every interval has the same columns, so a coarser one aggregates a finer one."""
    return _per_day(f"candles_{interval}", description, _symbol_keys(f"{interval} interval"), (
        Column("open", pa.float64(), "Float64", "price of the interval's first trade"),
        Column("high", pa.float64(), "Float64", "highest trade price"),
        Column("low", pa.float64(), "Float64", "lowest trade price"),
        Column("close", pa.float64(), "Float64", "price of the interval's last trade"),
        Column("volume", pa.float64(), "Float64", "traded quantity in base currency"),
        Column("quote_volume", pa.float64(), "Float64", "sum of price x quantity, in quote currency"),
        Column("vwap", pa.float64(), "Float64", "volume-weighted average price: quote_volume / volume"),
        Column("trade_count", pa.uint64(), "UInt64", "number of trades"),
        Column("buy_volume", pa.float64(), "Float64", "volume of trades whose taker bought"),
        Column("sell_volume", pa.float64(), "Float64", "volume of trades whose taker sold"),
    ))


CANDLES_1M = _candles("1m", "1-minute OHLCV, VWAP and aggressor volumes per exchange and symbol, from trades")
CANDLES_5M = _candles("5m", "5-minute candles, aggregated from trading.candles_1m")
CANDLES_1H = _candles("1h", "1-hour candles, aggregated from trading.candles_1m")
CANDLES_1D = _candles("1d", "1-day (UTC) candles, aggregated from trading.candles_1m")
CANDLE_TABLES = (CANDLES_1M, CANDLES_5M, CANDLES_1H, CANDLES_1D)


def _indicators(interval: str) -> Table:
    """Indicators over the ``interval`` candles of one exchange and symbol. The windows count candles (an
    interval without trades has none); NaN where the window is not full yet."""
    return _per_day(
        f"indicators_{interval}",
        f"SMA, EMA, RSI, Bollinger bands and realized volatility over trading.candles_{interval}",
        _symbol_keys(f"{interval} candle"), (
            Column("close", pa.float64(), "Float64", "the candle's close"),
            Column("sma_20", pa.float64(), "Float64", "mean close of the last 20 candles"),
            Column("ema_20", pa.float64(), "Float64", "exponential mean of closes, alpha 2/21, from the warm-up"),
            Column("rsi_14", pa.float64(), "Float64", "relative strength index, Wilder's smoothing over 14"),
            Column("bollinger_upper", pa.float64(), "Float64", "sma_20 + 2 standard deviations of the 20 closes"),
            Column("bollinger_lower", pa.float64(), "Float64", "sma_20 - 2 standard deviations of the 20 closes"),
            Column("realized_volatility_60", pa.float64(), "Float64",
                   "standard deviation of the last 60 log returns close to close (not annualized)"),
        ))


INDICATORS_1M = _indicators("1m")
INDICATORS_1H = _indicators("1h")

COMPOSITE_1M = _per_day(
    "composite_1m",
    "Volume-weighted price per base currency, quote group (exchanges.yaml composite_quotes) and minute across "
    "exchanges, from trading.candles_1m",
    (Column("base", pa.string(), "LowCardinality(String)", "base currency, e.g. BTC"),
     Column("quote", pa.string(), "LowCardinality(String)", "quote group (a quote currency or a named group)"),
     Column("bucket", UTC_MICROS, "DateTime64(6, 'UTC')", "start of the minute (UTC)")),
    (Column("price", pa.float64(), "Float64", "sum of price x quantity over every exchange / total volume"),
     Column("volume", pa.float64(), "Float64", "traded quantity in base currency, all exchanges"),
     Column("trade_count", pa.uint64(), "UInt64", "number of trades, all exchanges"),
     Column("sources", pa.list_(pa.string()), "Array(String)", "exchange:symbol pairs that traded, sorted")),
)

LAKE_TABLES = (MARKET_TRADES, ORDERBOOK_SNAPSHOTS, BOOK_EVENTS, QUARANTINE)
ALL_TABLES = (*LAKE_TABLES, LOAD_MANIFEST, LOAD_INTENTS, *CANDLE_TABLES, COMPOSITE_1M, INDICATORS_1M, INDICATORS_1H)


def lake_table(dataset: str) -> Table:
    return next(t for t in LAKE_TABLES if t.dataset == dataset)
