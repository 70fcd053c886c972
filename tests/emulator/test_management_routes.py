"""REST v2's management subset in the emulator: GET/PATCH /serverless/{id}, GET …/workers with its summary,
Bearer auth, RFC 9457 problem+json errors and the IETF RateLimit headers (field names from runpod/docs
api-reference-v2/openapi.json)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from emulator_support import KEY

from runpod_queue.emulator import Emulator, EndpointSpec, WorkerState


def echo(job: dict[str, Any]) -> Any:
    return job["input"]


@pytest.fixture
def emu() -> Iterator[Emulator]:
    endpoints = {
        "scaled": EndpointSpec(echo, workers_max=3, cold_start=10, idle_timeout=60),
        "fixed": EndpointSpec(echo, workers=2),
    }
    with Emulator(endpoints, api_key=KEY, clock="virtual") as emu:
        yield emu


@pytest.fixture
def api(emu: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.management_url, headers={"Authorization": f"Bearer {KEY}"}) as http:
        yield http


def test_get_endpoint_in_rest_v2_shape(api: httpx.Client) -> None:
    answer = api.get("/serverless/scaled")
    assert answer.status_code == 200
    body = answer.json()
    assert body["workers"] == {"min": 0, "max": 3, "idleTimeout": 60}
    assert body["scaling"] == {"type": "QUEUE_DELAY", "queueDelay": 4.0}
    assert (body["type"], body["timeout"], body["flashboot"]) == ("QUEUE", 600_000, "OFF")
    assert body["requestUrls"]["run"] == "https://api.runpod.ai/v2/scaled/run"
    assert api.get("/serverless/fixed").json()["workers"] == {"min": 2, "max": 2, "idleTimeout": 5}


def test_patch_min_starts_a_cold_worker_shown_by_the_workers_route(emu: Emulator, api: httpx.Client) -> None:
    before = api.get("/serverless/scaled/workers").json()
    assert before["summary"]["total"] == 0 and before["workers"] == []
    patched = api.patch("/serverless/scaled", json={"workers": {"min": 1}, "timeout": 30_000})
    assert patched.status_code == 200
    assert patched.json()["workers"]["min"] == 1 and patched.json()["timeout"] == 30_000
    listed = api.get("/serverless/scaled/workers").json()
    assert listed["summary"] == {
        "running": 0,
        "idle": 0,
        "initializing": 1,
        "throttled": 0,
        "unhealthy": 0,
        "total": 1,
    }
    [worker] = listed["workers"]
    # Its container started (the cold start began); it is not running yet, so no uptime.
    assert (worker["status"], worker["uptimeSeconds"]) == ("INITIALIZING", None)
    started = worker["startedAt"]
    assert started is not None
    emu.advance(10)
    [worker] = api.get("/serverless/scaled/workers").json()["workers"]
    assert worker["status"] == "IDLE" and worker["uptimeSeconds"] == 0
    assert worker["startedAt"] == started  # the same start: uptime counts from the end of the cold start
    assert [w.status for w in emu.workers("scaled")] == [WorkerState.IDLE]
    # The endpoint's timeout is its jobs' default executionTimeout.
    job = httpx.post(f"{emu.base_url}/scaled/run", json={"input": {}}, headers={"Authorization": KEY}).json()
    assert emu.core.endpoints["scaled"].jobs[job["id"]].policy_execution_timeout == 30


def test_patch_scaling_switches_the_scaler(api: httpx.Client) -> None:
    body = api.patch(
        "/serverless/scaled", json={"scaling": {"type": "REQUEST_COUNT", "requestCount": 2}}
    ).json()
    assert body["scaling"] == {"type": "REQUEST_COUNT", "requestCount": 2}
    assert "idleTimeout" not in body["workers"]  # REST v2 omits it for request-count scaling


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"workers": {"min": -1}}, 400, "$.workers.min: must be an integer >= 0"),
        ({"workers": {"min": 5}}, 400, "min (5) is above max (3)"),
        ({"workers": {"idleTimeout": 0}}, 400, "$.workers.idleTimeout"),
        ({"scaling": {"type": "QUEUE_DELAY", "queueDelay": 0.1}}, 400, "$.scaling"),
        ({"gpu": {"count": 2}}, 422, "'gpu' is not emulated"),
    ],
)
def test_bad_patches_are_problem_json(
    api: httpx.Client, body: dict[str, Any], status: int, needle: str
) -> None:
    answer = api.patch("/serverless/scaled", json=body)
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["status"] == status and problem["title"]
    assert needle in problem["detail"] + " ".join(problem.get("errors", []))


def test_a_fixed_endpoint_refuses_to_scale_and_says_how(api: httpx.Client) -> None:
    answer = api.patch("/serverless/fixed", json={"workers": {"max": 5}})
    assert answer.status_code == 409
    assert "serve it as a fleet" in answer.json()["detail"]


def test_auth_unknown_endpoint_and_rate_limit_headers(emu: Emulator, api: httpx.Client) -> None:
    anonymous = httpx.get(f"{emu.management_url}/serverless/scaled")
    assert anonymous.status_code == 401 and anonymous.headers["content-type"] == "application/problem+json"
    assert KEY not in anonymous.text
    missing = api.get("/serverless/nope")
    assert missing.status_code == 404 and "scaled" in missing.json()["detail"]
    answer = api.get("/serverless/scaled")
    assert (
        answer.headers["ratelimit-policy"]
        == '"minute";q=60;w=60, "hour";q=3000;w=3600, "day";q=50000;w=86400'
    )
    assert answer.headers["ratelimit"].startswith('"minute";r=')
    statuses = [api.get("/serverless/scaled").status_code for _ in range(60)]
    assert statuses[-1] == 429
    limited = api.get("/serverless/scaled")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.json()["title"] == "Too Many Requests"
