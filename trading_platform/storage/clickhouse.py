"""ClickHouse behind one small interface, with two backends that run the same DDL and queries.

* ``chdb:///abs/folder`` -> :class:`ChdbClickHouse`: the ClickHouse engine embedded in this process
  (chdb), on an on-disk database folder. chdb lets exactly one *process* open a folder at a time; a
  second process fails with ``Code: 76 ... Cannot lock file <folder>/status`` until the first closes.
  Opening takes ~50 ms and closing ~10 ms, so callers hold a session only briefly (one load step, one
  CLI query) and :func:`open_clickhouse` waits for the folder with a bounded, jittered retry.
* ``http(s)://user:pass@host:port`` -> :class:`ServerClickHouse`: a ClickHouse server (or cluster
  node) through clickhouse-connect.

Both raise :class:`ClickHouseError` (with the ClickHouse ``Code: N. DB::Exception: ...`` text and
``code``) for a failed statement and :class:`ClickHouseUnavailable` when the database cannot be
reached at all, so callers handle one set of exceptions whatever the URL says.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import random
import re
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, cast, runtime_checkable
from urllib.parse import parse_qs, unquote, urlparse, urlunparse

import pyarrow as pa

from trading_platform import schema
from trading_platform.sql import quote_identifier, quote_string, quote_table_name

if TYPE_CHECKING:
    from collections.abc import Callable

    from chdb.session import Session

__all__ = [
    "ChdbClickHouse",
    "ClickHouse",
    "ClickHouseError",
    "ClickHouseUnavailable",
    "ServerClickHouse",
    "ensure_schema",
    "open_chdb_session",
    "open_clickhouse",
    "redact_url",
]

DEFAULT_LOCK_TIMEOUT_S = 30.0
_CODE_RE = re.compile(r"Code: (\d+)\.")
# chdb reports a folder locked by another process as "Code: 36 ... Error initializing EmbeddedServer"
# (the Code 76 line only reaches stderr), so the lock is also recognised by probing the status file.
_LOCK_MARKERS = ("Code: 76.", "Cannot lock file")
# ... and that same message is all a contender sees when the holder closed the folder between the failed open
# and the probe: such a failure is opened again (a few times) before it counts as another error.
_INIT_FAILED_MARKER = "Error initializing EmbeddedServer"
_AMBIGUOUS_RETRIES = 5
# One process embeds one chdb engine, i.e. one database folder (chdb's own rule, Code 36).
_OTHER_PATH_MARKER = "already initialized with path"


class ClickHouseError(RuntimeError):
    """A ClickHouse statement failed. ``str(err)`` carries ClickHouse's ``Code: N. DB::Exception`` text."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code if code is not None else error_code(message)


class ClickHouseUnavailable(ClickHouseError):
    """The database cannot be reached: server down, folder locked too long, bad credentials."""


def error_code(message: str) -> int | None:
    """The ClickHouse error code in a ``Code: N. DB::Exception: ...`` message, if there is one."""
    match = _CODE_RE.search(message)
    return int(match.group(1)) if match else None


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlparse(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunparse(parts._replace(netloc=f"{user}:***@{netloc}"))


@runtime_checkable
class ClickHouse(Protocol):
    """What the platform needs from ClickHouse; both backends implement exactly this."""

    url: str

    def command(self, sql: str) -> None:
        """Run a statement that returns no rows (DDL, INSERT ... SELECT, OPTIMIZE, ...)."""
        ...

    def query_arrow(self, sql: str) -> pa.Table:
        """Run a query and return its result as an Arrow table (DateTime64 -> timestamp with tz)."""
        ...

    def insert_arrow(self, table: str, data: pa.Table, dedup_token: str | None = None) -> None:
        """Insert ``data`` into ``table`` (``db.table``, quoted here), columns mapped by name.

        With ``dedup_token`` a repeated insert of the same token is dropped by ClickHouse (tables need
        ``non_replicated_deduplication_window`` or a Replicated engine), which makes loads idempotent.
        """
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class _ClosedOnExit:
    """``with backend:`` closes it on the way out, whichever backend it is."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_clickhouse(url: str, *, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> ClickHouse:
    """Open the backend that ``url`` names: ``chdb:///abs/folder`` or ``http(s)://user:pass@host:port``.

    Query options for servers: ``?database=name``, ``?compress=0|1`` (default 1), ``?secure`` (implied
    by https). ``lock_timeout_s`` is how long a chdb open waits for another process to release the folder.
    """
    scheme = urlparse(url).scheme
    if scheme == "chdb":
        return ChdbClickHouse(chdb_path(url), lock_timeout_s=lock_timeout_s)
    if scheme in ("http", "https"):
        return ServerClickHouse(url)
    raise ValueError(f"ClickHouse URL must start with chdb://, http:// or https://, got {redact_url(url)!r}")


def ensure_schema(ch: ClickHouse) -> None:
    """Create the ``trading`` database and every table of :data:`schema.ALL_TABLES` (idempotent)."""
    ch.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(schema.DATABASE)}")
    for table in schema.ALL_TABLES:
        ch.command(table.ddl())


def chdb_path(url: str) -> Path:
    """The folder of a ``chdb:///abs/folder`` URL; relative or host-qualified forms are rejected."""
    parts = urlparse(url)
    if parts.scheme != "chdb" or parts.netloc or not parts.path.startswith("/"):
        raise ValueError(f"chdb URL must be chdb:///absolute/folder, got {url!r}")
    return Path(unquote(parts.path))


# --------------------------------------------------------------------------------------------- chdb


def _status_file_locked(path: Path) -> bool:
    """True if another open file description holds ClickHouse's ``flock`` on ``<path>/status``.

    ClickHouse's StatusFile takes ``flock(LOCK_EX | LOCK_NB)``. A non-blocking shared probe fails
    exactly while someone holds it, and is released at once (a competing open in that microsecond
    fails and retries like any other contender). Call it only when this process does not itself have
    the folder open: our own engine's lock would read as "locked" too.
    """
    try:
        fd = os.open(path / "status", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return True
        raise
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def open_chdb_session(path: Path, *, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> Session:
    """Open a chdb session on ``path``, waiting up to ``lock_timeout_s`` for another process to close it.

    Retries use short jittered sleeps (20 ms growing to 250 ms) so contenders do not open in lockstep;
    while the folder is locked we only probe the status file, because each failed chdb open prints a
    ``Code: 76`` line on stderr. Raises :class:`ClickHouseUnavailable` naming the folder and the cause.
    """
    from chdb.session import Session  # heavy import (the engine), only when chdb is used

    path.mkdir(parents=True, exist_ok=True)
    url = f"chdb://{path}"
    deadline = time.monotonic() + lock_timeout_s
    delay = 0.02
    ambiguous_left = _AMBIGUOUS_RETRIES
    while True:
        try:
            return cast("Callable[[str], Session]", Session)(str(path))  # chdb has no type hints
        except Exception as exc:  # chdb raises RuntimeError with the ClickHouse text
            message = str(exc)
            if _OTHER_PATH_MARKER in message:
                raise ClickHouseUnavailable(
                    f"cannot open ClickHouse at {url}: this process already has another chdb folder open "
                    f"and chdb embeds one database folder per process ({message})",
                    code=error_code(message),
                ) from exc
            locked = any(m in message for m in _LOCK_MARKERS) or _status_file_locked(path)
            if not locked and _INIT_FAILED_MARKER in message and ambiguous_left > 0:
                ambiguous_left -= 1
                time.sleep(random.uniform(0.01, 0.05))
                continue
            if not locked:
                raise ClickHouseUnavailable(
                    f"cannot open ClickHouse at {url}: {message}", code=error_code(message)
                ) from exc
            cause: Exception = exc
        # The folder is locked by another process: wait (silently) until it is free or time is up.
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise ClickHouseUnavailable(
                    f"cannot open ClickHouse at {url}: the chdb folder is in use by another process for "
                    f"more than {lock_timeout_s:g} s (chdb allows one process per folder; ClickHouse "
                    f"writers should share the Dagster pool and hold sessions briefly)",
                    code=76,
                ) from cause
            time.sleep(min(delay * random.uniform(0.5, 1.5), deadline - now))
            delay = min(delay * 1.5, 0.25)
            if not _status_file_locked(path):
                break


class _ChdbSession(Protocol):
    """What :class:`ChdbClickHouse` calls on chdb's ``Session`` (chdb has no type hints)."""

    def query(self, sql: str, fmt: str) -> Any: ...

    def close(self) -> None: ...


class ChdbClickHouse(_ClosedOnExit):
    """The embedded backend: one chdb session on a database folder, held until :meth:`close`.

    Open late and close early: while this object lives, no other process can open the folder.
    """

    def __init__(self, path: Path | str, *, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.url = f"chdb://{self.path}"
        self._session: _ChdbSession | None = open_chdb_session(self.path, lock_timeout_s=lock_timeout_s)
        # A chdb session is not thread-safe; Dagster may call a resource from several threads.
        self._lock = threading.Lock()

    def _query(self, sql: str, fmt: str) -> Any:
        with self._lock:
            if self._session is None:
                raise ClickHouseError(f"ClickHouse at {self.url} is closed")
            try:
                return self._session.query(sql, fmt)
            except Exception as exc:
                raise ClickHouseError(str(exc)) from exc

    def command(self, sql: str) -> None:
        self._query(sql, "TabSeparated")

    def query_arrow(self, sql: str) -> pa.Table:
        # The Arrow file bytes, read here: chdb's own "ArrowTable" format imports pandas on first use
        # (seconds in a fresh process) only to build the same table.
        result = self._query(sql, "Arrow")
        return pa.ipc.open_file(result.get_memview().view()).read_all()

    def insert_arrow(self, table: str, data: pa.Table, dedup_token: str | None = None) -> None:
        if data.num_rows == 0:
            return  # nothing to write; ClickHouse would create no part either
        # chdb's Python() table function resolves this local variable by name from the calling frame.
        _tp_insert_arrow = data
        columns = ", ".join(quote_identifier(name) for name in data.column_names)
        # Same column list on both sides: columns map by name, never by position; the table's
        # DateTime64(6, 'UTC') receives timestamp[us, UTC] without loss.
        settings = (
            f" SETTINGS insert_deduplication_token = {quote_string(dedup_token)}" if dedup_token else ""
        )
        target = quote_table_name(table)
        self._query(
            f"INSERT INTO {target} ({columns}){settings} SELECT {columns} FROM Python(_tp_insert_arrow)",
            "TabSeparated",
        )

    def close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    def __repr__(self) -> str:
        return f"ChdbClickHouse({str(self.path)!r})"


# ------------------------------------------------------------------------------------------- server


def _truthy(values: list[str]) -> bool:
    # "?secure" (blank value) means on; "?compress=0" means off.
    return values[-1].strip().lower() not in ("0", "false", "no", "off")


class ServerClickHouse(_ClosedOnExit):
    """A ClickHouse server through clickhouse-connect (HTTP interface)."""

    def __init__(self, url: str, *, connect_timeout_s: int = 10) -> None:
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import Error as ClickHouseConnectError

        parts = urlparse(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"ClickHouse server URL must be http(s)://host:port, got {redact_url(url)!r}")
        options = parse_qs(parts.query, keep_blank_values=True)
        secure = parts.scheme == "https" or ("secure" in options and _truthy(options["secure"]))
        self.url = redact_url(url)
        try:
            self._client = clickhouse_connect.get_client(
                host=parts.hostname,
                port=parts.port or (8443 if secure else 8123),
                username=unquote(parts.username) if parts.username else "default",
                password=unquote(parts.password) if parts.password else "",
                database=options["database"][-1] if "database" in options else None,
                secure=secure,
                compress=_truthy(options["compress"]) if "compress" in options else True,
                connect_timeout=connect_timeout_s,
                # One client per backend object; sessions would make concurrent use an error.
                autogenerate_session_id=False,
            )
        except ClickHouseConnectError as exc:
            raise ClickHouseUnavailable(
                f"cannot connect to ClickHouse at {self.url}: {exc}", code=getattr(exc, "code", None)
            ) from exc
        except Exception as exc:  # urllib3/socket errors that escape the driver's own wrapping
            raise ClickHouseUnavailable(f"cannot connect to ClickHouse at {self.url}: {exc}") from exc

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

        try:
            return fn(*args, **kwargs)
        except OperationalError as exc:  # transport failure, or a retried server error
            if getattr(exc, "code", None):
                raise ClickHouseError(_server_message(exc), code=exc.code) from exc
            raise ClickHouseUnavailable(f"ClickHouse at {self.url} is unreachable: {exc}") from exc
        except DatabaseError as exc:
            raise ClickHouseError(_server_message(exc), code=getattr(exc, "code", None)) from exc

    def command(self, sql: str) -> None:
        self._call(self._client.command, sql)

    def query_arrow(self, sql: str) -> pa.Table:
        result = self._call(self._client.query_arrow, sql)
        assert isinstance(result, pa.Table)
        return result

    def insert_arrow(self, table: str, data: pa.Table, dedup_token: str | None = None) -> None:
        if data.num_rows == 0:
            return
        settings = {"insert_deduplication_token": dedup_token} if dedup_token else None
        # clickhouse-connect passes a dotted name through as it is, so it gets it quoted already.
        self._call(self._client.insert_arrow, quote_table_name(table), data, settings=settings)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()

    def __repr__(self) -> str:
        return f"ServerClickHouse({self.url!r})"


def _server_message(exc: Exception) -> str:
    """ClickHouse's own ``Code: N. DB::Exception: ...`` text out of clickhouse-connect's wrapper message."""
    text = str(exc)
    start = text.find("Code: ")
    if start < 0:
        return text
    text = text[start:]
    # clickhouse-connect appends " (for url http://host:port)"; the ClickHouse text is what matters.
    return re.sub(r"\s*\(for url [^)]*\)\s*$", "", text).strip()
