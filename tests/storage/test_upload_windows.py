"""How an upload reads its source: a file or bytes part by part in the sending threads (pread windows), a
stream in order; the checksum S3 checks is botocore's signed SHA-256 over HTTP, Content-MD5 over HTTPS."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from runpod_queue import S3Config, S3Store, StorageError

MIB = 1 << 20


def _sent_headers(store: S3Store) -> list[dict[str, str]]:
    seen: list[dict[str, str]] = []

    def record(request: Any, **_: Any) -> None:
        seen.append({k.lower(): str(v) for k, v in request.headers.items()})

    for op in ("PutObject", "UploadPart"):
        store.client.meta.events.register(f"before-send.s3.{op}", record)
    return seen


def _objects(store: S3Store) -> list[str]:
    listed = store.client.list_objects_v2(Bucket=store.config.bucket_name)
    return [item["Key"] for item in listed.get("Contents", [])]


def test_an_open_file_is_sent_from_its_position_and_left_at_its_end(config: S3Config, tmp_path: Path) -> None:
    data = os.urandom(11 * MIB + 5)
    path = tmp_path / "in.bin"
    path.write_bytes(data)
    store = S3Store(config, part_size=5 * MIB, concurrency=3)
    headers = _sent_headers(store)
    with path.open("rb") as handle:
        handle.read(7)
        store.upload(handle, key="from-7")
        assert handle.tell() == len(data)
    assert store.download("from-7") == data[7:]
    assert len(headers) == 3  # three parts, each its own request
    # plain HTTP: every body's SHA-256 is signed (and checked by S3); no MD5 on top
    assert all(h["x-amz-content-sha256"] not in ("UNSIGNED-PAYLOAD", "") for h in headers)
    assert not any("content-md5" in h for h in headers)


def test_a_file_that_shrinks_midway_leaves_no_object(config: S3Config, tmp_path: Path) -> None:
    path = tmp_path / "in.bin"
    path.write_bytes(os.urandom(12 * MIB))
    store = S3Store(config, part_size=5 * MIB, concurrency=1)

    def truncate(done: int, total: int | None) -> None:  # after the first part: someone cuts the file
        with path.open("r+b") as handle:
            handle.truncate(6 * MIB)

    with pytest.raises(StorageError, match="got shorter during the upload"):
        store.upload(path, key="shrunk", progress=truncate)
    assert _objects(store) == []
    assert store.client.list_multipart_uploads(Bucket=config.bucket_name).get("Uploads", []) == []


def test_bytes_are_sent_without_a_copy_of_the_whole(config: S3Config) -> None:
    data = bytearray(os.urandom(6 * MIB))
    store = S3Store(config, part_size=5 * MIB)
    store.upload(memoryview(data), key="view")
    assert store.download("view") == bytes(data)


def test_the_md5_is_sent_over_https_only(config: S3Config) -> None:
    assert not S3Store(config)._checks_md5
    secure = S3Config(config.access_id, config.access_secret, config.bucket_name, "https://s3.example.com")
    assert S3Store(secure)._checks_md5


def test_a_declared_crc32_is_checked_per_part_and_kept(config: S3Config) -> None:
    data = os.urandom(11 * MIB)
    store = S3Store(config, part_size=5 * MIB, checksum="CRC32")
    headers = _sent_headers(store)
    store.upload(data, key="crc")
    assert len(headers) == 3 and all("x-amz-checksum-crc32" in h and "content-md5" not in h for h in headers)
    head = store.client.head_object(Bucket=config.bucket_name, Key="crc", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"]  # the object keeps the CRC32 S3 combined from the parts
    assert store.download("crc") == data
    with pytest.raises(ValueError, match='checksum must be "CRC32" or None'):
        S3Store(config, checksum="MD5")  # type: ignore[arg-type]
