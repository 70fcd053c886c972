"""Test support for the client tests (imported by conftest and the tests; not a conftest, to stay unique).

The async variant of `api` runs on a private event loop in a thread and is driven through a thin
blocking facade; `stream` is collected into a list in both variants.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from typing import Any

from runpod_queue import AsyncClient, Client
from runpod_queue.emulator import Emulator, EndpointSpec, Faults

API_KEY = "rpq-test-key-0c4f9e2d7b1a"


def echo(job: dict[str, Any]) -> Any:
    return job["input"]


async def slow(job: dict[str, Any]) -> Any:
    await asyncio.sleep(job["input"].get("s", 0.2))
    return "slept"


def gen(job: dict[str, Any]) -> Any:
    for i in range(job["input"]["n"]):
        time.sleep(job["input"].get("gap", 0.002))
        yield {"i": i}


async def gen_then_fail(job: dict[str, Any]) -> Any:
    yield "first"
    yield "second"
    raise RuntimeError("stream broke")


async def gen_forever(job: dict[str, Any]) -> Any:
    yield "started"
    await asyncio.sleep(30)
    yield "never"


def fail(job: dict[str, Any]) -> Any:
    return {"error": "bad input: no prompt"}


def boom(job: dict[str, Any]) -> Any:
    raise ValueError("boom")


ENDPOINTS: dict[str, Any] = {
    "echo": echo,
    "slow": slow,
    "gen": gen,
    "gen_fail": gen_then_fail,
    "gen_forever": gen_forever,
    "fail": fail,
    "boom": boom,
    # No workers: jobs stay IN_QUEUE, so tests can count exactly what was created. One per test that
    # needs it (purge-queue allows 2 calls per 10 s, too few to empty a shared one between tests).
    **{f"idle{i}": EndpointSpec(handler=echo, workers=0) for i in range(40)},
}


def set_faults(emu: Emulator, faults: Faults) -> None:
    """Change faults and wait until the server loop applied them, so the next request sees them."""
    emu.set_faults(faults)
    emu.call(lambda: asyncio.sleep(0))


class Portal:
    """An event loop in a thread: the async client runs here, tests call it synchronously."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 55) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class SyncApi:
    kind = "sync"

    def __init__(self, **kwargs: Any) -> None:
        self.client = Client(**kwargs)

    def endpoint(self, endpoint_id: str) -> SyncEp:
        return SyncEp(self.client.endpoint(endpoint_id))

    def close(self) -> None:
        self.client.close()


class SyncEp:
    def __init__(self, ep: Any) -> None:
        self.ep = ep

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ep, name)

    def stream(self, job_id: str, **kwargs: Any) -> list[Any]:
        return list(self.ep.stream(job_id, **kwargs))


class AsyncApi:
    kind = "async"

    def __init__(self, portal: Portal, **kwargs: Any) -> None:
        self.portal = portal
        self.client = AsyncClient(**kwargs)

    def endpoint(self, endpoint_id: str) -> AsyncEp:
        return AsyncEp(self.portal, self.client.endpoint(endpoint_id))

    def close(self) -> None:
        self.portal.call(self.client.aclose())


class AsyncEp:
    def __init__(self, portal: Portal, ep: Any) -> None:
        self.portal = portal
        self.ep = ep

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.ep, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.portal.call(method(*args, **kwargs))

        return call

    def stream(self, job_id: str, **kwargs: Any) -> list[Any]:
        async def collect() -> list[Any]:
            return [chunk async for chunk in self.ep.stream(job_id, **kwargs)]

        return self.portal.call(collect())


Api = SyncApi | AsyncApi
