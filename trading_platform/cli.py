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

    lock_timeout_s = args.lock_timeout or settings.clickhouse_lock_timeout_s
    try:
        with open_clickhouse(settings.clickhouse_url, lock_timeout_s=lock_timeout_s) as ch:
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

    def number(row: dict[str, str], key: str) -> str:
        return f"{float(row[key]):.8g}" if key in row else "-"

    def age(row: dict[str, str], key: str) -> str:
        return f"{now - int(row[key]) / 1e6:.1f}s" if key in row else "-"

    print(f"{'exchange':<9} {'symbol':<10} {'last':>12} {'side':<4} {'bid':>12} {'ask':>12} {'spread':>10} "
          f"{'trade age':>9} {'cache age':>9} {'book age':>8}")
    for row in rows:
        spread = (f"{float(row['best_ask']) - float(row['best_bid']):.6g}"
                  if "best_bid" in row and "best_ask" in row else "-")
        print(f"{row['exchange']:<9} {row['symbol']:<10} {number(row, 'price'):>12} {row.get('side', '-'):<4} "
              f"{number(row, 'best_bid'):>12} {number(row, 'best_ask'):>12} {spread:>10} "
              f"{age(row, 'trade_time_us'):>9} {age(row, 'updated_us'):>9} {age(row, 'book_updated_us'):>8}")
    print(f"{len(rows)} symbols cached at {settings.resolved_redis_url}")
    return 0 if rows else 1


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from trading_platform.replay import run_replay
    from trading_platform.replay.lake import LakeDays, parse_days
    from trading_platform.storage.object_store import open_object_store

    if args.capture and not args.exchange:
        print("--capture needs --exchange (which exchange's clients receive the recording)", file=sys.stderr)
        return 2
    from_lake = None
    if args.from_lake:
        exchange, span = args.from_lake
        try:
            from_lake = LakeDays(exchange, open_object_store(settings.storage_url, settings.s3_endpoint_url),
                                 parse_days(span))
        except ValueError as error:
            print(f"--from-lake: {error}", file=sys.stderr)
            return 2
    record = {args.exchange: Path(args.record)} if args.record and args.exchange else None
    try:
        run_replay(settings, rate_per_symbol=args.rate, capture=Path(args.capture) if args.capture else None,
                   capture_exchange=args.exchange if args.capture else None, speed=args.speed,
                   record=record, record_format=args.record_format, from_lake=from_lake)
    except ValueError as error:  # a capture or lake that cannot be replayed: said before serving anything
        print(f"replay: {error}", file=sys.stderr)
        return 2
    return 0


def _normalize(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from trading_platform.capture_format import is_rest_recording
    from trading_platform.config import SYMBOL_PATTERN, load_exchanges
    from trading_platform.importer.archive import ImportOptionError, import_capture

    exchanges = load_exchanges(settings.exchanges_file)
    if args.exchange not in exchanges.exchanges:
        print(f"--exchange: unknown exchange {args.exchange!r}; allowed: {sorted(exchanges.exchanges)}",
              file=sys.stderr)
        return 2
    config = exchanges.exchanges[args.exchange]
    snapshots: dict[str, Path] = {}
    recordings: list[Path] = []
    for item in args.snapshot or []:
        symbol, equals, file = item.partition("=")
        if not (equals and SYMBOL_PATTERN.match(symbol)):
            symbol, file = "", item  # FILE alone (a path may hold "=" too)
        path = Path(file)
        if not path.is_file():
            print(f"--snapshot: no such file: {path}", file=sys.stderr)
            return 2
        if is_rest_recording(path):
            recordings.append(path)  # each response names its symbol in its URL
        else:
            snapshots[symbol] = path
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()] if args.symbols else None
    try:
        report = import_capture(config, Path(args.input), Path(args.output), snapshots, settings.spike_threshold,
                                symbols=symbols, rest_recordings=recordings if args.snapshot else None,
                                progress=False if args.no_progress else None)
    except ImportOptionError as error:
        print(error, file=sys.stderr)
        return 2
    print("\n".join(report.lines()))
    return 0


def _dev(settings: Settings, args: argparse.Namespace) -> int:
    from trading_platform.dev.server import run_dev

    return run_dev(settings, host=args.host, port=args.port if args.port is not None else settings.ui_port)


def _status(settings: Settings, args: argparse.Namespace) -> int:
    import json
    import os
    from pathlib import Path

    from trading_platform.status import platform_status, render

    logging.getLogger("alembic").setLevel(logging.WARNING)  # the instance's storage migrations check
    home = Path(os.environ.get("DAGSTER_HOME") or settings.state_dir / "dagster_home")
    if not (home / "dagster.yaml").exists():
        print(f"no Dagster instance at {home}: start the platform (make run), or point DAGSTER_HOME at its "
              "instance folder", file=sys.stderr)
        return 3
    status = platform_status(settings, home)
    print(json.dumps(status.to_json(), indent=2) if args.json else render(status))
    return 1 if status.error else 0


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
    query.add_argument("--lock-timeout", type=float, default=None,
                       help="seconds to wait while a load holds the embedded chdb folder "
                            "(default: TP_CLICKHOUSE_LOCK_TIMEOUT_S)")
    query.set_defaults(handler=_query)
    prices = commands.add_parser("prices", help="show each cached symbol's last trade and its age")
    prices.add_argument("--exchange")
    prices.set_defaults(handler=_prices)
    replay = commands.add_parser("replay", help="serve the local exchange replay feed")
    replay.add_argument("--rate", type=float, default=None, help="average trades per second per symbol")
    replay.add_argument("--exchange", help="the exchange --capture / --record apply to")
    replay.add_argument("--capture", help="serve this recording (one raw frame per line, or cryptofeed raw data)")
    replay.add_argument("--from-lake", nargs=2, metavar=("EXCHANGE", "DATE[..DATE]"),
                        help="serve EXCHANGE's recorded frames of these UTC days from the lake's raw-frame "
                             "archive (TP_STORAGE_URL), in its own protocol; the other exchanges stay synthetic")
    replay.add_argument("--speed", type=float, default=1.0,
                        help="--capture / --from-lake pacing: 1 as recorded, 10 faster, 0 no pauses")
    replay.add_argument("--record", help="write every frame sent on --exchange to this file")
    replay.add_argument("--record-format", choices=["raw", "cryptofeed"], default="raw")
    replay.set_defaults(handler=_replay)
    dev = commands.add_parser("dev", help="start embedded services, the replay feed and `dagster dev`")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=None, help="Dagster UI port (default: TP_UI_PORT, 3000)")
    dev.set_defaults(handler=_dev)
    normalize = commands.add_parser("normalize", help="import a recorded capture into normalized Parquet datasets")
    normalize.add_argument("--exchange", required=True)
    normalize.add_argument("--input", required=True, help="capture: one raw frame per line, or cryptofeed raw data")
    normalize.add_argument("--snapshot", action="append",
                           help="REST snapshots: a cryptofeed REST recording (each response is matched to its "
                                "symbol by its URL), or one response body as SYMBOL=FILE (FILE alone for a "
                                "one-symbol capture); repeatable. Default: the cryptofeed REST recordings next "
                                "to a <FEED>.ws.* input")
    normalize.add_argument("--symbols", help="comma-separated normalized symbols to import (default: every symbol "
                                             "in the recording)")
    normalize.add_argument("--output", required=True, help="lake root folder to write raw/<dataset>/... into")
    normalize.add_argument("--no-progress", action="store_true",
                           help="no progress bar on stderr (shown for inputs of 4 MiB and more)")
    normalize.set_defaults(handler=_normalize)
    status = commands.add_parser(
        "status", help="per exchange: run, connection, last trade, msgs/s, lag, gaps, failing checks "
                       "(exit 1 when an ERROR check fails)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_status)
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
