"""The stores a load reads and writes: a lake on both object stores, a ClickHouse on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from trading_platform.storage.clickhouse import ClickHouse, ensure_schema, open_clickhouse
from trading_platform.storage.object_store import ObjectStore, open_object_store


@pytest.fixture(params=["file", "s3"])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "file":
        return open_object_store((tmp_path / "lake").as_uri())
    return open_object_store(f"s3://{request.getfixturevalue('s3_bucket')}/lake",
                             request.getfixturevalue("s3_endpoint"))


@pytest.fixture
def warehouse(clickhouse_url: str) -> Iterator[ClickHouse]:
    ch = open_clickhouse(clickhouse_url)
    ensure_schema(ch)
    yield ch
    ch.close()
