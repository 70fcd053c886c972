"""Uploads in batch inputs: `Upload` values and `{"$upload": path}` lines become URLs before submission,
journaled so that a resume never uploads twice, over real loopback HTTP to the emulator and its S3."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from runpod_queue import (
    AsyncClient,
    AsyncS3Store,
    BatchRunner,
    Client,
    ConfigurationError,
    Retries,
    S3Config,
    S3Store,
    Upload,
)
from runpod_queue.batch import PollOptions
from runpod_queue.emulator import Emulator
from shared_support import EmuSetup

FAST = Retries(backoff=0.01, max_backoff=0.05, max_retry_after=0.05)
QUICK_POLLS = PollOptions(min_interval=0.01, max_interval=0.2)


def sha_of_urls(job: dict[str, Any]) -> dict[str, Any]:
    """What a worker does with URL inputs: fetch each (as rp_download would) and hash it."""
    urls = job["input"]["files"]
    return {"sha256": [hashlib.sha256(httpx.get(url).raise_for_status().content).hexdigest() for url in urls]}


def _setup() -> dict[str, Any]:
    return {"sha": sha_of_urls}


pytestmark = pytest.mark.parametrize(
    "emu_setup", [EmuSetup(_setup, {"s3": True}, shared=True)], indirect=True, scope="module"
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def s3(emu: Emulator) -> S3Config:
    """A bucket of its own on the emulator's S3, so listings are this test's."""
    base = emu.s3_config
    config = S3Config(base.access_id, base.access_secret, f"b-{uuid.uuid4().hex[:10]}", base.endpoint_url)
    S3Store(config).client.create_bucket(Bucket=config.bucket_name)
    return config


class Puts:
    """Counts the object writes a store's client sends (PutObject, CreateMultipartUpload, UploadPart)."""

    def __init__(self, store: S3Store, on_put: Callable[[], object] | None = None) -> None:
        self.count = 0
        self._on_put = on_put
        for op in ("PutObject", "CreateMultipartUpload", "UploadPart"):
            store.client.meta.events.register(f"after-call.s3.{op}", self._seen)

    def _seen(self, **_: Any) -> None:
        self.count += 1
        if self._on_put is not None:
            self._on_put()


def _objects(config: S3Config) -> dict[str, str]:
    """Key -> ETag of every object in the bucket."""
    answer = S3Store(config).client.list_objects_v2(Bucket=config.bucket_name)
    return {item["Key"]: item["ETag"] for item in answer.get("Contents", [])}


def _files(tmp_path: Path, n: int) -> list[tuple[Path, bytes]]:
    made = []
    for i in range(n):
        data = os.urandom(1000 + i)
        path = tmp_path / f"in-{i}.bin"
        path.write_bytes(data)
        made.append((path, data))
    return made


def _lines(files: list[tuple[Path, bytes]]) -> list[str]:
    return [
        json.dumps({"key": i, "input": {"files": [{"$upload": str(p)}]}}) for i, (p, _) in enumerate(files)
    ]


def _runner(client: Client | AsyncClient, tmp_path: Path, **kwargs: Any) -> BatchRunner:
    return BatchRunner(
        client.endpoint("sha"),
        journal=tmp_path / "run.journal",
        output=tmp_path / "out.jsonl",
        polling=QUICK_POLLS,
        on_warning=lambda _: None,
        **kwargs,
    )


def _results(tmp_path: Path) -> dict[Any, dict[str, Any]]:
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    return {row["key"]: row for row in map(json.loads, lines)}


def _run(
    variant: str,
    emu: Emulator,
    store: S3Store,
    tmp_path: Path,
    inputs: list[Any],
    *,
    made: Callable[[BatchRunner], object] = lambda runner: None,
    **kw: Any,
) -> Any:
    """One batch through the sync runner (a sync Client with an S3Store) or the async one (an
    AsyncClient with an AsyncS3Store over the same botocore client, so PUTs are counted alike)."""
    if variant == "sync":
        with Client(base_url=emu.base_url, retries=FAST, store=store) as client:
            runner = _runner(client, tmp_path, **kw)
            made(runner)
            return runner.run(inputs)

    async_store = AsyncS3Store(store.config)
    async_store.sync = store

    async def main() -> Any:
        async with AsyncClient(base_url=emu.base_url, retries=FAST, store=async_store) as client:
            runner = _runner(client, tmp_path, **kw)
            made(runner)
            return await runner.arun(inputs)

    return asyncio.run(main())


def _stopped_after_first_upload(
    variant: str, emu: Emulator, s3: S3Config, tmp_path: Path, lines: list[str]
) -> None:
    """A first run that stops right after its first upload, before that item's /run (as a crash there
    would): the item stays pending with its upload journaled."""
    store = S3Store(s3)
    held: list[BatchRunner] = []
    Puts(store, lambda: held[0].stop())
    summary = _run(variant, emu, store, tmp_path, lines, made=held.append, max_in_flight=1)
    assert summary.interrupted and summary.submitted == 0


@pytest.mark.parametrize("variant", ["sync", "async"])
def test_markers_and_uploads_become_urls(emu: Emulator, s3: S3Config, tmp_path: Path, variant: str) -> None:
    files = _files(tmp_path, 3)
    inputs: list[Any] = _lines(files)
    inputs.append(
        {"key": "obj", "input": {"files": [Upload(b"bytes here"), Upload(files[0][0], key="mine/a")]}}
    )
    store = S3Store(s3)
    puts = Puts(store)
    summary = _run(variant, emu, store, tmp_path, inputs)
    assert summary.completed == 4 and summary.failures == 0
    results = _results(tmp_path)
    for i, (_, data) in enumerate(files):
        assert results[i]["output"] == {"sha256": [_sha(data)]}
    assert results["obj"]["output"] == {"sha256": [_sha(b"bytes here"), _sha(files[0][1])]}
    objects = _objects(s3)
    assert len(objects) == 5 == puts.count and "mine/a" in objects
    assert all(key.startswith("batch/") for key in objects if key != "mine/a")


@pytest.mark.parametrize("variant", ["sync", "async"])
def test_a_resume_never_uploads_twice(emu: Emulator, s3: S3Config, tmp_path: Path, variant: str) -> None:
    files = _files(tmp_path, 3)
    _stopped_after_first_upload(variant, emu, s3, tmp_path, _lines(files))
    (uploaded,) = _objects(s3).items()  # the first item's file, not yet submitted

    store = S3Store(s3)
    puts = Puts(store)
    summary = _run(variant, emu, store, tmp_path, _lines(files))
    assert summary.completed == 3
    assert puts.count == 2  # items 2 and 3 only: the first reused its journaled upload
    objects = _objects(s3)
    assert len(objects) == 3 and objects[uploaded[0]] == uploaded[1]
    assert {k: r["output"]["sha256"][0] for k, r in _results(tmp_path).items()} == {
        i: _sha(data) for i, (_, data) in enumerate(files)
    }


def _journaled(tmp_path: Path) -> list[tuple[str, str, float]]:
    with sqlite3.connect(tmp_path / "run.journal") as db:
        return db.execute("SELECT object_key, url, expires_at FROM uploads ORDER BY item").fetchall()


@pytest.mark.parametrize("variant", ["sync", "async"])
def test_an_expired_url_is_presigned_again_not_uploaded(
    emu: Emulator, s3: S3Config, tmp_path: Path, variant: str
) -> None:
    ((path, data),) = _files(tmp_path, 1)
    line = json.dumps({"key": "a", "input": {"files": [{"$upload": str(path)}]}})
    _stopped_after_first_upload(variant, emu, s3, tmp_path, [line])
    ((object_key, _, _),) = _journaled(tmp_path)
    expired = "http://127.0.0.1:9/expired?X-Amz-Signature=0"  # what reusing it would send: a dead URL
    with sqlite3.connect(tmp_path / "run.journal") as db:
        db.execute("UPDATE uploads SET expires_at = 1, url = ?", (expired,))  # expired long ago
    fresh = S3Store(s3)
    puts = Puts(fresh)
    summary = _run(variant, emu, fresh, tmp_path, [line])
    assert summary.completed == 1 and puts.count == 0
    assert _results(tmp_path)["a"]["output"] == {"sha256": [_sha(data)]}
    ((same_key, new_url, expires_at),) = _journaled(tmp_path)
    assert same_key == object_key and new_url != expired and expires_at > 1e9
    sent = [job for job in emu.jobs("sha") if new_url in json.dumps(job.input)]
    assert sent, "the job was submitted with the new URL"


@pytest.mark.parametrize("variant", ["sync", "async"])
def test_a_missing_file_fails_that_item_only(
    emu: Emulator, s3: S3Config, tmp_path: Path, variant: str
) -> None:
    files = _files(tmp_path, 1)
    lines = [
        *_lines(files),
        json.dumps({"key": "gone", "input": {"files": [{"$upload": str(tmp_path / "nope.png")}]}}),
        json.dumps({"key": "odd", "input": {"files": [{"$upload": 3}]}}),
    ]
    summary = _run(variant, emu, S3Store(s3), tmp_path, lines)
    assert summary.completed == 1 and summary.invalid == 2
    results = _results(tmp_path)
    assert results["gone"]["status"] == "INVALID" and "nope.png' is not a file" in results["gone"]["error"]
    assert '"$upload" takes a file path' in results["odd"]["error"]


@pytest.mark.parametrize("variant", ["sync", "async"])
def test_uploads_without_a_store_stop_the_batch_before_sending(
    emu: Emulator, tmp_path: Path, variant: str
) -> None:
    ((path, _),) = _files(tmp_path, 1)
    before = len(emu.requests)
    with pytest.raises(ConfigurationError, match="holds an upload but there is no store"):
        if variant == "sync":
            with Client(base_url=emu.base_url) as client:
                _runner(client, tmp_path).run(_lines([(path, b"")]))
        else:

            async def main() -> None:
                async with AsyncClient(base_url=emu.base_url) as client:
                    await _runner(client, tmp_path).arun(_lines([(path, b"")]))

            asyncio.run(main())
    assert not [r for r in emu.requests[before:] if r.operation == "run"]
