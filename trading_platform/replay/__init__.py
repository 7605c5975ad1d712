"""Local exchange feed server: the exchanges' own wire formats, synthetic data, exact ledger, faults.

One port serves (paths per exchange):
- Binance: ``/binance/ws/<stream>…``, ``/binance/stream?streams=…`` (``<sym>@trade``,
  ``<sym>@depth@100ms``, ``<sym>@depth``), REST ``GET /binance/api/v3/depth?symbol=BTCUSDT&limit=N``;
- Coinbase Advanced Trade: ``/coinbase`` (``heartbeats``, ``market_trades``, ``level2``);
- Kraken v2: ``/kraken/v2`` (``trade``, ``book`` with CRC32 checksums, ``instrument``);
- admin HTTP: ``/_replay/health|ledger|connections|faults``.
Each symbol has a synthetic L2 book (``market.py``) that trades consume at the touch; every exchange
module renders the same model in its own format.

Public API::

    server = await start_replay_server("127.0.0.1", 0, exchanges, rate_per_symbol=5.0, seed=1)
    server.port, server.ws_base_url, server.ledger, server.faults, server.inject(Fault(...))
    server.pause(); server.book("kraken", "BTC-USD"); server.resume()    # compare client books exactly
    await server.close()

    with running_replay_server(exchanges, seed=1) as server: ...   # background thread, sync callers
    run_replay(settings)                                            # foreground, until SIGINT/SIGTERM
    run_replay(settings, capture=Path("k.txt"), capture_exchange="kraken", speed=10.0)  # replay a capture
    start_replay_server(..., record={"kraken": Path("k.txt")}, record_format="raw")     # record frames
"""

from trading_platform.replay.book import kraken_checksum
from trading_platform.replay.capture import parse_line, read_capture
from trading_platform.replay.faults import Fault, FaultCounters, FaultKind, FaultResult
from trading_platform.replay.ledger import TradeLedger
from trading_platform.replay.runner import run_replay, running_replay_server
from trading_platform.replay.server import CONNECTION_ID_HEADER, ReplayServer, start_replay_server

__all__ = [
    "CONNECTION_ID_HEADER",
    "Fault",
    "FaultCounters",
    "FaultKind",
    "FaultResult",
    "ReplayServer",
    "TradeLedger",
    "kraken_checksum",
    "parse_line",
    "read_capture",
    "run_replay",
    "running_replay_server",
    "start_replay_server",
]
