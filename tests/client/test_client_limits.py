"""The client-side rate limiter: pure bookkeeping, in-flight caps under concurrency, and a 3000-job burst
against the emulator's real limits with zero 429s."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from client_support import API_KEY, Api, echo, slow

from runpod_queue import AsyncClient, OperationLimit, RateLimits, Retries
from runpod_queue._limits import AsyncLimiter, SyncLimiter, Window
from runpod_queue.emulator import Emulator, EndpointSpec


def test_window_counts_a_request_until_a_window_after_its_answer() -> None:
    w = Window(OperationLimit(per_window=2, in_flight=None), span=10.0)
    assert w.try_acquire(0.0) == 0.0
    assert w.try_acquire(0.0) == 0.0
    assert w.try_acquire(1.0) == math.inf  # both in flight: nothing frees until one answers
    w.release(3.0)
    assert w.try_acquire(5.0) == pytest.approx(8.0)  # the first answer counts until 3 + 10
    assert w.try_acquire(13.0) == 0.0


def test_window_in_flight_cap() -> None:
    w = Window(OperationLimit(per_window=100, in_flight=1), span=10.0)
    assert w.try_acquire(0.0) == 0.0
    assert w.try_acquire(0.0) == math.inf
    w.release(0.1)
    assert w.try_acquire(0.1) == 0.0
    w.give_back()
    assert w.in_flight == 0 and len(w.expiries) == 1


def test_rate_limits_validate_and_switch_off() -> None:
    with pytest.raises(ValueError, match="run"):
        RateLimits(limits={"run": OperationLimit(0, None)})
    with pytest.raises(ValueError, match="margin"):
        RateLimits(margin=-1)
    off = SyncLimiter(RateLimits.off())
    assert off.acquire("ep", "run") is None
    on = SyncLimiter(RateLimits())
    assert on.acquire("ep", "health") is None  # not in the table: not limited
    window = on.acquire("ep", "run")
    assert window is not None and window.span == pytest.approx(10.25)
    on.release(window)


def test_sync_limiter_deadline() -> None:
    limiter = SyncLimiter(RateLimits(limits={"run": OperationLimit(1, 1)}))
    first = limiter.acquire("ep", "run")
    with pytest.raises(TimeoutError):
        limiter.acquire("ep", "run", deadline=time.monotonic() + 0.05)
    limiter.release(first)


def test_async_limiter_serves_waiters_in_order_and_survives_cancellation() -> None:
    async def main() -> list[int]:
        limiter = AsyncLimiter(RateLimits(limits={"run": OperationLimit(100, 1)}))
        order: list[int] = []
        held = await limiter.acquire("ep", "run")

        async def worker(i: int) -> None:
            window = await limiter.acquire("ep", "run")
            order.append(i)
            await asyncio.sleep(0)
            limiter.release(window)

        tasks = [asyncio.create_task(worker(i)) for i in range(5)]
        await asyncio.sleep(0.01)
        tasks[2].cancel()  # a cancelled waiter must not take (or leak) a slot
        limiter.release(held)
        await asyncio.gather(*tasks, return_exceptions=True)
        with pytest.raises(TimeoutError):
            busy = await limiter.acquire("ep", "run")
            await limiter.acquire("ep", "run", deadline=time.monotonic() + 0.02)
        limiter.release(busy)
        assert (await limiter.acquire("ep", "run")) is not None
        return order

    assert asyncio.run(main()) == [0, 1, 3, 4]


CAPPED = {"status-sync": OperationLimit(1000, 3)}


@pytest.fixture(scope="module")
def capped() -> Iterator[Emulator]:
    with Emulator({"slow": slow}, api_key=API_KEY, time_scale=0.01, rate_limits=CAPPED) as emulator:
        yield emulator


def _wait_from_12_threads(api: Api) -> set[str]:
    """12 threads wait on one 0.4 s job: each status-sync long-poll is held until it ends, so without a
    client-side cap 12 are in flight at once against a server cap of 3."""
    from runpod_queue import RateLimitError

    ep = api.endpoint("slow")
    job = ep.run({"s": 0.4})
    barrier = threading.Barrier(12)

    def hit(_: int) -> str:
        barrier.wait()
        try:
            return ep.wait(job.id, timeout=20).status.value
        except RateLimitError:
            return "429"

    with ThreadPoolExecutor(12) as pool:
        return set(pool.map(hit, range(12)))


def test_in_flight_cap_shared_by_threads_and_tasks(connect: Callable[..., Api], capped: Emulator) -> None:
    limits = RateLimits(limits=CAPPED)
    api = connect(api_key=API_KEY, base_url=capped.base_url, retries=Retries.off(), rate_limits=limits)
    assert _wait_from_12_threads(api) == {"COMPLETED"}  # retries off: a single 429 would show


def test_without_the_limiter_the_same_load_gets_429(connect: Callable[..., Api], capped: Emulator) -> None:
    api = connect(api_key=API_KEY, base_url=capped.base_url, retries=Retries.off(), rate_limits=False)
    assert "429" in _wait_from_12_threads(api)


def test_burst_of_3000_runs_gets_no_429_against_real_limits() -> None:
    """3000 /run calls through one AsyncClient, retries off so any 429 would raise. The run limit is
    1000 per 10 s, so this takes about 20 s: the limiter waits instead of failing."""

    async def main(base_url: str) -> set[str]:
        async with AsyncClient(API_KEY, base_url=base_url, retries=Retries.off()) as client:
            ep = client.endpoint("burst")
            jobs = await asyncio.gather(*(ep.run({"i": i}) for i in range(3000)))
            return {job.id for job in jobs}

    with Emulator({"burst": EndpointSpec(handler=echo, workers=0)}, api_key=API_KEY, rate_limits=True) as emu:
        assert len(asyncio.run(main(emu.base_url))) == 3000
