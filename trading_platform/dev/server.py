"""``trading-platform dev`` (what ``make run`` starts): the embedded services, the replay feed and
``dagster dev``, all owned by this process and all stopped when it stops (Ctrl-C or SIGTERM).

Each child gets its own process group so shutdown can reach everything a child started (the Dagster
code server's run processes included) and leave no orphan behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from trading_platform.dev.valkey import EmbeddedValkey
from trading_platform.settings import PROJECT_ROOT, Settings

DAGSTER_SHUTDOWN_GRACE_S = 30.0  # ingestion runs drain (unsubscribe, flush) inside this


def _stop_group(process: subprocess.Popen[bytes], name: str, grace_s: float) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            print(f"[trading-platform] {name} did not stop in {grace_s:.0f}s; killing it", flush=True)
        except ProcessLookupError:
            pass
    # Whatever is left in the group (runs, servers) goes too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def dagster_home(settings: Settings) -> Path:
    """The project-local home gets the repository's instance config on every start (so edits to
    dagster.yaml apply); a DAGSTER_HOME the user points at keeps its own dagster.yaml."""
    user_home = os.environ.get("DAGSTER_HOME")
    home = Path(user_home or settings.state_dir / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not user_home or not (home / "dagster.yaml").exists():
        shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def preflight(settings: Settings, host: str, port: int) -> list[str]:
    """What would make the platform start half-way: a taken port, a state folder that cannot be written.

    Checked before anything starts, each problem naming the setting that fixes it.
    """
    wanted = [(host, port, "the Dagster UI", "TP_UI_PORT (or --port)")]
    if settings.feed_mode == "replay":
        wanted.append((settings.replay_host, settings.replay_port, "the replay feed", "TP_REPLAY_PORT"))
    if settings.redis_url == "embedded":
        wanted.append(("127.0.0.1", settings.embedded_redis_port, "the embedded Valkey",
                       "TP_EMBEDDED_REDIS_PORT (or TP_REDIS_URL=redis://... to use a server of your own)"))
    problems = []
    for bind_host, bind_port, what, setting in wanted:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free
            try:
                probe.bind((bind_host, bind_port))
            except OSError as error:
                problems.append(f"port {bind_port} on {bind_host} ({what}) is not free ({error.strerror}): "
                                f"stop what holds it, or set {setting} to a free port")
    try:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        probe_file = settings.state_dir / ".write-test"
        probe_file.write_text("ok")
        probe_file.unlink()
    except OSError as error:
        problems.append(f"state folder {settings.state_dir} cannot be written ({error.strerror}): "
                        "set TP_STATE_DIR to a writable folder")
    return problems


def run_dev(settings: Settings, host: str = "127.0.0.1", port: int = 3000) -> int:
    problems = preflight(settings, host, port)
    if problems:
        for problem in problems:
            print(f"[trading-platform] cannot start: {problem}", file=sys.stderr, flush=True)
        return 2
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(dagster_home(settings))
    env.setdefault("TP_STATE_DIR", str(settings.state_dir.resolve()))
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    valkey: EmbeddedValkey | None = None

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    # Started in the background (`make run &`, nohup), a process inherits SIGINT as ignored, and so would
    # every child: the drain on Ctrl-C / SIGINT would then never start. Children get the default again.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if settings.redis_url == "embedded":
            valkey = EmbeddedValkey(settings.embedded_redis_port, settings.state_dir / "valkey")
            valkey.start()
            print(f"[trading-platform] embedded Valkey on {valkey.url}", flush=True)
        if settings.feed_mode == "replay":
            replay = subprocess.Popen([sys.executable, "-m", "trading_platform.cli", "replay"], env=env,
                                      start_new_session=True)
            children.append(("replay feed", replay))
            print(f"[trading-platform] replay feed on ws://{settings.replay_host}:{settings.replay_port}", flush=True)
        dagster = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster"), "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
             "-h", host, "-p", str(port)],
            env=env, cwd=PROJECT_ROOT, start_new_session=True,
        )
        children.append(("dagster dev", dagster))
        print(f"[trading-platform] Dagster UI on http://{host}:{port} (Ctrl-C stops everything)", flush=True)
        while True:
            for name, child in children:
                if child.poll() is not None:
                    print(f"[trading-platform] {name} exited with {child.returncode}; stopping", flush=True)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\n[trading-platform] stopping: draining ingestion runs, then servers", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for name, child in reversed(children):
            _stop_group(child, name, DAGSTER_SHUTDOWN_GRACE_S if name == "dagster dev" else 5.0)
        if valkey is not None:
            valkey.stop()
        print("[trading-platform] stopped", flush=True)
