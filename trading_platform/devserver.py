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
import subprocess
import sys
import time
from pathlib import Path

from trading_platform.settings import PROJECT_ROOT, Settings
from trading_platform.storage.redis_cache import EmbeddedValkey

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


def run_dev(settings: Settings, host: str = "127.0.0.1", port: int = 3000) -> int:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(dagster_home(settings))
    env.setdefault("TP_STATE_DIR", str(settings.state_dir.resolve()))
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    valkey: EmbeddedValkey | None = None

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
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
