"""`endpoint.batches` (RunPod's Batch Jobs), sync and async through one parametrized body, against the
emulator over real loopback HTTP on its virtual clock."""

from __future__ import annotations

from typing import Any

import pytest
from client_support import API_KEY, Api, AsyncApi

from runpod_queue import (
    BadRequestError,
    Batch,
    BatchRequestResult,
    BatchStatus,
    RateLimitError,
    WaitTimeoutError,
)
from runpod_queue.emulator import EndpointSpec
from shared_support import EmuSetup, echo

EMU = EmuSetup(
    lambda: {
        "echo": echo,
        "idle": EndpointSpec(echo, workers=0),
        "full": EndpointSpec(echo, workers=0),
        "big": EndpointSpec(echo, workers=0),
    },
    {"api_key": API_KEY, "clock": "virtual"},
)


@pytest.fixture(scope="module")
def emu_setup() -> EmuSetup:
    return EMU


class Batches:
    """The sync or async `endpoint.batches`, called the same way (async calls run on the portal)."""

    def __init__(self, api: Api, endpoint_id: str) -> None:
        self.api = api
        self.batches = api.client.endpoint(endpoint_id).batches

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.batches, name)
        api = self.api
        if not isinstance(api, AsyncApi):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            return api.portal.call(method(*args, **kwargs))

        return call

    def results(self, batch_id: str, **kwargs: Any) -> list[BatchRequestResult]:
        api = self.api
        if not isinstance(api, AsyncApi):
            return list(self.batches.results(batch_id, **kwargs))

        async def collect() -> list[BatchRequestResult]:
            return [r async for r in self.batches.results(batch_id, **kwargs)]

        return list(api.portal.call(collect()))


def test_create_add_finalize_wait_and_page_through_every_result(api: Api) -> None:
    batches = Batches(api, "echo")
    batch = batches.create(inputs=[{"key": n} for n in range(3)])
    assert isinstance(batch, Batch) and batch.status is BatchStatus.DRAFT and batch.total == 3
    assert batch.endpoint_id == "echo" and batch.created_at is not None
    assert batches.add(batch.id, [{"key": n} for n in range(3, 5)]) == 2
    assert batches.get(batch.id).total == 5
    assert batch.id in [b.id for b in batches.list()]
    assert batches.finalize(batch.id).status is BatchStatus.FINALIZED
    seen: list[Batch] = []
    done = batches.wait(batch.id, timeout=30, on_update=seen.append)
    assert done.is_done and done.completed == 5 and done.status is BatchStatus.FINALIZED
    assert seen and seen[-1] == done
    results = batches.results(batch.id, page_size=2)  # three pages
    assert sorted(r.output["key"] for r in results) == [0, 1, 2, 3, 4]
    assert all(r.status == "COMPLETED" and r.id.startswith("req_") and r.completed_at for r in results)


def test_add_splits_at_the_10_mib_limit_and_refuses_one_input_over_it(api: Api) -> None:
    batches = Batches(api, "big")
    batch = batches.create()
    three_mib = "x" * (3 * 2**20)
    assert batches.add(batch.id, [three_mib] * 5) == 5  # 15 MiB: one call would get a 413
    assert batches.get(batch.id).total == 5
    with pytest.raises(ValueError, match="over the 10,485,760-byte limit"):
        batches.add(batch.id, ["x" * (10 * 2**20)])
    batches.cancel(batch.id)


def test_cancel_ends_a_queued_batch_and_wait_sees_it_done(api: Api) -> None:
    batches = Batches(api, "idle")
    batch = batches.create(inputs=[{}, {}])
    batches.finalize(batch.id)
    cancelled = batches.cancel(batch.id)
    assert cancelled.status is BatchStatus.CANCELLED and cancelled.completed == 0
    assert batches.wait(batch.id, timeout=30).is_done
    assert [r.status for r in batches.results(batch.id)] == ["CANCELLED", "CANCELLED"]


def test_wait_gives_up_at_its_timeout(api: Api) -> None:
    batches = Batches(api, "idle")
    batch = batches.create(inputs=[{}])
    batches.finalize(batch.id)
    with pytest.raises(WaitTimeoutError) as caught:
        batches.wait(batch.id, timeout=0.001)
    assert caught.value.job_id == batch.id
    batches.cancel(batch.id)


def test_the_eleventh_active_batch_is_a_rate_limit_error(api: Api) -> None:
    batches = Batches(api, "full")
    made = [batches.create() for _ in range(10)]
    with pytest.raises(RateLimitError):
        batches.create()
    for batch in made:
        batches.cancel(batch.id)


def test_the_5001st_request_is_a_bad_request_error_and_adds_nothing(api: Api) -> None:
    batches = Batches(api, "big")
    with pytest.raises(BadRequestError, match="at most 5000"):
        batches.create(inputs=[{}] * 5_001)
    batch = batches.create(inputs=[{}] * 5_000)
    with pytest.raises(BadRequestError, match="at most 5000"):
        batches.add(batch.id, [{}])
    assert batches.get(batch.id).total == 5_000
    batches.cancel(batch.id)


def test_unknown_fields_and_statuses_are_kept() -> None:
    batch = Batch.from_dict({"id": "batch_1", "status": "PAUSED", "requestTotal": 2, "region": "eu"})
    assert batch.status == "PAUSED" and not batch.is_done and batch.raw["region"] == "eu"
    item = BatchRequestResult.from_dict({"id": "req_1", "status": "WAITING", "input": {"k": 1}})
    assert item.status == "WAITING" and item.input == {"k": 1} and item.output is None
    with pytest.raises(ValueError, match="'id'"):
        Batch.from_dict({"status": "DRAFT"})
