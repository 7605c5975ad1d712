"""Local exchange feed server: the exchanges' own wire formats, synthetic data, exact ledger, faults.

Public API::

    server = await start_replay_server("127.0.0.1", 0, exchanges, rate_per_symbol=5.0, seed=1)
    server.port, server.ws_base_url, server.ledger, server.faults, server.inject(Fault(...))
    await server.close()

    with running_replay_server(exchanges, seed=1) as server: ...   # background thread, sync callers
    run_replay(settings)                                            # foreground, until SIGINT/SIGTERM
"""

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
    "run_replay",
    "running_replay_server",
    "start_replay_server",
]
