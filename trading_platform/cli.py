"""``trading-platform``: the command line. Every subcommand reads the same ``Settings`` (TP_*)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from trading_platform.settings import ConfigError, Settings, load_settings


def _query(settings: Settings, args: argparse.Namespace) -> int:
    import polars as pl

    from trading_platform.storage.clickhouse import ClickHouseError, ensure_schema, open_clickhouse

    try:
        with open_clickhouse(settings.clickhouse_url, lock_timeout_s=args.lock_timeout) as ch:
            ensure_schema(ch)
            table = ch.query_arrow(args.sql)
    except ClickHouseError as error:
        print(f"clickhouse error: {error}", file=sys.stderr)
        return 1
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    if args.format == "csv":
        sys.stdout.write(frame.write_csv())
    elif args.format == "json":
        sys.stdout.write(frame.write_ndjson())
    else:
        with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=80, tbl_hide_dataframe_shape=True):
            print(frame)
    return 0


def _prices(settings: Settings, args: argparse.Namespace) -> int:
    from trading_platform.storage.redis_cache import PriceCache, connect

    entries = PriceCache(connect(settings.resolved_redis_url)).read_all()
    now = time.time()
    rows = sorted(entries, key=lambda e: (e["exchange"], e["symbol"]))
    if args.exchange:
        rows = [r for r in rows if r["exchange"] == args.exchange]
    print(f"{'exchange':<10} {'symbol':<11} {'price':>16} {'quantity':>14} {'side':<4} {'trade age':>10} {'age':>8}")
    for row in rows:
        trade_age = now - int(row["trade_time_us"]) / 1e6
        age = now - int(row["updated_us"]) / 1e6
        print(f"{row['exchange']:<10} {row['symbol']:<11} {float(row['price']):>16.8g} "
              f"{float(row['quantity']):>14.8g} {row['side']:<4} {trade_age:>9.1f}s {age:>7.1f}s")
    print(f"{len(rows)} symbols cached at {settings.resolved_redis_url}")
    return 0 if rows else 1


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from trading_platform.replay import run_replay

    run_replay(settings, rate_per_symbol=args.rate)
    return 0


def _dev(settings: Settings, args: argparse.Namespace) -> int:
    from trading_platform.devserver import run_dev

    return run_dev(settings, host=args.host, port=args.port)


def _check_config(settings: Settings, args: argparse.Namespace) -> int:
    from trading_platform.config import load_exchanges
    from trading_platform.exchanges.registry import exchange_class

    exchanges = load_exchanges(settings.exchanges_file)
    for name, cfg in exchanges.exchanges.items():
        if cfg.enabled:
            exchange_class(name)
        state = "enabled" if cfg.enabled else "disabled"
        print(f"{name:<9} {state:<8} {len(cfg.symbols)} symbols  {cfg.endpoints(settings).ws_url}")
    from trading_platform.storage.clickhouse import redact_url

    print(f"lake: {settings.storage_url}\nclickhouse: {redact_url(settings.clickhouse_url)}\n"
          f"redis: {redact_url(settings.redis_url)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trading-platform", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    query = commands.add_parser("query", help="run SQL against the configured ClickHouse (works while loads run)")
    query.add_argument("sql")
    query.add_argument("--format", choices=["table", "csv", "json"], default="table")
    query.add_argument("--lock-timeout", type=float, default=60.0,
                       help="seconds to wait while a load holds the embedded chdb folder")
    query.set_defaults(handler=_query)
    prices = commands.add_parser("prices", help="show each cached symbol's last trade and its age")
    prices.add_argument("--exchange")
    prices.set_defaults(handler=_prices)
    replay = commands.add_parser("replay", help="serve the local exchange replay feed")
    replay.add_argument("--rate", type=float, default=None, help="average trades per second per symbol")
    replay.set_defaults(handler=_replay)
    dev = commands.add_parser("dev", help="start embedded services, the replay feed and `dagster dev`")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    dev.set_defaults(handler=_dev)
    check = commands.add_parser("check-config", help="validate settings and exchanges.yaml")
    check.set_defaults(handler=_check_config)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
        return int(args.handler(settings, args))
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
