"""The replay server on its own: how many messages per second it sustains to one client that only reads.

The server (``running_replay_server``: Binance, every configured pair, trades and 100 ms depth diffs like
``bench_end_to_end``'s mix) is asked for ``RATE`` msgs/s and runs in this process, where its ledger says
which trades it handed to the socket and ``/proc/self/stat`` its CPU (the main thread only waits). The
client is a child process of its own that reads frames (websockets' sans-I/O client over a blocking
socket: no event loop between the socket and the count) and counts them, so it costs the server nothing
and its CPU is its own. The figure is what the server sent, not what was asked: the ledger's trade frames
plus the depth frames the client counted, over the measured window; the client's count of trade frames
must agree with the ledger's.
"""

from __future__ import annotations

import bisect
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from benchmarks.harness import (
    ConnectionDrops,
    Figure,
    at_least,
    cpu_seconds,
    executed_trades,
    spawned,
    stop_child,
)
from trading_platform.config import ExchangesFile, load_exchanges
from trading_platform.exchanges.registry import exchange_for
from trading_platform.replay import ReplayServer, running_replay_server
from trading_platform.settings import Settings, load_settings

EXCHANGE = "binance"
RATE = 100_000  # messages/s asked of the replay server across all pairs of the exchange
DEPTH_PER_SYMBOL = 10  # Binance @depth@100ms: one diff per symbol per 100 ms
BOOK_RATE_PER_SYMBOL = 50.0  # maker events/s per symbol, as in bench_end_to_end
SECONDS, QUICK_SECONDS = 20.0, 3.0
WARMUP_S = 1.0  # past the connect and the first frames: the window measures the steady state
CHECKPOINT_S = 0.1  # the client notes (time, counts, CPU) this often; the window's ends are interpolated
CONNECT_TIMEOUT_S = 30.0
SATURATED_CORES = 0.85  # a side using this much of a core had no headroom left


@dataclass
class Checkpoint:
    at: float  # time.monotonic(): one clock for both processes (CLOCK_MONOTONIC)
    frames: int  # every text frame received
    trades: int  # trade frames among them
    cpu_seconds: float


@dataclass
class ClientReport:
    checkpoints: list[Checkpoint] = field(default_factory=list)
    closed_by_server: bool = False  # e.g. dropped as a slow consumer: counted up to then, a measured outcome
    error: str | None = None


def _read_frames(conn: Connection, url: str) -> None:
    """Count text frames until the parent says stop; answer pings (websockets queues the pongs)."""
    report = ClientReport()
    try:
        uri = parse_uri(url)
        protocol = ClientProtocol(uri, max_size=None)
        with socket.create_connection((uri.host, uri.port)) as sock:
            # A server too busy to answer must not keep the client from noting checkpoints and its stop.
            sock.settimeout(CHECKPOINT_S)
            protocol.send_request(protocol.connect())
            sock.sendall(b"".join(protocol.data_to_send()))
            frames = trades = 0
            next_checkpoint = time.monotonic()
            while True:
                if not report.closed_by_server:
                    try:
                        data: bytes | None = sock.recv(1 << 20)
                    except TimeoutError:
                        data = None
                    if data == b"":
                        report.closed_by_server = True
                        protocol.receive_eof()
                    elif data:
                        protocol.receive_data(data)
                    for event in protocol.events_received():
                        if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                            frames += 1
                            # Combined stream: the stream name comes first ({"stream":"btcusdt@trade",...).
                            trades += b"@trade" in event.data[:32]
                    outgoing = [chunk for chunk in protocol.data_to_send() if chunk]
                    if outgoing and not report.closed_by_server:
                        sock.sendall(b"".join(outgoing))
                else:
                    time.sleep(CHECKPOINT_S)
                now = time.monotonic()
                if now >= next_checkpoint:
                    next_checkpoint = now + CHECKPOINT_S
                    report.checkpoints.append(Checkpoint(now, frames, trades, time.process_time()))
                    if conn.poll():
                        break
    except Exception as error:  # reported to the parent, which fails the run with it
        report.error = repr(error)
    conn.send(report)



def _at(checkpoints: list[Checkpoint], when: float) -> Checkpoint:
    """The client's counts at ``when``, interpolated between its checkpoints."""
    times = [c.at for c in checkpoints]
    i = min(max(bisect.bisect_left(times, when), 1), len(checkpoints) - 1)
    a, b = checkpoints[i - 1], checkpoints[i]
    w = (when - a.at) / (b.at - a.at) if b.at > a.at else 1.0
    return Checkpoint(when, round(a.frames + w * (b.frames - a.frames)), round(a.trades + w * (b.trades - a.trades)),
                      a.cpu_seconds + w * (b.cpu_seconds - a.cpu_seconds))



@dataclass
class Window:
    """What the parent saw over the measured window."""

    started: float = 0.0
    seconds: float = 0.0
    trades_sent: int = 0  # ledger: trade frames handed to the socket during the window
    trades_executed: int = 0  # what the markets executed: the asked trade rate, sent or not
    server_cpu_seconds: float = 0.0


def _measure(replay: ReplayServer, url: str, seconds: float) -> tuple[Window, ClientReport]:
    with spawned(_read_frames, url) as (process, conn):
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        # A server that cannot keep up may never get to send: then the window measures that (zero).
        while replay.ledger.frames(EXCHANGE) == 0 and time.monotonic() < deadline:
            if not process.is_alive():
                raise RuntimeError("the client died before it received a trade")
            time.sleep(0.1)
        time.sleep(WARMUP_S)
        window = Window()
        sent_before, executed_before = replay.ledger.frames(EXCHANGE), executed_trades(replay, EXCHANGE)
        cpu_before = cpu_seconds(os.getpid())
        window.started = time.monotonic()
        time.sleep(seconds)
        window.seconds = time.monotonic() - window.started
        window.server_cpu_seconds = cpu_seconds(os.getpid()) - cpu_before
        window.trades_sent = replay.ledger.frames(EXCHANGE) - sent_before
        window.trades_executed = executed_trades(replay, EXCHANGE) - executed_before
        time.sleep(2 * CHECKPOINT_S)  # a client checkpoint past the window's end
        report = stop_child(conn, CONNECT_TIMEOUT_S, ClientReport, "the client")
        if report.error is not None:
            raise RuntimeError(f"the client failed: {report.error}")
        return window, report


def _limit(achieved: float, window: Window, server_cores: float, client_cores: float, drops: int) -> str:
    """Who held the rate below the asked one: a side that used (nearly) a whole core had no headroom left."""
    if achieved >= 0.95 * RATE and not drops:
        return "none"
    if window.trades_sent >= 0.98 * window.trades_executed and not drops:
        # The server sent what its market made: the arrivals are bursty (calm/burst regimes), so a window
        # can hold fewer trades than the long-run rate asked.
        return "none, the market made fewer"
    saturated = [name for name, cores in (("replay server", server_cores), ("client", client_cores))
                 if cores >= SATURATED_CORES]
    # Neither side near a core: the machine's other load starved them (the detail has both sides' cores).
    limit = " and ".join(saturated) or "CPU contention"
    return f"{limit}, connection dropped" if drops else limit


def _figures(window: Window, report: ClientReport, drops: int, seconds: float) -> list[Figure]:
    section = f"replay {RATE // 1000}k msgs/s"
    start = _at(report.checkpoints, window.started)
    end = _at(report.checkpoints, window.started + window.seconds)
    client_frames, client_trades = end.frames - start.frames, end.trades - start.trades
    depth = client_frames - client_trades
    sent = (window.trades_sent + depth) / window.seconds
    server_cores = window.server_cpu_seconds / window.seconds
    client_cores = (end.cpu_seconds - start.cpu_seconds) / window.seconds
    limit = _limit(sent, window, server_cores, client_cores, drops)
    detail: dict[str, Any] = {
        "asked_msgs_per_s": RATE, "window_seconds": round(window.seconds, 1), "configured_seconds": seconds,
        "ledger_trades_per_s": round(window.trades_sent / window.seconds),
        "client_trades_per_s": round(client_trades / window.seconds),
        "client_depth_per_s": round(depth / window.seconds),
        "client_msgs_per_s": round(client_frames / window.seconds),
        # Frames in flight at the window's ends make the two counts differ by a few hundred at most.
        "client_over_ledger_trades": round(client_trades / window.trades_sent, 4) if window.trades_sent else None,
        "executed_trades_per_s": round(window.trades_executed / window.seconds),
        "server_cores": round(server_cores, 2), "client_cores": round(client_cores, 2),
        # What a message costs the server, whatever the machine's other load lets it reach.
        "server_cpu_us_per_msg": round(window.server_cpu_seconds / (sent * window.seconds) * 1e6, 2) if sent else None,
        "connection_drops": drops, "client_closed_by_server": report.closed_by_server, "limit": limit,
    }
    return [
        at_least(section, f"msgs/s sent (limit: {limit})", sent, "msgs/s", RATE, detail),
        Figure(section, "replay server CPU", server_cores, "cores", detail=detail),
        Figure(section, "client CPU", client_cores, "cores", detail=detail),
    ]


def run(quick: bool) -> list[Figure]:
    every = load_exchanges(load_settings().exchanges_file)
    # Only this exchange's markets tick, so the server's time goes to the feed being measured.
    exchanges = ExchangesFile(exchanges={EXCHANGE: every.exchanges[EXCHANGE]})
    symbols = exchanges.exchanges[EXCHANGE].symbols
    trade_rate = (RATE - DEPTH_PER_SYMBOL * len(symbols)) / len(symbols)
    seconds = QUICK_SECONDS if quick else SECONDS
    dropped = ConnectionDrops()
    logging.getLogger("trading_platform.replay").addHandler(dropped)
    try:
        with running_replay_server(exchanges, rate_per_symbol=trade_rate, book_rate_per_symbol=BOOK_RATE_PER_SYMBOL,
                                   seed=5) as replay:
            exchange = exchange_for(exchanges.exchanges[EXCHANGE])
            url = exchange.use_endpoints(exchange.config.endpoints(
                Settings(feed_mode="replay", replay_host=replay.host, replay_port=replay.port)))
            window, report = _measure(replay, url, seconds)
    finally:
        logging.getLogger("trading_platform.replay").removeHandler(dropped)
    return _figures(window, report, dropped.drops, seconds)
