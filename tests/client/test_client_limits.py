"""The client-side rate limiter: pure bookkeeping, in-flight caps under concurrency against the emulator,
and bursts over several rate windows with zero 429s against a server that counts as RunPod does."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from client_support import API_KEY, Api, LoopbackServer, slow

from runpod_queue import OperationLimit, RateLimitError, RateLimits, Retries
from runpod_queue._limits import AsyncLimiter, SyncLimiter, Window
from runpod_queue.emulator import Emulator


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
    with Emulator(
        {"slow": slow}, api_key=API_KEY, time_scale=0.01, rate_limits=RateLimits(limits=CAPPED)
    ) as emulator:
        yield emulator


def _wait_from_12_threads(api: Api) -> set[str]:
    """12 threads wait on one 0.4 s job: each status-sync long-poll is held until it ends, so without a
    client-side cap 12 are in flight at once against a server cap of 3."""
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


class WindowServer:
    """A loopback server that enforces a rate window the way RunPod does — counting each request when it
    arrives, over a sliding window, plus an in-flight cap — and answers 429 past either. The window is
    short (RunPod's is 10 s), so a burst spanning several windows takes a fraction of a second."""

    def __init__(self, limit: OperationLimit, window: float) -> None:
        self.limit, self.window = limit, window
        self.lock = threading.Lock()
        self.stamps: list[float] = []
        self.in_flight = self.rejected = 0
        self.server = LoopbackServer(self.answer)

    def answer(self, method: str, path: str) -> tuple[int, object]:
        with self.lock:
            now = time.monotonic()
            self.stamps = [t for t in self.stamps if t > now - self.window]
            if len(self.stamps) >= self.limit.per_window or self.in_flight >= (self.limit.in_flight or 0):
                self.rejected += 1
                return 429, {"error": "too many requests"}
            self.stamps.append(now)
            self.in_flight += 1
        time.sleep(0.002)  # long enough for requests to overlap
        with self.lock:
            self.in_flight -= 1
        return 200, {"id": f"job-{time.monotonic_ns()}", "status": "IN_QUEUE"}


@pytest.fixture
def window_server() -> Iterator[WindowServer]:
    s = WindowServer(OperationLimit(per_window=10, in_flight=3), window=0.1)
    yield s
    s.server.close()


def _burst(api: Api, runs: int) -> int:
    """``runs`` /run calls from 12 threads at once; how many got an answer."""
    ep = api.endpoint("burst")
    with ThreadPoolExecutor(12) as pool:
        return len(set(pool.map(lambda i: ep.run({"i": i}).id, range(runs))))


def test_a_burst_over_several_windows_gets_no_429(
    connect: Callable[..., Api], window_server: WindowServer
) -> None:
    """Retries off, so a single 429 would raise: the limiter waits instead, window after window."""
    limits = RateLimits(limits={"run": window_server.limit}, window=window_server.window, margin=0.0)
    api = connect(
        api_key=API_KEY, base_url=window_server.server.base_url, retries=Retries.off(), rate_limits=limits
    )
    assert _burst(api, 35) == 35
    assert window_server.rejected == 0 and len(window_server.server.requests) == 35


def test_without_the_limiter_the_same_burst_gets_429(
    connect: Callable[..., Api], window_server: WindowServer
) -> None:
    api = connect(
        api_key=API_KEY, base_url=window_server.server.base_url, retries=Retries.off(), rate_limits=False
    )
    with pytest.raises(RateLimitError):
        _burst(api, 35)
