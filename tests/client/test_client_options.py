"""``with_options``: per-call timeout and retries on a client that shares its parent's connection pool and
rate limiter — sync and async through one body, against a real loopback server."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from client_support import API_KEY, Api, LoopbackServer

from runpod_queue import (
    APITimeoutError,
    OperationLimit,
    RateLimits,
    Retries,
    RetryNotice,
    ServerError,
    WaitTimeoutError,
)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    """``/ep/...`` answers a completed job; ``/flaky/`` too, after two 503s; ``/slow/`` never answers."""
    flaky = iter(range(10**6))
    lock = threading.Lock()

    def answer(method: str, path: str) -> tuple[int, Any] | str:
        if path.startswith("/v2/slow/"):
            return "hang"
        if path.startswith("/v2/flaky/"):
            with lock:
                if next(flaky) < 2:
                    return 503, {"error": "busy"}
        return 200, {"id": "j1", "status": "COMPLETED"}

    s = LoopbackServer(answer)
    yield s
    s.close()


def test_a_derived_client_shares_the_pool_and_its_close_leaves_it_open(
    connect: Callable[..., Api], server: LoopbackServer
) -> None:
    parent = connect(api_key=API_KEY, base_url=server.base_url)
    derived = parent.with_options(timeout=5)
    assert parent.endpoint("ep").status("j1").is_completed
    assert derived.endpoint("ep").status("j1").is_completed
    derived.close()  # a no-op: the pool is the parent's
    assert parent.endpoint("ep").status("j1").is_completed
    assert derived.endpoint("ep").status("j1").is_completed  # still usable: only the parent closes it
    ports = {port for _, _, port in server.requests}
    assert len(server.requests) == 4 and len(ports) == 1  # one kept-alive connection served them all


def test_a_derived_client_shares_the_rate_limiter(
    connect: Callable[..., Api], server: LoopbackServer
) -> None:
    one_status = RateLimits(limits={"status": OperationLimit(per_window=1, in_flight=None)}, window=60)
    parent = connect(api_key=API_KEY, base_url=server.base_url, rate_limits=one_status)
    assert parent.endpoint("ep").status("j1").is_completed  # spends the window's only slot
    with pytest.raises(WaitTimeoutError):  # a wait this short polls /status: it gets no slot in time
        parent.with_options(retries=Retries.off()).endpoint("ep").wait("j1", timeout=0.1)
    assert len(server.requests) == 1  # the derived client waited for the parent's slot: nothing sent
    stranger = connect(api_key=API_KEY, base_url=server.base_url, rate_limits=one_status)
    assert stranger.endpoint("ep").wait("j1", timeout=0.1).is_completed  # its own limiter, its own slot


def test_a_derived_client_has_its_own_timeout_and_retries(
    connect: Callable[..., Api], server: LoopbackServer
) -> None:
    parent = connect(api_key=API_KEY, base_url=server.base_url, retries=Retries(attempts=3, wait=False))
    once = parent.with_options(retries=Retries.off())
    with pytest.raises(ServerError):
        once.endpoint("flaky").status("j1")  # 503, and no second attempt
    assert parent.endpoint("flaky").status("j1").is_completed  # 503, then the retry gets through
    assert [path for _, path, _ in server.requests] == ["/v2/flaky/status/j1"] * 3

    impatient = parent.with_options(timeout=0.05)
    with pytest.raises(APITimeoutError):
        impatient.with_options(retries=Retries.off()).endpoint("slow").status("j1")
    assert impatient.endpoint("ep").status("j1").is_completed  # the same pool still serves it

    assert (impatient.client.timeout, impatient.client.retries) == (0.05, parent.client.retries)
    assert parent.client.timeout == 30.0 and parent.client.retries == Retries(attempts=3, wait=False)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"timeout": 0}, ValueError), ({"timeout": "5"}, TypeError), ({"retries": 3}, TypeError)],
)
def test_with_options_checks_its_arguments(
    connect: Callable[..., Api], server: LoopbackServer, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    api = connect(api_key=API_KEY, base_url=server.base_url)
    with pytest.raises(error):
        api.client.with_options(**kwargs)


def test_each_retry_is_told_before_its_pause_also_on_a_derived_client(
    connect: Callable[..., Api], server: LoopbackServer
) -> None:
    """The hook behind `rpq`'s "retrying" line: one notice per retry (none for a first-try answer), with
    the attempt about to be made, how many there may be, and why."""
    notices: list[RetryNotice] = []
    parent = connect(
        api_key=API_KEY,
        base_url=server.base_url,
        retries=Retries(attempts=4, wait=False),
        on_retry=notices.append,
    )
    assert parent.endpoint("ep").status("j1").is_completed
    assert notices == []
    derived = parent.with_options(timeout=5)  # keeps the parent's hook
    assert derived.endpoint("flaky").status("j1").is_completed  # two 503s, then an answer
    assert [(n.attempt, n.attempts, n.delay) for n in notices] == [(2, 4, 0.0), (3, 4, 0.0)]
    assert all(isinstance(n.error, ServerError) and n.error.status_code == 503 for n in notices)
    assert notices[0].url == f"{server.base_url}/flaky/status/j1"
