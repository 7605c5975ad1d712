"""The Parquet lake's object store: a local folder (default) or any S3 API, behind one small interface."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse


class ObjectStoreUnavailable(RuntimeError):
    """The object store could not be reached or refused the request; the message names it."""


class ObjectStore(Protocol):
    url: str

    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def list_keys(self, prefix: str) -> list[str]: ...
    def list_children(self, prefix: str) -> list[str]: ...
    def delete(self, key: str) -> None: ...


class LocalObjectStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = root.as_uri()
        root.mkdir(parents=True, exist_ok=True)

    def put(self, key: str, data: bytes) -> None:
        # Write-then-rename so a reader (or a crash) never sees half a Parquet file, and fsync so a
        # WAL segment deleted after this returns is really safe to lose.
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def list_keys(self, prefix: str) -> list[str]:
        # os.walk's directory entries tell files from folders without a stat per file; pathlib's rglob with
        # is_file() and relative_to() cost ~300 us a file, most of a load's listing of a day's partition.
        root = str(self.root)
        keys: list[str] = []
        for folder, _, names in os.walk(self.root / prefix):
            relative = folder[len(root) + 1:].replace(os.sep, "/")
            keys.extend(f"{relative}/{name}" if relative else name
                        for name in names if not name.startswith(".tmp-"))
        return sorted(keys)

    def list_children(self, prefix: str) -> list[str]:
        """Immediate sub-folders of ``prefix`` as prefixes ending in '/' (Hive partitions)."""
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(f"{prefix}{child.name}/" for child in base.iterdir() if child.is_dir())

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)


class S3ObjectStore:
    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None = None) -> None:
        # Imported here: boto3 and botocore weigh on every process that imports this module (an ingestion run
        # with the local lake among them), and only an S3 lake needs them.
        import boto3
        from botocore.config import Config as BotoConfig
        from botocore.exceptions import BotoCoreError, ClientError

        self._errors: tuple[type[Exception], ...] = (BotoCoreError, ClientError)
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        self._endpoint = endpoint_url or "AWS"
        self._client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=BotoConfig(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30),
        )

    def _fail(self, action: str, key: str, error: Exception) -> ObjectStoreUnavailable:
        return ObjectStoreUnavailable(f"S3 {action} {self.url}{key} at {self._endpoint} failed: {error}")

    def put(self, key: str, data: bytes) -> None:
        try:
            self._client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)
        except self._errors as error:
            raise self._fail("put", key, error) from error

    def get(self, key: str) -> bytes:
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"]
            return bytes(body.read())
        except self._errors as error:
            raise self._fail("get", key, error) from error

    def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                keys.extend(item["Key"][len(self.prefix):] for item in page.get("Contents", []))
        except self._errors as error:
            raise self._fail("list", prefix, error) from error
        return sorted(keys)

    def list_children(self, prefix: str) -> list[str]:
        children: list[str] = []
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix, Delimiter="/"):
                children.extend(item["Prefix"][len(self.prefix):] for item in page.get("CommonPrefixes", []))
        except self._errors as error:
            raise self._fail("list", prefix, error) from error
        return sorted(children)

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
        except self._errors as error:
            raise self._fail("delete", key, error) from error


def open_object_store(url: str, s3_endpoint_url: str | None = None) -> ObjectStore:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalObjectStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"storage URL {url!r} names no bucket: use s3://bucket/prefix")
        return S3ObjectStore(parsed.netloc, parsed.path, s3_endpoint_url)
    raise ValueError(f"storage URL {url!r}: allowed schemes are file:// and s3://")
