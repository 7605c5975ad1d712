from __future__ import annotations

from pathlib import Path

import pytest

from trading_platform.storage.object_store import (
    LocalObjectStore,
    ObjectStore,
    ObjectStoreUnavailable,
    S3ObjectStore,
    open_object_store,
)
from trading_platform_tests.conftest import free_port


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "file":
        return open_object_store((tmp_path / "lake").as_uri())
    bucket = request.getfixturevalue("s3_bucket")
    return open_object_store(f"s3://{bucket}/prefix", request.getfixturevalue("s3_endpoint"))


def test_put_get_round_trip(store: ObjectStore) -> None:
    store.put("raw/trades/exchange=binance/a.parquet", b"data")
    assert store.get("raw/trades/exchange=binance/a.parquet") == b"data"


def test_put_overwrites_the_same_key(store: ObjectStore) -> None:
    store.put("k/batch.parquet", b"first")
    store.put("k/batch.parquet", b"second")
    assert store.get("k/batch.parquet") == b"second"
    assert store.list_keys("k/") == ["k/batch.parquet"]


def test_list_keys_and_children_follow_hive_partitions(store: ObjectStore) -> None:
    for key in ["raw/t/exchange=a/symbol=X/1.parquet", "raw/t/exchange=a/symbol=Y/2.parquet",
                "raw/t/exchange=b/symbol=X/3.parquet"]:
        store.put(key, b"")
    assert store.list_children("raw/t/") == ["raw/t/exchange=a/", "raw/t/exchange=b/"]
    assert store.list_keys("raw/t/exchange=a/") == ["raw/t/exchange=a/symbol=X/1.parquet",
                                                   "raw/t/exchange=a/symbol=Y/2.parquet"]
    assert store.list_keys("raw/none/") == []


def test_local_store_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put("a/b.parquet", b"x")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.parquet"]


def test_unreachable_s3_names_the_store(s3_endpoint: str) -> None:
    store = S3ObjectStore("bucket", "p", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ObjectStoreUnavailable, match="s3://bucket/p/"):
        store.put("x", b"y")


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="file:// and s3://"):
        open_object_store("ftp://host/x")
