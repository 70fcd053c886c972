"""The official client (`runpod.Endpoint`, `runpod.endpoint_url_base`) against the emulator.

Each operation behaves as against the real service, including the official client's own habits
(run_sync returns the output only, stream polls once a second, status strings not enums).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from emulator_support import Http
from external_support import runpod_imported, wait_for

from runpod_queue.emulator import Emulator, EndpointSpec
from shared_support import EmuSetup

KEY = "official-key"
_release = threading.Event()


def _echo(job: dict[str, Any]) -> Any:
    return {"echo": job["input"]}


def _slow(job: dict[str, Any]) -> Any:
    _release.wait(10)
    return {"slow": True}


def _fail(job: dict[str, Any]) -> Any:
    raise RuntimeError("official client sees this")


def _tokens(job: dict[str, Any]) -> Iterator[Any]:
    for i in range(job["input"]["n"]):
        yield f"t{i}"


@pytest.fixture(scope="module")
def official(emu: Emulator) -> Iterator[Any]:
    with runpod_imported():
        import runpod
    saved = runpod.api_key, runpod.endpoint_url_base
    runpod.api_key, runpod.endpoint_url_base = KEY, emu.base_url
    try:
        yield runpod
    finally:
        runpod.api_key, runpod.endpoint_url_base = saved


def _endpoints() -> dict[str, EndpointSpec]:
    return {
        "echo": EndpointSpec(handler=_echo),
        "slow": EndpointSpec(handler=_slow),
        "fail": EndpointSpec(handler=_fail),
        "tokens": EndpointSpec(handler=_tokens, return_aggregate_stream=True),
        "idle": EndpointSpec(handler=None),  # no worker ever: jobs stay queued
    }


@pytest.fixture(scope="module")
def emu_setup() -> EmuSetup:
    options = {"api_key": KEY, "workers": 1, "time_scale": 0.01}
    return EmuSetup(_endpoints, options, before_stop=_release.set)


def test_run_status_output(official: Any) -> None:
    job = official.Endpoint("echo").run({"a": 1})
    assert job.status() in {"IN_QUEUE", "IN_PROGRESS", "COMPLETED"}
    assert job.output(timeout=10) == {"echo": {"a": 1}}
    assert job.status() == "COMPLETED"


def test_run_sync_returns_the_output(official: Any) -> None:
    assert official.Endpoint("echo").run_sync({"b": 2}, timeout=30) == {"echo": {"b": 2}}


def test_failed_job_status_and_error(official: Any, emu: Emulator) -> None:
    job = official.Endpoint("fail").run({})
    wait_for(lambda: job.status() == "FAILED", what="FAILED")
    assert job.output() is None
    http = Http(emu, key=KEY)  # the official client has no public way to read the error
    assert "official client sees this" in http.status("fail", job.job_id)["error"]
    http.close()


def test_stream_yields_chunks_then_ends(official: Any) -> None:
    job = official.Endpoint("tokens").run({"n": 3})
    assert list(job.stream()) == ["t0", "t1", "t2"]
    assert job.output(timeout=10) == ["t0", "t1", "t2"]


def test_cancel_a_running_job(official: Any) -> None:
    job = official.Endpoint("slow").run({})
    wait_for(lambda: job.status() == "IN_PROGRESS", what="the job to start")
    answer = job.cancel()
    assert answer == {"id": job.job_id, "status": "CANCELLED"}
    assert job.status() == "CANCELLED"


def test_health_and_purge_queue(official: Any) -> None:
    endpoint = official.Endpoint("idle")
    jobs = [endpoint.run({"i": i}) for i in range(3)]
    health = endpoint.health()
    assert health["jobs"]["inQueue"] == 3
    assert set(health["workers"]) >= {"idle", "running", "unhealthy"}
    assert endpoint.purge_queue() == {"removed": 3, "status": "completed"}
    assert endpoint.health()["jobs"]["inQueue"] == 0
    with pytest.raises(requests.HTTPError) as raised:
        jobs[0].status()  # purged jobs are gone: 404, which the official client raises
    assert raised.value.response.status_code == 404
