"""`Endpoint.diagnose` / `AsyncEndpoint.diagnose`: each reason a job waits, at the instant before its rule
applies and at it, on the emulator's virtual clock; sync and async held to the same test body."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from client_support import Api

from runpod_queue import Diagnosis, JobStatus, NotFoundError, WaitReason
from runpod_queue.emulator import Emulator, EndpointSpec, Timings

KEY = "diagnosis-key"
REASON = "RuntimeError: model weights missing at /models"


def echo(job: dict[str, Any]) -> Any:
    return job["input"]


class Gate:
    """A handler that holds each job until released, so a job can be seen running and a queue behind it."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, job: dict[str, Any]) -> Any:
        self.event.wait(30)
        return job["input"]


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.event.set()


Start = Callable[..., Emulator]


@pytest.fixture
def start() -> Iterator[Start]:
    started: list[Emulator] = []

    def make(endpoints: dict[str, Any], **options: Any) -> Emulator:
        options.setdefault("timings", Timings(job_take_hold=3600, worker_lost_after=30))
        emu = Emulator(endpoints, api_key=KEY, clock="virtual", rate_limits=False, **options).start()
        started.append(emu)
        return emu

    yield make
    for emu in started:
        emu.stop()


def _api(connect: Callable[..., Api], emu: Emulator, **kwargs: Any) -> Any:
    return connect(api_key=KEY, base_url=emu.base_url, **kwargs).endpoint("ep")


def _why(ep: Any, job_id: str, **kwargs: Any) -> Diagnosis:
    found = ep.diagnose(job_id, **kwargs)
    assert isinstance(found, Diagnosis)
    return found


def test_cold_start_until_its_end_then_not_waiting(connect: Callable[..., Api], start: Start) -> None:
    emu = start({"ep": EndpointSpec(echo, workers_max=1, cold_start=30)})
    ep = _api(connect, emu)
    job = ep.run({"n": 1})
    emu.advance(29.9)
    found = _why(ep, job.id)
    assert found.reason is WaitReason.COLD_START
    assert found.summary is not None and (found.summary.initializing, found.summary.total) == (1, 1)
    assert found.cold_start_since is not None and found.cold_start_since.endswith("Z")
    assert "INITIALIZING since" in found.message and found.jobs_in_queue == 1
    assert (found.workers_min, found.workers_max, found.unseen) == (0, 1, None)
    assert found.hint is not None and "rpq endpoint scale ep --min 1" in found.hint
    emu.advance(0.1)  # the cold start ends: the job runs and (echo) completes, on its worker's thread
    deadline = time.monotonic() + 10
    while ep.status(job.id).status is not JobStatus.COMPLETED:  # as a user would see it end
        assert time.monotonic() < deadline, "the job did not complete after its cold start"
        time.sleep(0.005)
    done = _why(ep, job.id)
    assert done.reason is WaitReason.NOT_WAITING
    assert "ended COMPLETED" in done.message and done.hint is None


def test_all_busy_at_max_names_the_max_and_a_running_job_is_not_waiting(
    connect: Callable[..., Api], start: Start, gate: Gate
) -> None:
    emu = start({"ep": EndpointSpec(gate, workers_max=1)})
    ep = _api(connect, emu)
    first = ep.run({"n": 1})
    second = ep.run({"n": 2})
    running = _why(ep, first.id)
    assert running.reason is WaitReason.NOT_WAITING and "running on worker" in running.message
    busy = _why(ep, second.id)
    assert busy.reason is WaitReason.ALL_BUSY
    assert "at its max of 1" in busy.message and "1 job queued" in busy.message
    assert busy.hint is not None and "--max 2" in busy.hint
    gate.event.set()
    assert ep.wait(second.id).status == "COMPLETED"


def test_all_busy_below_max_until_the_queue_delay_starts_a_worker(
    connect: Callable[..., Api], start: Start, gate: Gate
) -> None:
    spec = EndpointSpec(gate, workers_max=2, scaler="queue_delay", scaler_value=4, cold_start=10)
    emu = start({"ep": spec})
    ep = _api(connect, emu)
    ep.run({"n": 1})
    emu.advance(10)  # the first worker's cold start: it takes the first job
    second = ep.run({"n": 2})
    emu.advance(3.9)
    busy = _why(ep, second.id)
    assert busy.reason is WaitReason.ALL_BUSY and "the scaler adds workers" in busy.message
    emu.advance(0.1)  # waited the queue delay: the scaler starts a second worker, cold
    assert _why(ep, second.id).reason is WaitReason.COLD_START


def test_throttled_until_a_gpu_frees(connect: Callable[..., Api], start: Start) -> None:
    emu = start({"ep": EndpointSpec(echo, workers_max=2, cold_start=10)})
    emu.set_capacity("ep", gpus=0)
    ep = _api(connect, emu)
    job = ep.run({"n": 1})
    found = _why(ep, job.id)
    assert found.reason is WaitReason.THROTTLED and "THROTTLED" in found.message
    emu.set_capacity("ep", gpus=None)
    assert _why(ep, job.id).reason is WaitReason.COLD_START


def test_max_zero_allows_no_workers_until_it_is_raised(connect: Callable[..., Api], start: Start) -> None:
    emu = start({"ep": EndpointSpec(echo, workers_max=1, cold_start=10)})
    emu.update_endpoint("ep", workers_max=0)
    ep = _api(connect, emu)
    job = ep.run({"n": 1})
    found = _why(ep, job.id)
    assert found.reason is WaitReason.NO_WORKERS_ALLOWED
    assert "max workers is 0" in found.message and found.workers_max == 0
    assert found.hint == "`rpq endpoint scale ep --max N`"
    emu.update_endpoint("ep", workers_max=1)
    assert _why(ep, job.id).reason is WaitReason.COLD_START


@pytest.mark.parametrize(("idle_days", "expected"), [(7 - 1e-6, "cold_start"), (7, "no_workers_allowed")])
def test_an_endpoint_idle_seven_days_runs_no_worker(
    connect: Callable[..., Api], start: Start, idle_days: float, expected: str
) -> None:
    emu = start({"ep": EndpointSpec(echo, workers_max=3, cold_start=10)})
    emu.advance(idle_days * 86_400)
    ep = _api(connect, emu)
    job = ep.run({"n": 1})
    found = _why(ep, job.id)
    assert found.reason == expected
    if found.reason is WaitReason.NO_WORKERS_ALLOWED:
        assert "though its max is 3" in found.message and "after 7" in found.message


def _ping(emu: Emulator, worker: str, **params: Any) -> None:
    url = f"{emu.base_url}/ep/ping/{worker}"
    httpx.get(url, params=params, headers={"Authorization": KEY}).raise_for_status()


def _fails(emu: Emulator, worker: str) -> None:
    _ping(emu, worker, status="unhealthy", check="model_files", reason=REASON)


def test_an_idle_worker_then_one_unhealthy_then_a_crash_loop(
    connect: Callable[..., Api], start: Start
) -> None:
    emu = start({"ep": EndpointSpec(handler=None)})  # external (official) workers only
    ep = _api(connect, emu)
    _ping(emu, "w1", runpod_version="1.12.0")
    job = ep.run({"n": 1})
    idle = _why(ep, job.id)
    assert idle.reason is WaitReason.WORKER_IDLE and "not asking for jobs" in idle.message
    _fails(emu, "w1")
    unhealthy = _why(ep, job.id)
    assert unhealthy.reason is WaitReason.UNHEALTHY
    assert unhealthy.fitness_reasons == (f"fitness check model_files failed: {REASON}",)
    assert REASON in unhealthy.message
    _fails(emu, "w2")  # restarted under a new id, and failed again
    loop = _why(ep, job.id)
    assert loop.reason is WaitReason.CRASH_LOOP
    assert "2 workers are UNHEALTHY" in loop.message and loop.fitness_reasons == unhealthy.fitness_reasons
    assert loop.as_dict()["reason"] == "crash_loop"


def test_unhealthy_workers_counted_by_health_alone_when_the_management_api_refuses(
    connect: Callable[..., Api], start: Start
) -> None:
    emu = start({"ep": EndpointSpec(handler=None)})
    _fails(emu, "w1")

    def forward(request: httpx.Request) -> httpx.Response:
        if "/_management/" in request.url.path:
            return httpx.Response(403, json={"title": "Forbidden", "status": 403, "detail": "restricted key"})
        answer = httpx.request(request.method, request.url, headers=request.headers, content=request.content)
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    ep = _api(connect, emu, transport=httpx.MockTransport(forward))
    job = ep.run({"n": 1})
    found = _why(ep, job.id)
    assert found.reason is WaitReason.UNHEALTHY
    assert found.unseen is not None and "refused this key (403)" in found.unseen
    assert (found.endpoint, found.workers, found.workers_max, found.fitness_reasons) == (None, None, None, ())
    assert found.summary is not None and found.summary.unhealthy == 1
    assert "read the workers' logs" in found.message


def test_a_load_balancer_has_no_queue(connect: Callable[..., Api]) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "api.runpod.io", request.url  # nothing is asked of the queue API
        body = {"id": "ep", "type": "LOAD_BALANCER", "workers": {"min": 0, "max": 2, "idleTimeout": 5}}
        return httpx.Response(200, json=body)

    ep = connect(api_key=KEY, transport=httpx.MockTransport(answer)).endpoint("ep")
    found = _why(ep, "job-1")
    assert found.reason is WaitReason.NOT_A_QUEUE
    assert (found.job, found.health) == (None, None) and "load balancer" in found.message


def test_an_unknown_job_is_not_found(connect: Callable[..., Api], start: Start) -> None:
    emu = start({"ep": EndpointSpec(echo, workers_max=1)})
    with pytest.raises(NotFoundError):
        _why(_api(connect, emu), "no-such-job")


def test_against_runpods_hosts_the_management_api_is_api_runpod_io(connect: Callable[..., Api]) -> None:
    """The same code as for RunPod: queue at api.runpod.ai, management at api.runpod.io (mock_runpod
    routes both to its emulator)."""
    from runpod_queue.testing import mock_runpod

    with mock_runpod({"ep": EndpointSpec(echo, workers_max=2, cold_start=30)}, clock="virtual"):
        ep = connect(base_url="https://api.runpod.ai/v2").endpoint("ep")
        job = ep.run({"n": 1})
        found = _why(ep, job.id)
        assert found.reason is WaitReason.COLD_START and found.unseen is None
        assert (found.workers_min, found.workers_max) == (0, 2)


def test_the_management_url_follows_the_environment(
    connect: Callable[..., Api], start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = start({"ep": EndpointSpec(echo, workers_max=1, cold_start=30)})
    monkeypatch.setenv("RUNPOD_MANAGEMENT_BASE_URL", f"{emu.root_url}/nowhere")
    ep = _api(connect, emu)
    job = ep.run({"n": 1})
    found = _why(ep, job.id)  # the management API is not there: the queue API alone still answers
    assert found.reason is WaitReason.COLD_START and found.workers_max is None
    assert found.unseen is not None and "answered 404" in found.unseen
    assert _why(ep, job.id, management_url=emu.management_url).workers_max == 1  # the argument wins
