"""Every public route of the contract, over real HTTP, with the exact answers the contract describes."""

from __future__ import annotations

import re

import httpx
import pytest
from emulator_support import Http, answered_while_advancing, gate, held, started

from runpod_queue.emulator import Emulator
from shared_support import echo

JOB_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}-u1$")


def test_run_answers_id_and_in_queue_then_completes(http: Http) -> None:
    response = http.post("echo", "run", json={"input": {"x": 1}})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id", "status"} and body["status"] == "IN_QUEUE"
    assert JOB_ID.match(body["id"])
    done = http.wait("echo", body["id"])
    assert done["status"] == "COMPLETED" and done["output"] == {"x": 1}
    assert isinstance(done["delayTime"], int) and isinstance(done["executionTime"], int)
    assert re.fullmatch(r"[a-z0-9]{14}", done["workerId"])
    assert "retries" not in done  # only reported once the platform requeued the job


def test_runsync_returns_the_finished_job_with_a_sync_id(http: Http) -> None:
    body = http.post("echo", "runsync", json={"input": {"y": 2}}).json()
    assert body["status"] == "COMPLETED" and body["output"] == {"y": 2}
    assert body["id"].startswith("sync-")


def test_runsync_returns_id_and_state_when_not_done_within_wait() -> None:
    with Emulator({"held": held}, clock="virtual") as emu:
        http = Http(emu, key=None)
        answer = answered_while_advancing(
            emu,
            lambda: http.post("held", "runsync", params={"wait": 1000}, json={"input": {"gate": "rs"}}),
            step=1,
        )
        body = answer.json()
        assert set(body) == {"id", "status"} and body["status"] == "IN_PROGRESS"
        gate("rs").set()
        assert http.wait("held", body["id"])["output"] == {"released": "rs"}
        http.close()


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_status_get_and_post(http: Http, method: str) -> None:
    job_id = http.run("echo", {"m": method})
    http.wait("echo", job_id)
    response = http.client.request(method, f"/echo/status/{job_id}")
    assert response.status_code == 200 and response.json()["output"] == {"m": method}


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_status_sync_holds_until_terminal(http: Http, method: str) -> None:
    job_id = http.run("held", {"gate": f"ss{method}"})
    assert started(f"ss{method}").wait(5)
    gate(f"ss{method}").set()
    response = http.client.request(method, f"/held/status-sync/{job_id}", params={"wait": 300_000})
    assert response.json()["status"] == "COMPLETED"


def test_status_sync_returns_current_state_after_wait() -> None:
    with Emulator({"held": held}, clock="virtual") as emu:
        http = Http(emu, key=None)
        job_id = http.run("held", {"gate": "ssw"})
        assert started("ssw").wait(5)
        answer = answered_while_advancing(
            emu, lambda: http.get("held", f"status-sync/{job_id}", params={"wait": 1000}), step=1
        )
        body = answer.json()
        assert body["status"] == "IN_PROGRESS" and "workerId" in body
        http.close()


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_stream_hands_out_each_chunk_once(http: Http, method: str) -> None:
    name = f"st{method}"
    job_id = http.run("tokens", {"n": 3, "gate": name}, policy={"executionTimeout": 3_600_000})
    seen: list[str] = []
    for i in range(3):
        gate(f"{name}-{i}").set()  # let the generator yield chunk i
        while len(seen) <= i:
            answer = http.client.request(method, f"/tokens/stream/{job_id}", params={"wait": 300_000}).json()
            assert answer["id"] == job_id
            seen += [c["output"] for c in answer["stream"]]
    assert seen == ["t0", "t1", "t2"]
    final = http.wait("tokens", job_id)
    assert final["status"] == "COMPLETED"
    # Nothing is handed out twice.
    last = http.get("tokens", f"stream/{job_id}").json()
    assert last["stream"] == [] and last["status"] == "COMPLETED"


def test_stream_long_poll_returns_as_soon_as_a_chunk_arrives(http: Http) -> None:
    job_id = http.run("tokens", {"n": 1, "gate": "lp"})
    assert started("lp").wait(5)
    gate("lp-0").set()
    body = http.get("tokens", f"stream/{job_id}", params={"wait": 300_000}).json()
    assert [c["output"] for c in body["stream"]] == ["t0"]


def test_cancel_retry_purge_health_shapes(http: Http) -> None:
    job_id = http.run("idle", {})
    assert http.post("idle", f"cancel/{job_id}").json() == {"id": job_id, "status": "CANCELLED"}
    purge = http.post("idle", "purge-queue").json()
    assert purge == {"removed": 0, "status": "completed"}
    health = http.health("idle")
    assert set(health) == {"jobs", "workers"}
    assert set(health["jobs"]) == {"completed", "failed", "inProgress", "inQueue", "retried"}
    assert set(health["workers"]) == {"idle", "initializing", "ready", "running", "throttled", "unhealthy"}


def test_several_endpoints_each_run_their_own_handler(http: Http) -> None:
    assert http.post("echo", "runsync", json={"input": {"a": 1}}).json()["output"] == {"a": 1}
    assert http.post("aecho", "runsync", json={"input": {"a": 1}}).json()["output"] == {"async": {"a": 1}}
    job_id = http.run("echo", {})
    # A job id belongs to its endpoint.
    assert http.get("aecho", f"status/{job_id}").status_code == 404


def test_unknown_endpoint_route_and_method(http: Http) -> None:
    response = http.post("nope", "run", json={"input": {}})
    assert response.status_code == 404 and "nope" in response.json()["error"]
    assert http.post("echo", "frobnicate").status_code == 404
    assert http.get("echo", "run").status_code == 405
    assert http.get("echo", "status").status_code == 404  # missing job id
    assert http.client.get("/").status_code == 404


def test_trailing_slash_is_accepted(http: Http) -> None:
    assert http.client.get("/echo/health/").status_code == 200


def test_app_also_runs_without_a_server(emu: Emulator) -> None:
    """The ASGI app binds to whatever loop first calls it (httpx.ASGITransport, no lifespan)."""
    import asyncio

    from runpod_queue.emulator import Emulator as Fresh

    fresh = Fresh({"echo": echo})

    async def go() -> dict[str, object]:
        transport = httpx.ASGITransport(app=fresh.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://emu/v2") as client:
            answer = await client.post("/echo/runsync", json={"input": {"k": 1}})
            await fresh.app.aclose()
            return dict(answer.json())

    assert asyncio.run(go())["output"] == {"k": 1}
