"""Run every SQL query of the Grafana dashboards against the platform's real schema, offline.

    uv run python dashboards/check_queries.py

What it does: creates the `trading` tables in a temporary chdb database from
``trading_platform.schema`` (the same DDL the platform runs), inserts a few thousand synthetic rows,
computes the candles and composite prices from them with the platform's own analytics code,
expands the grafana-clickhouse-datasource macros the way the plugin's backend does
(``$__timeFilter(col)`` -> ``col >= toDateTime(<from>) AND col <= toDateTime(<to>)``,
``$__timeInterval(col)`` -> ``toStartOfInterval(toDateTime(col), INTERVAL <n> second)``, ...) and the
dashboard variables (``${exchange:singlequote}`` -> ``'a','b'``), then runs each panel and variable
query. It fails if a query errors, if a time series query does not start with a time column, if a
panel returns no rows for data that exists, or if a panel points at a datasource uid that
provisioning does not define. It also runs every query once with an empty `exchange` selection.

What it cannot tell: how Grafana renders the result (panel options, field overrides) -- that needs
a running Grafana with the plugin.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from chdb import session

from trading_platform.analytics.candles import recompute_day
from trading_platform.analytics.composite import recompute_composite_day
from trading_platform.config import load_exchanges
from trading_platform.schema import DATABASE
from trading_platform.settings import Settings
from trading_platform.storage.clickhouse import ChdbClickHouse, ensure_schema

HERE = Path(__file__).resolve().parent
DASHBOARDS = sorted((HERE / "json").glob("*.json"))
DATASOURCES = HERE / "provisioning" / "datasources" / "clickhouse.yaml"

RANGE_S = 6 * 3600  # dashboard default time range: now-6h .. now
INTERVAL_S = 30  # what Grafana would pass as $__interval for a ~1000 px wide panel
VARIABLES = {"exchange": ["binance", "coinbase"], "symbol": ["BTC-USDT"]}
TIME_TYPES = ("DateTime", "DateTime64", "Date", "Date32")

SYNTHETIC_DATA = [
    # 14,400 trades over the last 2 hours on two exchanges and three symbols.
    f"""
    INSERT INTO {DATABASE}.market_trades
    SELECT
        ['binance', 'coinbase'][1 + number % 2] AS exchange,
        ['BTC-USDT', 'ETH-USDT', 'SOL-USDT'][1 + intDiv(number, 2) % 3] AS symbol,
        replaceAll(symbol, '-', '') AS native_symbol,
        toString(number) AS trade_id,
        100 + (number % 97) / 10 AS price,
        0.01 * (1 + number % 5) AS quantity,
        if(number % 2 = 0, 'buy', 'sell') AS side,
        now64(6, 'UTC') - toIntervalMillisecond(number * 500) AS timestamp,
        timestamp + toIntervalMillisecond(5 + number % 50) AS received_at,
        concat('batch-', toString(intDiv(number, 1000))) AS batch_id
    FROM numbers(14400)
    """,
    f"""
    INSERT INTO {DATABASE}.quarantine
    SELECT
        ['binance', 'coinbase'][1 + number % 2] AS exchange,
        now64(6, 'UTC') - toIntervalSecond(number * 60) AS received_at,
        ['price_spike', 'schema', 'duplicate'][1 + number % 3] AS reason,
        'synthetic rejection' AS detail,
        '{{"e":"trade","p":"-1"}}' AS raw,
        concat('batch-', toString(number)) AS batch_id
    FROM numbers(50)
    """,
    f"""
    INSERT INTO {DATABASE}.load_manifest
    SELECT
        'market_trades' AS table_name,
        concat('raw/trades/exchange=binance/symbol=S', toString(number % 6), '/date=2026-01-01/b',
               toString(intDiv(number, 6)), '.parquet') AS lake_key,
        concat('batch-', toString(intDiv(number, 6))) AS batch_id,
        toUInt64(100 + number) AS rows,
        hex(number) AS checksum,
        now64(6, 'UTC') - toIntervalSecond(intDiv(number, 6) * 30) AS loaded_at
    FROM numbers(90)
    """,
]


def expand_macros(sql: str, start: int, end: int, interval_s: int) -> str:
    """Mirror pkg/macros/macros.go of grafana-clickhouse-datasource (v4)."""

    def dt(ts: int) -> str:
        return f"toDateTime({ts})"

    def dt64(ts: int) -> str:
        return f"fromUnixTimestamp64Milli({ts * 1000})"

    functions = {
        "timeFilter": lambda c: f"{c} >= {dt(start)} AND {c} <= {dt(end)}",
        "timeFilter_ms": lambda c: f"{c} >= {dt64(start)} AND {c} <= {dt64(end)}",
        "timeInterval": lambda c: f"toStartOfInterval(toDateTime({c}), INTERVAL {interval_s} second)",
        "timeInterval_ms": lambda c: (
            f"toStartOfInterval(toDateTime64({c}, 3), INTERVAL {interval_s * 1000} millisecond)"
        ),
    }
    constants = {
        "fromTime": dt(start),
        "toTime": dt(end),
        "fromTime_ms": dt64(start),
        "toTime_ms": dt64(end),
        "interval_s": str(interval_s),
    }

    def call(match: re.Match[str]) -> str:
        name, arg = match.group(1), match.group(2).strip()
        if name not in functions:
            raise ValueError(f"macro $__{name}() is not one the plugin defines")
        return functions[name](arg)

    sql = re.sub(r"\$__(\w+)\(([^)]*)\)", call, sql)
    sql = re.sub(r"\$__(\w+)", lambda m: constants.get(m.group(1), m.group(0)), sql)
    if "$__" in sql:
        raise ValueError(f"unexpanded macro left in: {sql}")
    return sql


def expand_variables(sql: str, values: dict[str, list[str]]) -> str:
    def render(name: str, fmt: str | None) -> str:
        if name not in values:
            raise ValueError(f"query uses ${name}, which the dashboard does not define")
        chosen = values[name]
        if fmt == "singlequote":
            return ",".join("'" + v.replace("'", "\\'") + "'" for v in chosen)
        if fmt in (None, "raw"):
            return ",".join(chosen)
        raise ValueError(f"variable format {fmt!r} is not handled by this checker")

    sql = re.sub(r"\$\{(\w+)(?::(\w+))?\}", lambda m: render(m.group(1), m.group(2)), sql)
    return re.sub(r"\$(?!__)(\w+)", lambda m: render(m.group(1), None), sql)


def queries(dashboard: dict) -> list[tuple[str, str, dict, str]]:
    """(kind, title, datasource, sql) for every variable and panel query, rows included."""
    found = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            sql = var["query"] if isinstance(var["query"], str) else var["query"]["rawSql"]
            found.append(("variable", var["name"], var["datasource"], sql))
    stack = list(dashboard.get("panels", []))
    while stack:
        panel = stack.pop(0)
        stack.extend(panel.get("panels", []))
        for t in panel.get("targets", []):
            kind = panel["type"] + (" [time series]" if t.get("format") == 0 else "")
            found.append((kind, panel["title"], t.get("datasource") or panel["datasource"], t["rawSql"]))
    return found


def main() -> int:
    provisioned = {d["uid"]: d["type"] for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        with ChdbClickHouse(folder) as ch:
            ensure_schema(ch)
            for statement in SYNTHETIC_DATA:
                ch.command(statement)
            today = datetime.now(UTC).date()
            for day in (today - timedelta(days=1), today):  # the synthetic trades may start yesterday
                recompute_day(ch, day)
                recompute_composite_day(ch, day, load_exchanges(Settings().exchanges_file))
        db = session.Session(folder)
        end = int(time.time()) + 1
        start = end - RANGE_S
        for path in DASHBOARDS:
            dashboard = json.loads(path.read_text())
            names = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
            for kind, title, ds, raw in queries(dashboard):
                where = f"{path.name}: {kind} '{title}'"
                if provisioned.get(ds.get("uid")) != ds.get("type"):
                    failures.append(f"{where}: datasource {ds} is not provisioned in {DATASOURCES.name}")
                    continue
                try:
                    sql = expand_macros(expand_variables(raw, VARIABLES), start, end, INTERVAL_S)
                    result = json.loads(db.query(sql, "JSON").bytes() or b"{}")
                    empty_sel = expand_variables(raw, {**{n: [] for n in names}, "symbol": ["BTC-USDT"]})
                    db.query(expand_macros(empty_sel, start, end, INTERVAL_S), "JSON")
                except Exception as error:
                    failures.append(f"{where}: {error}")
                    continue
                meta, rows = result.get("meta", []), result.get("rows", 0)
                if kind.endswith("[time series]") and not (meta and meta[0]["type"].startswith(TIME_TYPES)):
                    failures.append(f"{where}: time series query must start with a time column, got {meta[:1]}")
                if rows == 0:
                    failures.append(f"{where}: returned no rows from the synthetic data")
                columns = ", ".join(f"{m['name']} {m['type']}" for m in meta)
                print(f"ok   {where}: {rows} rows ({columns})")
        db.close()
    for failure in failures:
        print(f"FAIL {failure}")
    print(f"{len(failures)} failed" if failures else "all dashboard queries ran against the schema")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
