"""`Upload` in a job's input: uploaded through the store and replaced by its URL before the request, over
real loopback HTTP to the emulator, in both client variants."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from runpod_queue import (
    AsyncClient,
    AsyncS3Store,
    Client,
    ConfigurationError,
    Job,
    PayloadTooLargeError,
    S3Config,
    S3Store,
    Upload,
)
from runpod_queue.emulator import Emulator

MIB = 1 << 20


def sha_of_image(job: dict[str, Any]) -> dict[str, Any]:
    """What a worker does with a URL input: fetch it (here with httpx, as rp_download would) and hash it."""
    urls = job["input"]["images"]
    return {"sha256": [hashlib.sha256(httpx.get(url).content).hexdigest() for url in urls]}


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    emulator = Emulator({"sha": sha_of_image}).start()
    yield emulator
    emulator.stop()


def _call(variant: str, emu: Emulator, method: str, input: Any, **kwargs: Any) -> Job:
    client_store = kwargs.pop("client_store", None)
    if variant == "sync":
        with Client(base_url=emu.base_url, store=client_store) as client:
            result: Job = getattr(client.endpoint("sha"), method)(input, **kwargs)
            return result

    async def main() -> Job:
        async with AsyncClient(base_url=emu.base_url, store=client_store) as client:
            result: Job = await getattr(client.endpoint("sha"), method)(input, **kwargs)
            return result

    return asyncio.run(main())


@pytest.mark.parametrize("variant", ["sync", "async"])
@pytest.mark.parametrize("method", ["run_sync", "run"])
def test_a_15_mb_upload_reaches_the_handler(
    emu: Emulator, config: S3Config, variant: str, method: str
) -> None:
    data = os.urandom(15 * MIB)  # over /run's 10 MB: only its URL travels in the request
    input = {"images": [Upload(data, key="in/big.bin"), Upload(b"small")], "note": "x"}
    store: S3Store | AsyncS3Store = S3Store(config) if variant == "sync" else AsyncS3Store(config)
    per_call = method == "run_sync"  # one path gives the store per call, the other to the client
    job = _call(
        variant, emu, method, input,
        **({"store": store} if per_call else {"client_store": store}),
    )  # fmt: skip
    if method == "run":
        with Client(base_url=emu.base_url) as client:
            job = client.endpoint("sha").wait(job.id, timeout=60)
    assert job.output == {"sha256": [hashlib.sha256(data).hexdigest(), hashlib.sha256(b"small").hexdigest()]}
    assert isinstance(input["images"][0], Upload)  # the caller's input is left as it was


@pytest.mark.parametrize("variant", ["sync", "async"])
def test_an_upload_without_a_store_is_refused_before_sending(emu: Emulator, variant: str) -> None:
    before = len(emu.requests)
    with pytest.raises(ConfigurationError, match="has no store"):
        _call(variant, emu, "run", {"image": Upload(b"x")})
    assert len(emu.requests) == before


@pytest.mark.parametrize("variant", ["sync", "async"])
def test_the_size_check_applies_after_substitution(emu: Emulator, config: S3Config, variant: str) -> None:
    big = "x" * (11 * MIB)  # inline, over /run's limit even with the Upload turned into a short URL
    with pytest.raises(PayloadTooLargeError):
        _call(variant, emu, "run", {"image": Upload(b"x"), "pad": big}, store=S3Store(config))


def test_output_urls() -> None:
    job = Job.from_dict(
        {"id": "j", "status": "COMPLETED", "output": {"a": ["https://s3/x?X-Amz-Signature=1", "text", 3],
                                                       "b": {"c": "http://h/b/k"}, "d": "https://s3/x?X-Amz-Signature=1"}}
    )  # fmt: skip
    assert job.output_urls() == ["https://s3/x?X-Amz-Signature=1", "http://h/b/k"]
    assert Job.from_dict({"id": "j", "status": "IN_QUEUE"}).output_urls() == []
