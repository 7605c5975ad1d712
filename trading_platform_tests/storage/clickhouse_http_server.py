"""Test support: ClickHouse's HTTP interface, served on loopback by a chdb session that owns a folder.

Why: chdb lets one process open a database folder at a time, and no modern ClickHouse server package
is installable on the development machines. This server lets one long-lived process own the folder
while any number of clients use it through clickhouse-connect (or curl) exactly as they would use a
ClickHouse server, and it is the server the test suite runs the ``http://`` backend against.

What it serves (the part of the interface clickhouse-connect 1.x uses, checked against its driver):

* ``GET/POST /`` with the query in ``query=``, in the body, or both (the body is appended after a
  newline, as ClickHouse does); ``multipart/form-data`` bodies (form-encoded queries and bind
  parameters, external-data files); ``GET /ping`` and ``/replicas_status``.
* ``database=``, ``default_format=`` (TabSeparated by default), ``query_id=``, ``param_<name>=``
  bind parameters, every other parameter as a ClickHouse setting for that request only; ``session_id``
  keeps ``SET``/``USE`` state per session (``session_timeout``, ``session_check``).
* Output in any ClickHouse output format (Native, Arrow, ArrowStream, TabSeparated, JSON, ...).
* ``INSERT ... FORMAT <fmt>`` with the data after the statement, in any input format, streamed into
  chdb's own input-format parsers (so Arrow/Native/CSV data is read the way a server reads it).
* Request bodies with ``Content-Encoding`` lz4 (frames), zstd, gzip, deflate, br (if brotli is
  installed) and chunked transfer encoding, which is what clickhouse-connect sends for row inserts;
  responses compressed when the client sends ``enable_http_compression=1`` and ``Accept-Encoding``.
* Errors as ClickHouse sends them: ``Code: N. DB::Exception: ... (NAME)`` in the body, the
  ``X-ClickHouse-Exception-Code`` header and ClickHouse's HTTP status for that code (mostly 500),
  so clickhouse-connect raises ``DatabaseError`` with the server's text.
* Headers clickhouse-connect reads: ``X-ClickHouse-Summary``, ``-Query-Id``, ``-Format``,
  ``-Timezone``.

Not supported (answered with ``Code: 48 NOT_IMPLEMENTED``): ClickHouse-native block compression
(``compress=1`` / ``decompress=1``; clickhouse-connect uses HTTP ``Content-Encoding`` instead).
Results are buffered, not streamed, and one chdb session serves everything: requests run one at a
time under a lock (chdb sessions are not thread-safe), each with its own settings applied and undone.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import json
import logging
import lzma
import re
import secrets
import signal
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import parse_qsl, urlsplit

from trading_platform.sql import quote_identifier, quote_string
from trading_platform.storage.clickhouse import (
    DEFAULT_LOCK_TIMEOUT_S,
    error_code,
    open_chdb_session,
)

if TYPE_CHECKING:
    from chdb.session import Session

__all__ = ["ChdbHttpServer", "main"]

log = logging.getLogger(__name__)

# HTTP-interface parameters that are not settings (ClickHouse's HTTPHandler reserves the same names).
_TRANSPORT_PARAMS = frozenset({
    "query", "database", "default_format", "user", "password", "quota_key", "query_id", "session_id",
    "session_timeout", "session_check", "compress", "decompress", "buffer_size", "wait_end_of_query",
    "client_protocol_version", "role", "stacktrace", "close_session", "readonly",
})
# ClickHouse output formats that chdb's Python API intercepts; a server does not know them.
_CHDB_PSEUDO_FORMATS = frozenset({"arrowtable", "dataframe", "datastore", "debug"})
# First keywords of statements that may run in read-only mode (GET requests, readonly=1|2).
_READ_ONLY_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN", "SET",
                                 "USE", "VALUES", "CHECK"})
# First keywords of statements that produce a result set (and so an X-ClickHouse-Format header).
_RESULT_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN", "VALUES",
                              "CHECK", "FROM", "TABLE"})
_TEXT_CONTENT_TYPES = {
    "tabseparated": "text/tab-separated-values; charset=UTF-8",
    "tsv": "text/tab-separated-values; charset=UTF-8",
    "csv": "text/csv; charset=UTF-8; header=absent",
    "json": "application/json; charset=UTF-8",
    "jsoncompact": "application/json; charset=UTF-8",
    "jsoneachrow": "application/x-ndjson; charset=UTF-8",
    "pretty": "text/plain; charset=UTF-8",
}
# ClickHouse's exceptionCodeToHTTPStatus, for the codes this server can produce; everything else is 500.
# Never 429/503/504: clickhouse-connect retries those.
_HTTP_STATUS_BY_CODE = {
    516: 401, 194: 401,  # AUTHENTICATION_FAILED, REQUIRED_PASSWORD
    164: 403, 497: 403,  # READONLY, ACCESS_DENIED
    6: 400, 27: 400, 62: 400, 117: 400, 53: 400, 271: 400,  # parse/syntax/data errors, CANNOT_DECOMPRESS
    60: 404, 81: 404, 46: 404, 47: 404, 50: 404, 73: 404, 115: 404, 372: 404,  # UNKNOWN_*, SESSION_NOT_FOUND
    48: 501,  # NOT_IMPLEMENTED
}
_ERROR_NAMES = {1001: "STD_EXCEPTION", 48: "NOT_IMPLEMENTED", 62: "SYNTAX_ERROR", 73: "UNKNOWN_FORMAT",
                164: "READONLY", 271: "CANNOT_DECOMPRESS", 372: "SESSION_NOT_FOUND",
                516: "AUTHENTICATION_FAILED", 210: "NETWORK_ERROR"}

_SKIP = r"(?:\s|--[^\n]*(?:\n|\Z)|/\*.*?\*/|\()*"  # whitespace, comments, opening parentheses
_KEYWORD_RE = re.compile(_SKIP + r"([A-Za-z]+)", re.S)
# An INSERT whose data follows its FORMAT clause. The data may be binary, so this runs on bytes and the
# lazy match stops at the first FORMAT; statements that carry their own data (VALUES, SELECT) are not
# this kind and go to chdb as text.
_INSERT_FORMAT_RE = re.compile(
    rb"\A" + _SKIP.encode() + rb"INSERT\s+INTO\s+(?P<target>.*?)\s+FORMAT\s+(?P<fmt>[A-Za-z_][A-Za-z0-9_]*)",
    re.S | re.I,
)
_OWN_DATA_RE = re.compile(rb"\b(?:VALUES|SELECT|WITH)\b", re.I)
_TRAILING_FORMAT_RE = re.compile(r"\bFORMAT\s+([A-Za-z_][A-Za-z0-9_]*)\s*;?\s*\Z", re.I)
_SETS_READONLY_RE = re.compile(r"\breadonly\s*=", re.I)
_NESTED_PREFIX_RE = re.compile(r"^(Code: (\d+)\. DB::Exception: )(?:Code: \2\. DB::Exception: )+")


class ServerError(Exception):
    """An error answered in ClickHouse's format: ``Code: N. DB::Exception: ...``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

    @classmethod
    def new(cls, code: int, text: str) -> ServerError:
        return cls(code, f"Code: {code}. DB::Exception: {text}. ({_ERROR_NAMES.get(code, 'UNKNOWN')})")

    @classmethod
    def from_chdb(cls, exc: BaseException) -> ServerError:
        text = str(exc)
        start = text.find("Code: ")  # drop chdb's "Streaming insert finish failed: " style prefixes
        if start > 0:
            text = text[start:]
        text = _NESTED_PREFIX_RE.sub(r"\1", text)  # chdb sometimes nests the same "Code: N" prefix
        code = error_code(text)
        if code is None:
            return cls.new(1001, text)
        return cls(code, text)


# ------------------------------------------------------------------------------------------- engine


@dataclass
class _Session:
    """What a ClickHouse HTTP session keeps between requests: SET settings and the USE database."""

    settings: dict[str, str] = field(default_factory=dict)
    database: str | None = None
    timeout_s: float = 60.0
    last_used: float = field(default_factory=time.monotonic)


@dataclass
class QueryRequest:
    """One query as the HTTP layer parsed it; ``text`` is the query parameter and body joined."""

    text: bytes
    settings: dict[str, str] = field(default_factory=dict)
    bind: dict[str, str] = field(default_factory=dict)
    database: str | None = None
    default_format: str = "TabSeparated"
    session_id: str | None = None
    session_timeout_s: float | None = None
    session_check: bool = False
    read_only: bool = False
    external: list[tuple[str, str, str, bytes]] = field(default_factory=list)  # name, structure, fmt, data


@dataclass
class QueryResult:
    body: bytes
    fmt: str | None  # output format, None for statements without a result set
    summary: dict[str, str]
    timezone: str


class ChdbEngine:
    """One chdb session shared by all requests: serialized, with per-request settings undone after.

    chdb keeps ``SET`` state in the session, so a request's settings (an insert's
    ``insert_deduplication_token``!) must not leak into the next request. The engine remembers what it
    applied and changes only the difference for the next request, so a client that sends the same
    settings every time (clickhouse-connect does) costs no extra statements.
    """

    def __init__(self, path: Path, *, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> None:
        self.path = path
        self._session: Session | None = open_chdb_session(path, lock_timeout_s=lock_timeout_s)
        self._lock = threading.Lock()
        row = self._run("SELECT version(), timezone(), currentDatabase()", "TabSeparated")
        self.version, self.timezone, self._default_db = row.bytes().decode().rstrip("\n").split("\t")
        # Settings chdb itself runs with (e.g. implicit_select=1): the state every request starts from.
        self._baseline = self._changed_settings()
        self._applied: dict[str, str] = {}  # settings SET beyond the baseline right now
        self._current_db = self._default_db
        self._sessions: dict[str, _Session] = {}

    # -- chdb calls (caller holds self._lock) ---------------------------------------------------------
    def _chdb(self) -> Session:
        if self._session is None:
            raise ServerError.new(210, "the server is shutting down")
        return self._session

    def _run(self, sql: str, fmt: str = "TabSeparated", params: dict[str, str] | None = None) -> Any:
        try:
            return self._chdb().query(sql, fmt, params=params or None)
        except ServerError:
            raise
        except Exception as exc:
            raise ServerError.from_chdb(exc) from exc

    def _changed_settings(self) -> dict[str, str]:
        out = self._run("SELECT name, value FROM system.settings WHERE changed", "JSONCompactColumns")
        names, values = json.loads(out.bytes()) if out.bytes() else ([], [])
        # `database` shows up as a changed setting; it is tracked as the current database instead.
        return {k: v for k, v in zip(names, values, strict=True) if k != "database"}

    def _apply_settings(self, desired: dict[str, str]) -> None:
        assignments = [f"{k} = {quote_string(v)}" for k, v in desired.items() if self._applied.get(k) != v]
        assignments += [self._reset_assignment(k) for k in self._applied if k not in desired]
        if not assignments:
            return
        try:
            self._run("SET " + ", ".join(assignments))
        except ServerError:
            self._resync()  # a failed SET may have applied part of its list
            raise
        self._applied = dict(desired)

    def _reset_assignment(self, name: str) -> str:
        base = self._baseline.get(name)
        return f"{name} = {quote_string(base)}" if base is not None else f"{name} = DEFAULT"

    def _resync(self) -> None:
        """Put every setting back to the baseline after an unknown partial change."""
        drift = [k for k, v in self._changed_settings().items() if self._baseline.get(k) != v]
        drift += [k for k in self._baseline if k not in drift]
        for name in drift:
            with contextlib.suppress(ServerError):
                self._run("SET " + self._reset_assignment(name))
        self._applied = {}

    def _use(self, database: str) -> None:
        if database != self._current_db:
            self._run(f"USE {quote_identifier(database)}")
            self._current_db = database

    def _session_state(self, req: QueryRequest) -> _Session | None:
        now = time.monotonic()
        for sid in [s for s, st in self._sessions.items() if now - st.last_used > st.timeout_s]:
            del self._sessions[sid]
        if not req.session_id:
            return None
        state = self._sessions.get(req.session_id)
        if state is None:
            if req.session_check:
                raise ServerError.new(372, f"Session {req.session_id} not found")
            state = self._sessions[req.session_id] = _Session()
        if req.session_timeout_s is not None:
            state.timeout_s = req.session_timeout_s
        state.last_used = now
        return state

    # -- the request -----------------------------------------------------------------------------------
    def execute(self, req: QueryRequest) -> QueryResult:
        with self._lock:
            state = self._session_state(req)
            desired = {**(state.settings if state else {}), **req.settings}
            self._apply_settings(desired)
            try:
                self._use(req.database or (state.database if state else None) or self._default_db)
                with self._external_tables(req.external):
                    result = self._execute(req, state, desired)
            finally:
                # A database named by one request must not become the next request's default (it may
                # even be dropped meanwhile).
                with contextlib.suppress(ServerError):
                    self._use(self._default_db)
            result.timezone = desired.get("session_timezone") or self.timezone
            return result

    def _execute(self, req: QueryRequest, state: _Session | None, desired: dict[str, str]) -> QueryResult:
        insert = _INSERT_FORMAT_RE.match(req.text)
        if insert and not _OWN_DATA_RE.search(insert.group("target")):
            if req.read_only:
                raise _readonly_error()
            return self._insert(insert, req.text)
        try:
            sql = req.text.decode()
        except UnicodeDecodeError as exc:
            raise ServerError.new(62, f"Syntax error: the query is not valid UTF-8 ({exc})") from exc
        if not sql.strip():
            raise ServerError.new(62, "Empty query")
        keyword = _first_keyword(sql)
        if req.read_only and keyword not in _READ_ONLY_KEYWORDS:
            raise _readonly_error()
        if keyword == "SET" and _SETS_READONLY_RE.search(sql):
            # Readonly would also block this server from undoing the request's settings.
            raise ServerError.new(48, "changing 'readonly' with SET is not supported by this server")
        out_fmt = req.default_format
        trailing = _TRAILING_FORMAT_RE.search(sql)
        fmt = trailing.group(1) if trailing else out_fmt
        if fmt.lower() in _CHDB_PSEUDO_FORMATS:
            raise ServerError.new(73, f"Unknown format {fmt}")
        res = self._run(sql, out_fmt, req.bind)
        body = res.bytes()
        if keyword == "SET":
            self._remember_set(state, desired)
        elif keyword == "USE":
            self._current_db = self._run("SELECT currentDatabase()").bytes().decode().strip()
            if state is not None:
                state.database = self._current_db
        produces_result = keyword in _RESULT_KEYWORDS or bool(body)
        summary = _summary(res.rows_read(), res.bytes_read(), res.rows_written(), res.bytes_written(),
                           res.elapsed())
        if produces_result:
            summary["result_rows"] = summary["read_rows"]
            summary["result_bytes"] = str(len(body))
        return QueryResult(body, fmt if produces_result else None, summary, self.timezone)

    def _remember_set(self, state: _Session | None, desired: dict[str, str]) -> None:
        """After a SET statement: keep what it changed in the HTTP session (if any) and undo it later."""
        changed = {
            k: v for k, v in self._changed_settings().items() if v != desired.get(k, self._baseline.get(k))
        }
        if state is not None:
            state.settings.update(changed)
        # Whatever the statement changed is now applied and is reset before a request that lacks it.
        self._applied = {**desired, **changed}

    def _insert(self, match: re.Match[bytes], text: bytes) -> QueryResult:
        target = match.group("target").decode(errors="strict").strip()
        fmt = match.group("fmt").decode()
        data = memoryview(text)[_data_start(text, match.end()):]
        if fmt.lower() in _CHDB_PSEUDO_FORMATS:
            raise ServerError.new(73, f"Unknown format {fmt}")
        if not len(data):
            return QueryResult(b"", None, _summary(0, 0, 0, 0, 0.0), self.timezone)
        done = self._send_insert(f"INSERT INTO {target}", fmt, data)
        summary = _summary(done.rows_written, done.bytes_written, done.rows_written, done.bytes_written,
                           done.elapsed)
        return QueryResult(b"", None, summary, self.timezone)

    def _send_insert(self, statement: str, fmt: str, data: bytes | memoryview) -> Any:
        """Feed ``data`` to chdb's parser for input format ``fmt``, as a server reads an INSERT body."""
        try:
            inserter = self._chdb().send_insert(statement, fmt)
        except ServerError:
            raise
        except Exception as exc:
            raise ServerError.from_chdb(exc) from exc
        with inserter:  # leaving without finish() cancels the insert
            try:
                inserter.append(data)
                return inserter.finish()
            except Exception as exc:
                raise ServerError.from_chdb(exc) from exc

    @contextlib.contextmanager
    def _external_tables(self, external: list[tuple[str, str, str, bytes]]) -> Iterator[None]:
        """ClickHouse "external data": each file becomes a temporary table for this one query."""
        created: list[str] = []
        try:
            for name, structure, fmt, data in external:
                table = quote_identifier(name)
                self._run(f"CREATE TEMPORARY TABLE {table} ({structure}) ENGINE = Memory")
                created.append(table)
                if data:
                    self._send_insert(f"INSERT INTO {table}", fmt, data)
            yield
        finally:
            for table in created:
                with contextlib.suppress(ServerError):
                    self._run(f"DROP TEMPORARY TABLE IF EXISTS {table}")

    def close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()


def _first_keyword(sql: str) -> str:
    match = _KEYWORD_RE.match(sql)
    return match.group(1).upper() if match else ""


def _data_start(text: bytes, pos: int) -> int:
    """Where INSERT data begins: after the first newline following FORMAT <name>, else after whitespace.

    (ClickHouse's ParserInsertQuery rule, so binary data that starts with a space byte stays intact.)
    """
    while pos < len(text) and text[pos] in b" \t\r\n\f\v":
        pos += 1
        if text[pos - 1] == ord("\n"):
            break
    return pos


def _readonly_error() -> ServerError:
    return ServerError.new(164, "Cannot execute query in readonly mode. For queries over HTTP, method GET "
                                "implies readonly. You should use method POST for modifying queries")


def _summary(read_rows: int, read_bytes: int, written_rows: int, written_bytes: int,
             elapsed_s: float) -> dict[str, str]:
    # X-ClickHouse-Summary carries every number as a string.
    return {
        "read_rows": str(read_rows), "read_bytes": str(read_bytes),
        "written_rows": str(written_rows), "written_bytes": str(written_bytes),
        "total_rows_to_read": str(read_rows), "result_rows": "0", "result_bytes": "0",
        "elapsed_ns": str(int(elapsed_s * 1e9)),
    }


# -------------------------------------------------------------------------------------- compression


def _lz4_frames(data: bytes) -> bytes:
    import lz4.frame

    # clickhouse-connect compresses each insert block as its own frame, so the body is a frame sequence.
    out: list[bytes] = []
    rest = data
    while rest:
        decompressor = lz4.frame.LZ4FrameDecompressor()
        out.append(decompressor.decompress(rest))
        if not decompressor.eof:
            raise ValueError("truncated lz4 frame")
        rest = decompressor.unused_data
    return b"".join(out)


def _zstd_decompress(data: bytes) -> bytes:
    try:
        from backports import zstd  # what clickhouse-connect uses on Python < 3.14
    except ImportError:
        import zstandard

        return bytes(zstandard.ZstdDecompressor().decompressobj().decompress(data))
    return bytes(zstd.decompress(data))


def _deflate_decompress(data: bytes) -> bytes:
    try:
        return zlib.decompress(data)
    except zlib.error:
        return zlib.decompress(data, -zlib.MAX_WBITS)  # raw deflate, as some clients send it


def _brotli_decompress(data: bytes) -> bytes:
    import brotli

    return bytes(brotli.decompress(data))


def _lz4_compress(data: bytes) -> bytes:
    import lz4.frame

    return bytes(lz4.frame.compress(data))


def _zstd_compress(data: bytes) -> bytes:
    from backports import zstd

    return bytes(zstd.compress(data))


_DECODERS: dict[str, Callable[[bytes], bytes]] = {
    "lz4": _lz4_frames, "zstd": _zstd_decompress, "gzip": gzip.decompress, "x-gzip": gzip.decompress,
    "deflate": _deflate_decompress, "br": _brotli_decompress, "xz": lzma.decompress,
}
_ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "lz4": _lz4_compress, "zstd": _zstd_compress, "gzip": gzip.compress,
    "deflate": zlib.compress, "xz": lzma.compress,
}


def _available(codec: str) -> bool:
    module = {"lz4": "lz4.frame", "zstd": "backports.zstd", "br": "brotli"}.get(codec)
    if module is None:
        return True
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def decode_body(body: bytes, content_encoding: str) -> bytes:
    """Undo ``Content-Encoding`` (applied in the listed order, so undone in reverse)."""
    for codec in reversed([c.strip().lower() for c in content_encoding.split(",") if c.strip()]):
        if codec == "identity":
            continue
        decoder = _DECODERS.get(codec)
        if decoder is None:
            raise ServerError.new(271, f"Unknown HTTP Content-Encoding {codec!r}")
        try:
            body = decoder(body)
        except ImportError as exc:
            raise ServerError.new(271, f"Content-Encoding {codec} is not available: {exc}") from exc
        except Exception as exc:
            raise ServerError.new(271, f"Cannot decompress the {codec} request body: {exc}") from exc
    return body


def choose_response_encoding(accept_encoding: str) -> str | None:
    """The first codec in ``Accept-Encoding`` order that this server can produce."""
    for item in accept_encoding.split(","):
        codec = item.split(";", 1)[0].strip().lower()
        if codec in _ENCODERS and _available(codec):
            return codec
    return None


# --------------------------------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: clickhouse-connect pools connections
    server_version = "chdb-http"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # stdlib would print every request
        log.debug("%s - " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._handle(read_only=True)

    def do_POST(self) -> None:
        self._handle(read_only=False)

    def _handle(self, *, read_only: bool) -> None:
        url = urlsplit(self.path)
        query_id = ""
        try:
            body = self._read_body()
            route = url.path.rstrip("/")
            if route in ("/ping", "/replicas_status"):
                self._reply(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
                return
            if route not in ("", "/query"):
                self._reply(404, f"There is no handle {url.path}\n".encode(),
                            {"Content-Type": "text/plain; charset=UTF-8"})
                return
            params = dict(parse_qsl(url.query, keep_blank_values=True))
            self._authenticate(params)
            body = decode_body(body, self.headers.get("Content-Encoding", ""))
            external: list[tuple[str, str, str, bytes]] = []
            if self.headers.get_content_type() == "multipart/form-data":
                body, external = _parse_multipart(self.headers.get("Content-Type", ""), body, params)
            query_id = params.get("query_id") or str(uuid.uuid4())
            if params.get("compress", "0") not in ("", "0") or params.get("decompress", "0") not in ("", "0"):
                raise ServerError.new(48, "ClickHouse-native compression (compress/decompress=1) is not "
                                          "supported by this server; use HTTP Content-Encoding")
            query_param = params.get("query", "")
            text = (query_param.encode() + b"\n" + body) if query_param and body else (
                query_param.encode() or body)
            if not text.strip() and read_only:
                self._reply(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
                return
            request = _query_request(text, params, external, read_only=read_only)
            result = self.server.engine.execute(request)
        except ServerError as err:
            self._reply_error(err, query_id)
            return
        except (ConnectionError, TimeoutError):
            self.close_connection = True
            return
        except Exception as exc:  # a bug here must still answer like ClickHouse, not drop the socket
            log.exception("chdb HTTP server failed on %s", self.path)
            self._reply_error(ServerError.new(1001, f"{type(exc).__name__}: {exc}"), query_id)
            return
        headers = {
            "Content-Type": _content_type(result.fmt),
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": result.timezone,
            "X-ClickHouse-Summary": json.dumps(result.summary, separators=(",", ":")),
            "X-ClickHouse-Server-Display-Name": "chdb-http",
        }
        if result.fmt:
            headers["X-ClickHouse-Format"] = result.fmt
        body_out = result.body
        if body_out and params.get("enable_http_compression") == "1":
            codec = choose_response_encoding(self.headers.get("Accept-Encoding", ""))
            if codec:
                body_out = _ENCODERS[codec](body_out)
                headers["Content-Encoding"] = codec
        self._reply(200, body_out, headers)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                try:
                    size = int(size_line.split(b";", 1)[0].strip() or b"x", 16)
                except ValueError:
                    self.close_connection = True
                    raise ServerError.new(62, "malformed chunked request body") from None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)  # the CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _authenticate(self, params: dict[str, str]) -> None:
        expected = self.server.credentials
        if expected is None:
            return  # open server on loopback: any user name, any password
        user, password = params.get("user", "default"), params.get("password", "")
        if "X-ClickHouse-User" in self.headers:
            user = self.headers["X-ClickHouse-User"]
            password = self.headers.get("X-ClickHouse-Key", "")
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            with contextlib.suppress(ValueError):
                user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
        if not (secrets.compare_digest(user.encode(), expected[0].encode())
                and secrets.compare_digest(password.encode(), expected[1].encode())):
            raise ServerError.new(516, f"{user}: Authentication failed: password is incorrect, or there is "
                                       "no user with such name")

    def _reply_error(self, err: ServerError, query_id: str) -> None:
        text = str(err)
        body = (text if text.endswith("\n") else text + "\n").encode()
        headers = {"Content-Type": "text/plain; charset=UTF-8", "X-ClickHouse-Exception-Code": str(err.code)}
        if query_id:
            headers["X-ClickHouse-Query-Id"] = query_id
        self._reply(_HTTP_STATUS_BY_CODE.get(err.code, 500), body, headers)

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (ConnectionError, TimeoutError):
            self.close_connection = True


def _content_type(fmt: str | None) -> str:
    if fmt is None:
        return "text/plain; charset=UTF-8"
    return _TEXT_CONTENT_TYPES.get(fmt.lower(), "application/octet-stream")


def _query_request(text: bytes, params: dict[str, str], external: list[tuple[str, str, str, bytes]],
                   *, read_only: bool) -> QueryRequest:
    external_names = {name for name, *_ in external}
    settings: dict[str, str] = {}
    bind: dict[str, str] = {}
    for key, value in params.items():
        if key.startswith("param_"):
            bind[key[len("param_"):]] = value
        elif key in _TRANSPORT_PARAMS or key.rpartition("_")[0] in external_names:
            continue
        elif key == "enable_http_compression":
            continue  # acted on by the HTTP layer; chdb has nothing to compress
        else:
            settings[key] = value
    timeout = params.get("session_timeout")
    try:
        session_timeout_s = float(timeout) if timeout else None
    except ValueError:
        raise ServerError.new(62, f"Invalid session timeout: {timeout!r}") from None
    readonly = params.get("readonly", "0") not in ("", "0")
    return QueryRequest(
        text=text, settings=settings, bind=bind, database=params.get("database") or None,
        default_format=params.get("default_format") or "TabSeparated",
        session_id=params.get("session_id") or None, session_timeout_s=session_timeout_s,
        session_check=params.get("session_check", "0") not in ("", "0"),
        read_only=read_only or readonly, external=external,
    )


def _parse_multipart(content_type: str, body: bytes, params: dict[str, str]
                     ) -> tuple[bytes, list[tuple[str, str, str, bytes]]]:
    """Form fields become parameters (``query``, ``param_*``); file fields become external tables."""
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    files: list[tuple[str, bytes]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if part.get_filename() is None:
            params[name] = data.decode()
        else:
            files.append((name, data))
    external = []
    for name, data in files:
        structure = params.get(f"{name}_structure")
        if structure is None and f"{name}_types" in params:
            types = [t.strip() for t in params[f"{name}_types"].split(",")]
            structure = ", ".join(f"_{i + 1} {t}" for i, t in enumerate(types))
        if structure is None:
            raise ServerError.new(62, f"Neither structure nor types have not been provided for external "
                                      f"table {name}")
        external.append((name, structure, params.get(f"{name}_format", "TabSeparated"), data))
    return b"", external


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], engine: ChdbEngine, credentials: tuple[str, str] | None
                 ) -> None:
        self.engine = engine
        self.credentials = credentials
        super().__init__(address, _Handler)


class ChdbHttpServer:
    """ClickHouse's HTTP interface on ``host:port`` (port 0: an ephemeral port), backed by chdb on ``path``.

    ``start()`` opens the folder (waiting up to ``lock_timeout_s`` for another process to release it)
    and serves from a background thread; ``stop()`` closes the folder. With ``user``/``password`` the
    server requires them; without, it accepts any credentials (it listens on loopback by default).
    """

    def __init__(self, path: Path | str, *, host: str = "127.0.0.1", port: int = 0, user: str | None = None,
                 password: str | None = None, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.host = host
        self._port = port
        self._credentials = (user or "default", password or "") if (user or password) else None
        self._lock_timeout_s = lock_timeout_s
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("ChdbHttpServer is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port`` (credentials not included)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        if self._server is not None:
            return
        engine = ChdbEngine(self.path, lock_timeout_s=self._lock_timeout_s)
        try:
            server = _Server((self.host, self._port), engine, self._credentials)
        except BaseException:
            engine.close()
            raise
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"chdb-http-{self.port}", daemon=True)
        self._thread.start()
        log.info("ClickHouse HTTP interface for %s on %s", self.path, self.url)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()  # returns once serve_forever has left its loop
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        server.engine.close()  # waits for a request still inside chdb

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m trading_platform_tests.storage.clickhouse_http_server FOLDER``: serve until SIGINT/SIGTERM.

    Prints the URL as the first stdout line. ``--exit-on-stdin-eof`` also stops when stdin closes, so a
    parent (a test fixture) that dies cannot leave the folder locked by an orphan.
    """
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("path", type=Path, help="chdb database folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: an ephemeral port")
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--lock-timeout", type=float, default=DEFAULT_LOCK_TIMEOUT_S)
    parser.add_argument("--exit-on-stdin-eof", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.exit_on_stdin_eof:

        def watch_stdin() -> None:
            sys.stdin.buffer.read()  # returns at EOF: the parent closed the pipe or died
            stop.set()

        threading.Thread(target=watch_stdin, daemon=True).start()
    with ChdbHttpServer(args.path.resolve(), host=args.host, port=args.port, user=args.user,
                        password=args.password, lock_timeout_s=args.lock_timeout) as server:
        print(server.url, flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
