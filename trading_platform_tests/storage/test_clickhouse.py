"""The ClickHouse storage layer against real engines: chdb in a temporary folder, and clickhouse-connect
against the chdb-backed ClickHouse HTTP server on loopback. Both run the same DDL and queries."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import clickhouse_connect
import pyarrow as pa
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from clickhouse_connect.driver.external import ExternalData

from trading_platform import schema
from trading_platform.storage.clickhouse import (
    ChdbClickHouse,
    ClickHouse,
    ClickHouseError,
    ClickHouseUnavailable,
    ensure_schema,
    open_clickhouse,
)
from trading_platform_tests.storage.clickhouse_fixtures import HttpServerProcess, start_http_server_process

TRADES = schema.MARKET_TRADES.qualified_name


def trades(n: int, *, tag: str = "t", start: datetime | None = None) -> pa.Table:
    """``n`` market trades inside the table's 90-day TTL, with awkward values in every column."""
    # Whole-second "now" plus explicit microseconds: the round trip must keep every microsecond.
    base = start or datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    stamps = [base + timedelta(seconds=i, microseconds=(i * 7919 + 1) % 1_000_000) for i in range(n)]
    return pa.table(
        {
            "exchange": [("binance", "coinbase", "kraken")[i % 3] for i in range(n)],
            "symbol": [f"BTC-USD{'' if i % 2 else 'T'}" for i in range(n)],
            "native_symbol": [f"XBT/USD é✓ {i}" for i in range(n)],
            "trade_id": [f"{tag}-{i:06d}" for i in range(n)],
            "price": [0.1 + 0.2 + i for i in range(n)],
            "quantity": [1e-300 if i % 2 else 123456789.123456789 for i in range(n)],
            "side": ["buy" if i % 2 else "sell" for i in range(n)],
            "timestamp": pa.array(stamps, schema.UTC_MICROS),
            "received_at": pa.array([s + timedelta(microseconds=999_999) for s in stamps], schema.UTC_MICROS),
            "batch_id": [f"batch-{tag}" if i else "" for i in range(n)],
        },
        schema=schema.MARKET_TRADES.arrow_schema,
    )


def count(ch: ClickHouse, table: str = TRADES) -> int:
    return int(ch.query_arrow(f"SELECT count() AS n FROM {table}").column("n")[0].as_py())


@pytest.fixture
def ch(clickhouse: ClickHouse) -> ClickHouse:
    ensure_schema(clickhouse)
    return clickhouse


# ------------------------------------------------------------------------------------ both backends


def test_ensure_schema_creates_every_table_with_its_layout(clickhouse: ClickHouse) -> None:
    ensure_schema(clickhouse)
    rows = clickhouse.query_arrow(
        f"SELECT name, engine, sorting_key, partition_key, create_table_query FROM system.tables "
        f"WHERE database = '{schema.DATABASE}' ORDER BY name"
    ).to_pylist()
    by_name = {row["name"]: row for row in rows}
    assert set(by_name) == {t.name for t in schema.ALL_TABLES}
    for table in schema.ALL_TABLES:
        row = by_name[table.name]
        assert row["engine"] == "MergeTree"
        assert row["sorting_key"] == ", ".join(table.order_by)
        assert row["partition_key"] == table.partition_by
        for column in table.columns:
            assert f"`{column.name}` {column.clickhouse_type}" in row["create_table_query"]
    trades_ddl = by_name["market_trades"]["create_table_query"]
    assert "TTL toDateTime(timestamp) + toIntervalDay(90)" in trades_ddl
    assert "non_replicated_deduplication_window = 100000" in trades_ddl
    assert "TTL toDateTime(received_at) + toIntervalDay(90)" in by_name["quarantine"]["create_table_query"]
    assert "TTL" not in by_name["load_manifest"]["create_table_query"]


def test_ensure_schema_is_idempotent(ch: ClickHouse) -> None:
    ch.insert_arrow(TRADES, trades(3))
    ensure_schema(ch)
    assert count(ch) == 3


def test_insert_arrow_round_trips_every_column_exactly(ch: ClickHouse) -> None:
    data = trades(50)
    ch.insert_arrow(TRADES, data, dedup_token="round-trip")
    back = ch.query_arrow(f"SELECT * FROM {TRADES} ORDER BY trade_id")
    assert back.schema == data.schema  # string / double / timestamp[us, tz=UTC], same column order
    assert back.to_pylist() == data.to_pylist()
    assert back.equals(data)


def test_insert_arrow_maps_columns_by_name(ch: ClickHouse) -> None:
    data = trades(4)
    ch.insert_arrow(TRADES, data.select(list(reversed(data.column_names))))
    assert ch.query_arrow(f"SELECT * FROM {TRADES} ORDER BY trade_id").equals(data)


def test_same_dedup_token_twice_inserts_once(ch: ClickHouse) -> None:
    token = "raw/trades/exchange=binance/date=2024-01-01/b'1\\x.parquet"  # quotes and backslashes too
    ch.insert_arrow(TRADES, trades(20, tag="a"), dedup_token=token)
    ch.insert_arrow(TRADES, trades(20, tag="a"), dedup_token=token)
    assert count(ch) == 20


def test_same_dedup_token_drops_a_large_multi_partition_retry(ch: ClickHouse) -> None:
    # Spans two monthly partitions and many Arrow batches: the retry must still be dropped whole.
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=40)
    data = trades(200_000, tag="big", start=start)
    data = pa.concat_tables([data.slice(0, 100_000), trades(100_000, tag="big2")])
    ch.insert_arrow(TRADES, data, dedup_token="big")
    ch.insert_arrow(TRADES, data, dedup_token="big")
    assert count(ch) == 200_000


def test_different_dedup_tokens_both_land(ch: ClickHouse) -> None:
    data = trades(5)
    ch.insert_arrow(TRADES, data, dedup_token="first")
    ch.insert_arrow(TRADES, data, dedup_token="second")
    assert count(ch) == 10


def test_empty_insert_is_a_no_op(ch: ClickHouse) -> None:
    ch.insert_arrow(TRADES, trades(0), dedup_token="empty")
    assert count(ch) == 0


def test_manifest_rows_round_trip(ch: ClickHouse) -> None:
    rows = pa.Table.from_pylist(
        [{"table_name": "market_trades", "lake_key": "raw/trades/x.parquet", "batch_id": "x", "rows": 2**63,
          "checksum": "abc", "loaded_at": datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)}],
        schema=schema.LOAD_MANIFEST.arrow_schema,
    )
    ch.insert_arrow(schema.LOAD_MANIFEST.qualified_name, rows)
    assert ch.query_arrow(f"SELECT * FROM {schema.LOAD_MANIFEST.qualified_name}").equals(rows)


def test_query_error_raises_with_the_clickhouse_message(ch: ClickHouse) -> None:
    with pytest.raises(ClickHouseError) as info:
        ch.query_arrow("SELECT * FROM trading.no_such_table")
    assert info.value.code == 60
    assert str(info.value).startswith("Code: 60. DB::Exception:")
    assert "UNKNOWN_TABLE" in str(info.value)


def test_command_error_raises_with_the_clickhouse_message(ch: ClickHouse) -> None:
    with pytest.raises(ClickHouseError, match=r"Code: 62\. DB::Exception: Syntax error") as info:
        ch.command("CREATE TABLE trading.broken (")
    assert info.value.code == 62


def test_insert_error_raises_with_the_clickhouse_message(ch: ClickHouse) -> None:
    with pytest.raises(ClickHouseError, match="UNKNOWN_TABLE") as info:
        ch.insert_arrow("trading.no_such_table", trades(1))
    assert info.value.code == 60


def test_open_clickhouse_rejects_unknown_schemes() -> None:
    with pytest.raises(ValueError, match="chdb://, http:// or https://"):
        open_clickhouse("postgres://user:pw@host/db")
    with pytest.raises(ValueError, match="chdb:///absolute/folder"):
        open_clickhouse("chdb://relative/folder")


# ---------------------------------------------------------------------------------------- chdb only

_LOCK_CHILD = textwrap.dedent("""
    import json, sys, time
    from trading_platform.storage.clickhouse import ClickHouseUnavailable, open_clickhouse
    url, timeout = sys.argv[1], float(sys.argv[2])
    print("ready", flush=True)
    started = time.monotonic()
    try:
        with open_clickhouse(url, lock_timeout_s=timeout) as ch:
            n = ch.query_arrow("SELECT count() AS n FROM trading.market_trades").column("n")[0].as_py()
        print(json.dumps({"ok": True, "rows": n, "waited": time.monotonic() - started}), flush=True)
    except ClickHouseUnavailable as exc:
        print(json.dumps({"ok": False, "error": str(exc), "waited": time.monotonic() - started}), flush=True)
""")


def _child(url: str, timeout_s: float) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", _LOCK_CHILD, url, str(timeout_s)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    return child


def _child_result(child: subprocess.Popen[str]) -> dict[str, object]:
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    result = json.loads(out)
    assert isinstance(result, dict)
    return result


def test_second_process_waits_for_the_folder_and_opens_once_it_is_closed(chdb_clickhouse_url: str) -> None:
    holder = open_clickhouse(chdb_clickhouse_url)
    try:
        ensure_schema(holder)
        holder.insert_arrow(TRADES, trades(2))
        child = _child(chdb_clickhouse_url, timeout_s=30)
        time.sleep(0.6)  # the child is now retrying against our lock
    finally:
        holder.close()
    result = _child_result(child)
    assert result["ok"] is True
    assert result["rows"] == 2
    assert isinstance(result["waited"], float)
    assert result["waited"] >= 0.4  # it waited for the lock instead of failing


def test_second_process_gives_up_with_a_clear_message_when_the_folder_stays_locked(
    chdb_clickhouse_url: str,
) -> None:
    with open_clickhouse(chdb_clickhouse_url) as holder:
        ensure_schema(holder)
        result = _child_result(_child(chdb_clickhouse_url, timeout_s=0.5))
    assert result["ok"] is False
    assert isinstance(result["error"], str)
    assert "in use by another process for more than 0.5 s" in result["error"]
    assert chdb_clickhouse_url in result["error"]


_WRITER_CHILD = textwrap.dedent("""
    import sys
    from datetime import UTC, datetime
    import pyarrow as pa
    from trading_platform import schema
    from trading_platform.storage.clickhouse import open_clickhouse
    url, name, cycles = sys.argv[1], sys.argv[2], int(sys.argv[3])
    now = datetime.now(UTC)
    for i in range(cycles):
        row = {"exchange": name, "symbol": "BTC-USD", "native_symbol": "BTCUSD", "trade_id": str(i),
               "price": 1.0, "quantity": 1.0, "side": "buy", "timestamp": now, "received_at": now,
               "batch_id": f"{name}-{i}"}
        with open_clickhouse(url, lock_timeout_s=30) as ch:  # hold the folder for one step only
            ch.insert_arrow("trading.market_trades",
                            pa.Table.from_pylist([row], schema=schema.MARKET_TRADES.arrow_schema),
                            dedup_token=f"{name}-{i}")
""")


@pytest.mark.slow  # processes taking turns on chdb: ~8 s: make test runs it, make test-fast does not
def test_processes_contending_for_the_folder_take_turns(chdb_clickhouse_url: str) -> None:
    with open_clickhouse(chdb_clickhouse_url) as ch:
        ensure_schema(ch)
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER_CHILD, chdb_clickhouse_url, f"w{n}", "6"],
                                stderr=subprocess.PIPE, text=True) for n in range(3)]
    for writer in writers:
        _, err = writer.communicate(timeout=90)
        assert writer.returncode == 0, err
    with open_clickhouse(chdb_clickhouse_url) as ch:
        assert count(ch) == 18


def test_one_process_cannot_open_two_chdb_folders(tmp_path: Path) -> None:
    with ChdbClickHouse(tmp_path / "a"):
        started = time.monotonic()
        with pytest.raises(ClickHouseUnavailable, match="one database folder per process"):
            ChdbClickHouse(tmp_path / "b", lock_timeout_s=10)
        assert time.monotonic() - started < 5  # a configuration error, not a lock to wait for


def test_the_same_folder_can_be_opened_twice_in_one_process(chdb_clickhouse_url: str) -> None:
    with open_clickhouse(chdb_clickhouse_url) as first:
        ensure_schema(first)
        with open_clickhouse(chdb_clickhouse_url, lock_timeout_s=1) as second:
            second.insert_arrow(TRADES, trades(1))
        assert count(first) == 1


# ---------------------------------------------------------------------------------------- http only


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_raises_unavailable_naming_the_url() -> None:
    url = f"http://trader:s3cret@127.0.0.1:{_free_port()}"
    with pytest.raises(ClickHouseUnavailable) as info:
        open_clickhouse(url)
    message = str(info.value)
    assert url.replace("s3cret", "***") in message
    assert "s3cret" not in message


@pytest.fixture
def client(http_clickhouse_url: str) -> Iterator[clickhouse_connect.driver.Client]:
    with open_clickhouse(http_clickhouse_url) as ch:
        ensure_schema(ch)
    c = clickhouse_connect.get_client(dsn=http_clickhouse_url)
    try:
        yield c
    finally:
        c.close()


def test_http_server_answers_the_client_handshake(client: clickhouse_connect.driver.Client) -> None:
    assert client.server_version
    assert client.command("SELECT 1 + 1") == 2
    assert client.command("SELECT 'a', 'b'") == ["a", "b"]


def test_http_server_takes_compressed_row_inserts(http_clickhouse_url: str) -> None:
    with open_clickhouse(http_clickhouse_url) as ch:
        ensure_schema(ch)
    rows = trades(30).to_pylist()
    for compression in ("lz4", "zstd", "gzip"):
        c = clickhouse_connect.get_client(dsn=http_clickhouse_url, compress=compression)
        try:
            c.insert(TRADES, [list(r.values()) for r in rows], column_names=schema.MARKET_TRADES.column_names,
                     settings={"insert_deduplication_token": compression})
            result = c.query(f"SELECT count() FROM {TRADES}")  # Native answer, compressed the same way
        finally:
            c.close()
    assert result.result_rows == [(90,)]


def test_http_server_does_not_leak_settings_between_requests(client: clickhouse_connect.driver.Client) -> None:
    client.insert_arrow(TRADES, trades(1), settings={"insert_deduplication_token": "once"})
    assert client.command("SELECT getSetting('insert_deduplication_token')") == ""
    client.insert_arrow(TRADES, trades(2, tag="other"))  # no token: must not be dropped as "once"
    assert client.command(f"SELECT count() FROM {TRADES}") == 3


def test_http_server_rejects_an_unknown_setting_and_recovers(client: clickhouse_connect.driver.Client) -> None:
    with pytest.raises(DatabaseError, match="UNKNOWN_SETTING"):
        client.command("SELECT 1", settings={"max_block_size": 1234, "no_such_setting": 1})
    assert client.command("SELECT getSetting('max_block_size')") != 1234  # nothing of it stayed applied
    assert client.command("SELECT 1") == 1


def test_http_server_inserts_the_body_after_the_query_parameter(client: clickhouse_connect.driver.Client,
                                                                http_clickhouse_url: str) -> None:
    query = urllib.parse.urlencode({
        "query": f"INSERT INTO {schema.LOAD_MANIFEST.qualified_name} (table_name, lake_key, rows) FORMAT CSV"})
    body = b'"market_trades","a.parquet",1\n"market_trades","b.parquet",2\n'
    with urllib.request.urlopen(urllib.request.Request(f"{http_clickhouse_url}/?{query}", data=body)) as response:
        assert json.loads(response.headers["X-ClickHouse-Summary"])["written_rows"] == "2"
    assert client.command(f"SELECT sum(rows) FROM {schema.LOAD_MANIFEST.qualified_name}") == 3


def test_http_server_keeps_set_state_per_session(http_clickhouse_url: str) -> None:
    a = clickhouse_connect.get_client(dsn=http_clickhouse_url, session_id="session-a")
    b = clickhouse_connect.get_client(dsn=http_clickhouse_url, session_id="session-b")
    try:
        a.command("SET max_block_size = 1234")
        assert a.command("SELECT getSetting('max_block_size')") == 1234
        assert b.command("SELECT getSetting('max_block_size')") != 1234
    finally:
        a.close()
        b.close()


def test_http_server_binds_query_parameters(client: clickhouse_connect.driver.Client) -> None:
    value = "it's\ta \\ test é"
    assert client.query("SELECT {v:String} AS v", parameters={"v": value}).result_rows == [(value,)]


def test_http_server_takes_external_data(client: clickhouse_connect.driver.Client) -> None:
    ext = ExternalData(data=b"1\n2\n3\n", file_name="ids", structure="id UInt32")
    assert client.query("SELECT sum(id) FROM ids", external_data=ext).result_rows == [(6,)]


def test_http_server_serves_the_requested_format(http_clickhouse_url: str) -> None:
    query = urllib.parse.urlencode({"query": "SELECT number AS n FROM numbers(3)", "default_format": "JSON"})
    with urllib.request.urlopen(f"{http_clickhouse_url}/?{query}") as response:
        assert response.headers["X-ClickHouse-Format"] == "JSON"
        assert json.loads(response.read())["data"] == [{"n": 0}, {"n": 1}, {"n": 2}]
    body = b"SELECT number AS n FROM numbers(2) FORMAT TabSeparated"
    with urllib.request.urlopen(urllib.request.Request(http_clickhouse_url, data=body)) as response:
        assert response.headers["X-ClickHouse-Format"] == "TabSeparated"
        assert response.read() == b"0\n1\n"


def test_http_server_reports_errors_like_clickhouse(http_clickhouse_url: str) -> None:
    request = urllib.request.Request(http_clickhouse_url, data=b"SELECT * FROM system.nope")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request)
    assert info.value.headers["X-ClickHouse-Exception-Code"] == "60"
    assert info.value.read().decode().startswith("Code: 60. DB::Exception:")


def test_http_server_errors_reach_clickhouse_connect(client: clickhouse_connect.driver.Client) -> None:
    with pytest.raises(DatabaseError, match=r"Code: 60\. DB::Exception") as info:
        client.query("SELECT * FROM trading.nope")
    assert info.value.code == 60


def test_http_server_get_requests_are_read_only(http_clickhouse_url: str) -> None:
    query = urllib.parse.urlencode({"query": "CREATE DATABASE sneaky"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{http_clickhouse_url}/?{query}")
    assert info.value.headers["X-ClickHouse-Exception-Code"] == "164"


def test_http_server_serves_concurrent_clients(client: clickhouse_connect.driver.Client,
                                               http_clickhouse_url: str) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            with open_clickhouse(http_clickhouse_url) as ch:
                for i in range(5):
                    ch.insert_arrow(TRADES, trades(10, tag=f"{n}-{i}"), dedup_token=f"{n}-{i}")
                    ch.insert_arrow(TRADES, trades(10, tag=f"{n}-{i}"), dedup_token=f"{n}-{i}")
                    count(ch)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert client.command(f"SELECT count() FROM {TRADES}") == 6 * 5 * 10


@pytest.fixture(scope="module")
def password_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServerProcess]:
    server = start_http_server_process(tmp_path_factory.mktemp("auth") / "chdb", user="trader",
                                       password="s3cret")
    try:
        yield server
    finally:
        server.stop()


def test_http_server_checks_credentials_when_it_has_them(password_server: HttpServerProcess) -> None:
    host = password_server.url.removeprefix("http://")
    with open_clickhouse(f"http://trader:s3cret@{host}") as ch:
        assert ch.query_arrow("SELECT 1 AS one").column("one").to_pylist() == [1]
    with pytest.raises(ClickHouseUnavailable, match="516") as info:
        open_clickhouse(f"http://trader:wrong@{host}")
    assert "wrong" not in str(info.value)
