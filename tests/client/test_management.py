"""Management / AsyncManagement against the emulator's REST v2 routes, one parametrized test per behaviour
so the sync and async clients cannot drift."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from runpod_queue import APIStatusError, AsyncManagement, EndpointInfo, Management, Workers
from runpod_queue.emulator import Emulator, EndpointSpec

KEY = "mgmt-client-key"


def echo(job: dict[str, Any]) -> Any:
    return job["input"]


@pytest.fixture
def emu() -> Iterator[Emulator]:
    endpoints = {"scaled": EndpointSpec(echo, workers_max=3, cold_start=10), "fixed": echo}
    with Emulator(endpoints, api_key=KEY, clock="virtual") as emu:
        yield emu


def _sync(emu: Emulator, method: str, *args: Any, **kwargs: Any) -> Any:
    with Management(KEY, base_url=emu.management_url) as mgmt:
        return getattr(mgmt, method)(*args, **kwargs)


def _async(emu: Emulator, method: str, *args: Any, **kwargs: Any) -> Any:
    async def main() -> Any:
        async with AsyncManagement(KEY, base_url=emu.management_url) as mgmt:
            return await getattr(mgmt, method)(*args, **kwargs)

    return asyncio.run(main())


Call = Callable[..., Any]
both = pytest.mark.parametrize("call", [_sync, _async], ids=["sync", "async"])


@both
def test_endpoint_reads_the_settings(emu: Emulator, call: Call) -> None:
    info = call(emu, "endpoint", "scaled")
    assert isinstance(info, EndpointInfo)
    assert (info.workers_min, info.workers_max, info.idle_timeout) == (0, 3, 5.0)
    assert (info.scaler, info.scaler_value, info.timeout, info.type) == ("queue_delay", 4.0, 600.0, "QUEUE")


@both
def test_update_endpoint_raises_min_and_a_cold_worker_appears(emu: Emulator, call: Call) -> None:
    info = call(emu, "update_endpoint", "scaled", workers_min=1, idle_timeout=30, execution_timeout=120)
    assert (info.workers_min, info.idle_timeout, info.timeout) == (1, 30.0, 120.0)
    workers = call(emu, "workers", "scaled")
    assert isinstance(workers, Workers)
    assert workers.summary.initializing == 1 and workers.summary.total == 1
    assert [w.status for w in workers.workers] == ["INITIALIZING"]
    emu.advance(10)
    [worker] = call(emu, "workers", "scaled").workers
    assert (worker.status, worker.uptime) == ("IDLE", 0.0)


@both
def test_update_endpoint_switches_to_request_count(emu: Emulator, call: Call) -> None:
    info = call(emu, "update_endpoint", "scaled", scaler="request_count", scaler_value=2)
    assert (info.scaler, info.scaler_value, info.idle_timeout) == ("request_count", 2.0, None)


@both
def test_refusals_are_api_status_errors_with_the_servers_reason(emu: Emulator, call: Call) -> None:
    with pytest.raises(APIStatusError) as refused:
        call(emu, "update_endpoint", "fixed", workers_max=4)
    assert refused.value.status_code == 409
    assert "serve it as a fleet" in str(refused.value)
    with pytest.raises(APIStatusError) as missing:
        call(emu, "endpoint", "nope")
    assert missing.value.status_code == 404
    assert KEY not in str(missing.value) + repr(missing.value)


@both
def test_bad_arguments_are_refused_before_sending(emu: Emulator, call: Call) -> None:
    emu.clear_requests()
    with pytest.raises(ValueError, match="at least one setting"):
        call(emu, "update_endpoint", "scaled")
    with pytest.raises(ValueError, match=r"workers_min \(3\) is above workers_max \(1\)"):
        call(emu, "update_endpoint", "scaled", workers_min=3, workers_max=1)
    with pytest.raises(ValueError, match="scaler_value together"):
        call(emu, "update_endpoint", "scaled", scaler="queue_delay")
    with pytest.raises(ValueError, match="idle_timeout"):
        call(emu, "update_endpoint", "scaled", idle_timeout=0)
