"""S3Store / AsyncS3Store against moto's S3 server over real loopback HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from runpod_queue import AsyncS3Store, ConfigurationError, S3Config, S3Store, StorageError
from runpod_queue._storage import redact_url

MIB = 1 << 20


def _objects(store: S3Store) -> list[str]:
    listed = store.client.list_objects_v2(Bucket=store.config.bucket_name)
    return [item["Key"] for item in listed.get("Contents", [])]


def _multipart_uploads(store: S3Store) -> list[Any]:
    return list(store.client.list_multipart_uploads(Bucket=store.config.bucket_name).get("Uploads", []))


@pytest.mark.parametrize("kind", ["bytes", "path", "file"])
def test_round_trip_multipart_every_source(variant: Callable[..., Any], tmp_path: Path, kind: str) -> None:
    v = variant(part_size=5 * MIB, concurrency=2)
    data = os.urandom(10 * MIB + 3)  # parts of 5 MiB, 5 MiB and 3 bytes
    path = tmp_path / "in.bin"
    path.write_bytes(data)
    source: Any = {"bytes": data, "path": path, "file": io.BytesIO(data)}[kind]
    seen: list[tuple[int, int | None]] = []
    url = v("upload", source, key="a/in.bin", progress=lambda done, total: seen.append((done, total)))
    assert "X-Amz-Signature=" in url and "/a/in.bin?" in url
    # one call per part (parts may finish out of order: the counts grow, the last is the whole)
    assert len(seen) == 3 and [d for d, _ in seen] == sorted(d for d, _ in seen) and seen[-1][0] == len(data)
    assert seen[-1][1] == (None if kind == "file" else len(data))
    etag = v.sync.client.head_object(Bucket=v.sync.config.bucket_name, Key="a/in.bin")["ETag"]
    assert etag.strip('"').endswith("-3")  # multipart, 3 parts
    # a presigned URL needs no credentials; an unsigned URL under the endpoint and a key use the store's
    assert httpx.get(url).content == data
    assert v("download", url) == data
    unsigned = f"{v.sync.config.endpoint_url}/{v.sync.config.bucket_name}/a/in.bin"
    assert v("download", unsigned) == data
    out = v("download", "a/in.bin", to=tmp_path / "out.bin")
    assert out == tmp_path / "out.bin" and out.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.bin", "out.bin"]  # no .part left


def test_small_upload_default_key_and_progress(variant: Callable[..., Any]) -> None:
    v = variant()
    seen: list[tuple[int, int | None]] = []
    url = v("upload", b"hello", progress=lambda d, t: seen.append((d, t)))
    assert seen == [(5, 5)]
    (key,) = _objects(v.sync)
    assert key.startswith("inputs/") and key.endswith("/upload.bin")
    assert v("download", url) == b"hello"


class _Breaking(io.RawIOBase):
    """A source that fails after handing out `good` bytes."""

    def __init__(self, good: int, error: BaseException) -> None:
        self.left = good
        self.error = error

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            raise self.error
        n = min(size, self.left)
        self.left -= n
        return b"x" * n


@pytest.mark.parametrize("error", [OSError("disk gone"), KeyboardInterrupt()])
def test_interrupted_upload_leaves_no_object(variant: Callable[..., Any], error: BaseException) -> None:
    v = variant(part_size=5 * MIB, concurrency=1)
    with pytest.raises(type(error)):
        v("upload", _Breaking(11 * MIB, error), key="partial.bin")
    assert _objects(v.sync) == []
    assert _multipart_uploads(v.sync) == []


def test_cancelled_async_upload_is_aborted(config: S3Config) -> None:
    store = AsyncS3Store(config, part_size=5 * MIB, concurrency=1)
    go = threading.Event()

    async def main() -> None:
        started = asyncio.Event()
        loop = asyncio.get_running_loop()

        class Source(io.RawIOBase):
            reads = 0

            def readable(self) -> bool:
                return True

            def read(self, size: int = -1) -> bytes:
                self.reads += 1
                if self.reads == 3:  # the first part is on its way; hold the second until cancelled
                    loop.call_soon_threadsafe(started.set)
                    go.wait()
                return b"y" * size

        task = asyncio.create_task(store.upload(Source(), key="cancelled.bin"))
        await started.wait()
        task.cancel()
        go.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert _objects(store.sync) == []
    assert _multipart_uploads(store.sync) == []


def test_errors_name_what_to_fix(variant: Callable[..., Any], config: S3Config, tmp_path: Path) -> None:
    v = variant()
    with pytest.raises(FileNotFoundError, match="is not a file"):
        v("upload", tmp_path / "missing.png")
    with pytest.raises(StorageError, match=r"no object .*/nope"):
        v("download", "nope")
    with pytest.raises(ValueError, match="neither presigned nor under this store's endpoint"):
        v("download", "http://example.invalid/x/y")
    with pytest.raises(TypeError, match="bytes, a path or a binary file object"):
        v("upload", 42)
    other = S3Config("k", "s", "no-such-bucket", config.endpoint_url)
    bad = S3Store(other) if v.name == "sync" else AsyncS3Store(other)
    coro_or_value: Any
    with pytest.raises(ConfigurationError, match="bucket 'no-such-bucket' does not exist"):
        coro_or_value = bad.upload(b"x")
        if v.name == "async":
            asyncio.run(coro_or_value)


def test_presigned_url_errors_are_redacted(variant: Callable[..., Any]) -> None:
    v = variant()
    url = v.sync.url("never-uploaded")
    with pytest.raises(StorageError) as caught:
        v("download", url)
    signature = url.split("X-Amz-Signature=")[1]
    assert signature not in str(caught.value) and "REDACTED" in str(caught.value)


def test_redact_url_and_reprs_hide_credentials(config: S3Config) -> None:
    url = S3Store(config).url("k")
    shown = redact_url(url)
    assert "X-Amz-Signature=REDACTED" in shown and "X-Amz-Credential=REDACTED" in shown
    assert config.access_id not in shown
    for obj in (config, S3Store(config), AsyncS3Store(config)):
        assert config.access_secret not in repr(obj) and config.access_id not in repr(obj)


def test_download_checks_the_etag(config: S3Config, monkeypatch: pytest.MonkeyPatch) -> None:
    store = S3Store(config)
    store.upload(b"payload", key="k")
    real = store._call

    def lying(operation: str, **params: Any) -> Any:
        answer = real(operation, **params)
        if operation == "get_object":
            answer["ETag"] = '"' + hashlib.md5(b"other").hexdigest() + '"'
        return answer

    monkeypatch.setattr(store, "_call", lying)
    with pytest.raises(StorageError, match="arrived corrupted"):
        store.download("k")


def test_from_env_reads_the_worker_variables() -> None:
    env = {
        "BUCKET_ENDPOINT_URL": "http://127.0.0.1:9",
        "BUCKET_ACCESS_KEY_ID": "id",
        "BUCKET_SECRET_ACCESS_KEY": "secret",
    }
    assert S3Config.from_env("b1", environ=env) == S3Config("id", "secret", "b1", "http://127.0.0.1:9")
    assert S3Config.from_env(environ={**env, "BUCKET_NAME": "b2"}).bucket_name == "b2"
    with pytest.raises(ConfigurationError, match="set BUCKET_SECRET_ACCESS_KEY, BUCKET_NAME"):
        S3Config.from_env(environ={k: v for k, v in env.items() if k != "BUCKET_SECRET_ACCESS_KEY"})


def test_bad_options() -> None:
    cfg = S3Config("a", "b", "c", "http://127.0.0.1:9")
    with pytest.raises(ValueError, match="at least 5 MiB"):
        S3Store(cfg, part_size=MIB)
    with pytest.raises(ValueError, match="expires_in must be at most 604800"):
        S3Store(cfg, expires_in=8 * 86400)


def test_stores_share_a_session_but_not_a_client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Clients come from one boto3 Session per process (cheap to build), yet each store's stays its own:
    credentials, config and event hooks; a changed AWS_PROFILE / AWS_CONFIG_FILE gets a session of its own."""
    from runpod_queue import _storage

    endpoint = "http://127.0.0.1:9"
    configs = [S3Config(f"id-{i}", f"secret-{i}", "b", endpoint) for i in range(8)]
    stores = [S3Store(config, concurrency=10 + i) for i, config in enumerate(configs)]
    threads = [threading.Thread(target=lambda s=s: s.client) for s in stores]  # all at once: the lock
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    clients = [s.client for s in stores]
    assert len({id(c) for c in clients}) == len({id(c.meta.events) for c in clients}) == 8
    for i, store in enumerate(stores):
        assert f"X-Amz-Credential=id-{i}%2F" in store.url("k")
        assert store.client.meta.config.max_pool_connections == 10 + i
    sessions = len(_storage._sessions)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    assert "X-Amz-Credential=id-x%2F" in S3Store(S3Config("id-x", "s", "b", endpoint)).url("k")
    assert len(_storage._sessions) == sessions + 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_a_child_forked_while_a_client_is_being_built_can_build_its_own() -> None:
    import signal
    import warnings

    from runpod_queue import _storage

    config = S3Config("id", "secret", "b", "http://127.0.0.1:9")
    assert S3Store(config).client  # the session exists; a thread "builds a client" as the fork happens
    with _storage._sessions_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork of a multi-threaded process
        pid = os.fork()
        if pid == 0:  # the child: a held lock would hang here, and the alarm end it with a failure
            signal.alarm(30)
            code = 1
            try:
                code = 0 if "X-Amz-Credential=id%2F" in S3Store(config).url("k") else 1
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
