"""A moto S3 server on loopback for the storage tests, and a store over it in both variants."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from runpod_queue import AsyncS3Store, S3Config, S3Store
from shared_support import need

need("moto")  # moto.server is imported when the first test asks for the server


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def _bucket_maker(s3_endpoint: str) -> Any:
    """One boto3 client creates every test's bucket (a new one costs ~5 ms CPU from the process's shared
    session); the stores under test build their own."""
    return S3Store(S3Config("test-key-id", "test-secret-value", "unused", s3_endpoint)).client


@pytest.fixture
def config(s3_endpoint: str, _bucket_maker: Any) -> S3Config:
    """A fresh bucket per test, so object listings are the test's own."""
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    _bucket_maker.create_bucket(Bucket=bucket)
    return S3Config("test-key-id", "test-secret-value", bucket, s3_endpoint)


class Variant:
    """Calls a store method the same way in both variants: the async one runs in its own event loop."""

    def __init__(self, name: str, config: S3Config, **options: Any) -> None:
        self.name = name
        self.sync = S3Store(config, **options)
        self.store: S3Store | AsyncS3Store = self.sync if name == "sync" else AsyncS3Store(config, **options)

    def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.store, method)(*args, **kwargs)
        return _run_boxed(result) if self.name == "async" else result


def _run_boxed(awaitable: Any) -> Any:
    """``asyncio.run(awaitable)``, with the value kept off the main task: asyncio.run's SIGINT handler
    check (signal.getsignal, CPython 3.11) reprs that task, result and all: ~0.2 s CPU for 10 MiB of bytes."""
    box: list[Any] = []

    async def main() -> None:
        box.append(await awaitable)

    asyncio.run(main())
    return box[0]


@pytest.fixture(params=["sync", "async"])
def variant(request: pytest.FixtureRequest, config: S3Config) -> Callable[..., Variant]:
    return lambda **options: Variant(request.param, config, **options)
