"""The state machine: queue order, ttl, executionTimeout, retention, cancel, retry, purge, health."""

from __future__ import annotations

from typing import Any

import pytest
from emulator_support import CANCELLED, KEY, SEEN, Http, echo, eventually, gate, held, started

from runpod_queue.emulator import Emulator, EndpointSpec, Timings

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}


@pytest.fixture
def one_worker() -> Any:
    """A fresh emulator whose `one` endpoint has a single worker (for ordering)."""
    with Emulator({"one": EndpointSpec(held, workers=1)}, api_key=KEY, time_scale=0.01) as emu:
        client = Http(emu)
        yield client
        client.close()


def test_low_priority_jobs_run_after_normal_ones(one_worker: Http) -> None:
    http = one_worker
    blocker = http.run("one", {"gate": "block", "tag": "blocker"})
    assert started("block").wait(5)
    low = http.run("one", {"gate": "go", "tag": "low"}, policy={"lowPriority": True})
    normal1 = http.run("one", {"gate": "go", "tag": "normal1"})
    normal2 = http.run("one", {"gate": "go", "tag": "normal2"})
    gate("go").set()
    gate("block").set()
    for job_id in (blocker, low, normal1, normal2):
        assert http.wait("one", job_id)["status"] == "COMPLETED"
    assert SEEN == ["blocker", "normal1", "normal2", "low"]


def test_ttl_running_out_in_the_queue_times_the_job_out(http: Http) -> None:
    job_id = http.run("idle", {}, policy={"ttl": 10_000})  # 10 ms at this scale
    body = http.wait("idle", job_id)
    assert body["status"] == "TIMED_OUT"
    assert http.health("idle")["jobs"]["inQueue"] == 0


def test_ttl_running_out_mid_run_removes_the_job(http: Http) -> None:
    job_id = http.run("aheld", {"gate": "ttlrun"}, policy={"ttl": 20_000, "executionTimeout": 600_000})
    assert started("ttlrun").wait(5)
    eventually(lambda: http.get("aheld", f"status/{job_id}").status_code == 404)
    assert "ttlrun" in CANCELLED or eventually(lambda: "ttlrun" in CANCELLED) is None
    assert http.health("aheld")["jobs"]["inProgress"] == 0


def test_execution_timeout_counts_from_start_and_cancels_an_async_handler(http: Http) -> None:
    job_id = http.run("aheld", {"gate": "exec"}, policy={"executionTimeout": 20_000})
    body = http.wait("aheld", job_id)
    assert body["status"] == "TIMED_OUT"
    assert "executionTime" in body
    eventually(lambda: "exec" in CANCELLED)


def test_execution_timeout_of_a_blocking_sync_handler_replaces_the_worker(http: Http) -> None:
    job_id = http.run("blocking", {}, policy={"executionTimeout": 20_000})
    body = http.wait("blocking", job_id)
    assert body["status"] == "TIMED_OUT"
    old_worker = body["workerId"]
    # The endpoint still serves: a fresh worker took the stuck one's place.
    gate("blocking").set()
    job2 = http.run("blocking", {})
    done = http.wait("blocking", job2)
    assert done["status"] == "COMPLETED" and done["workerId"] != old_worker


def test_results_are_kept_for_the_retention_window_then_404(http: Http) -> None:
    emu = http.emu
    with Emulator({"e": echo}, time_scale=0.0005) as fast:  # 30 min → 0.9 s, 1 min → 30 ms
        client = Http(fast, key=None)
        run_id = client.run("e", {})
        assert client.wait("e", run_id)["status"] == "COMPLETED"
        sync_id = client.post("e", "runsync", json={"input": {}}).json()["id"]
        eventually(lambda: client.get("e", f"status/{sync_id}").status_code == 404)
        assert client.get("e", f"status/{run_id}").status_code == 200  # run jobs live 30x longer
        eventually(lambda: client.get("e", f"status/{run_id}").status_code == 404)
        answer = client.get("e", f"status/{run_id}").json()
        assert "retention" in answer["error"]
        client.close()
    assert emu is not None


def test_status_ttl_shortens_retention(http: Http) -> None:
    job_id = http.run("echo", {})
    http.wait("echo", job_id)
    assert http.get("echo", f"status/{job_id}", params={"ttl": 1000}).status_code == 200  # 1 ms here
    eventually(lambda: http.get("echo", f"status/{job_id}").status_code == 404)


def test_overridden_timings_apply_to_one_rule() -> None:
    with Emulator({"e": echo}, timings=Timings(retention_run_ms=5)) as emu:
        client = Http(emu, key=None)
        job_id = client.run("e", {})
        eventually(lambda: client.get("e", f"status/{job_id}").status_code == 404)
        client.close()


# -- cancel -------------------------------------------------------------------------------------


def test_cancel_in_queue(http: Http) -> None:
    job_id = http.run("idle", {})
    assert http.post("idle", f"cancel/{job_id}").json()["status"] == "CANCELLED"
    assert http.status("idle", job_id)["status"] == "CANCELLED"
    assert http.health("idle")["jobs"]["inQueue"] == 0


def test_cancel_in_progress_cancels_the_async_handler(http: Http) -> None:
    job_id = http.run("aheld", {"gate": "cancelme"}, policy={"executionTimeout": 600_000})
    assert started("cancelme").wait(5)
    assert http.post("aheld", f"cancel/{job_id}").status_code == 200
    assert http.status("aheld", job_id)["status"] == "CANCELLED"
    eventually(lambda: "cancelme" in CANCELLED)


@pytest.mark.parametrize("endpoint,expect", [("echo", "COMPLETED"), ("raises", "FAILED")])
def test_cancel_of_a_finished_job_is_refused_and_changes_nothing(
    http: Http, endpoint: str, expect: str
) -> None:
    job_id = http.run(endpoint, {})
    assert http.wait(endpoint, job_id)["status"] == expect
    response = http.post(endpoint, f"cancel/{job_id}")
    assert response.status_code == 400 and expect in response.json()["error"]
    assert http.status(endpoint, job_id)["status"] == expect


def test_cancel_of_cancelled_and_timed_out_jobs_is_refused(http: Http) -> None:
    cancelled = http.run("idle", {})
    http.post("idle", f"cancel/{cancelled}")
    assert http.post("idle", f"cancel/{cancelled}").status_code == 400
    timed_out = http.run("idle", {}, policy={"ttl": 10_000})
    http.wait("idle", timed_out)
    assert http.post("idle", f"cancel/{timed_out}").status_code == 400


# -- retry --------------------------------------------------------------------------------------


def test_retry_of_a_failed_job_keeps_its_id_and_input(http: Http) -> None:
    job_id = http.run("faildict", {"p": 1})
    first = http.wait("faildict", job_id)
    assert first["status"] == "FAILED"
    assert http.post("faildict", f"retry/{job_id}").json() == {"id": job_id, "status": "IN_QUEUE"}
    second = http.wait("faildict", job_id)
    assert second["status"] == "FAILED" and second["error"] == "prompt is required"
    assert http.health("faildict")["jobs"]["failed"] >= 2


def test_retry_of_a_timed_out_job_requeues_it_without_its_old_state() -> None:
    with Emulator({"q": EndpointSpec(echo, workers=0)}, time_scale=0.05) as emu:  # ttl 10 s → 0.5 s
        http = Http(emu, key=None)
        job_id = http.run("q", {"keep": True}, policy={"ttl": 10_000})
        assert http.wait("q", job_id)["status"] == "TIMED_OUT"
        assert http.post("q", f"retry/{job_id}").status_code == 200
        body = http.status("q", job_id)
        assert body == {"id": job_id, "status": "IN_QUEUE"}
        assert http.health("q")["jobs"]["inQueue"] == 1
        http.close()


@pytest.mark.parametrize("state", ["COMPLETED", "IN_QUEUE", "IN_PROGRESS", "CANCELLED"])
def test_retry_is_refused_unless_failed_or_timed_out(http: Http, state: str) -> None:
    if state == "COMPLETED":
        endpoint, job_id = "echo", http.run("echo", {})
        http.wait("echo", job_id)
    elif state == "IN_QUEUE":
        endpoint, job_id = "idle3", http.run("idle3", {})
    elif state == "IN_PROGRESS":
        endpoint, job_id = "held", http.run("held", {"gate": "retry-ip"})
        assert started("retry-ip").wait(5)
    else:
        endpoint, job_id = "idle3", http.run("idle3", {})
        http.post("idle3", f"cancel/{job_id}")
    response = http.post(endpoint, f"retry/{job_id}")
    assert response.status_code == 400 and state in response.json()["error"]
    assert http.status(endpoint, job_id)["status"] == state


# -- purge & health -----------------------------------------------------------------------------


def test_purge_removes_only_queued_jobs(one_worker: Http) -> None:
    http = one_worker
    running = http.run("one", {"gate": "purge-run"})
    assert started("purge-run").wait(5)
    queued = [http.run("one", {"gate": "purge-q"}) for _ in range(3)]
    assert http.post("one", "purge-queue").json() == {"removed": 3, "status": "completed"}
    for job_id in queued:
        assert http.get("one", f"status/{job_id}").status_code == 404
    assert http.status("one", running)["status"] == "IN_PROGRESS"
    gate("purge-run").set()
    assert http.wait("one", running)["status"] == "COMPLETED"


def test_health_counts_add_up(one_worker: Http) -> None:
    http = one_worker
    running = http.run("one", {"gate": "h-run"})
    assert started("h-run").wait(5)
    queued = [http.run("one", {"gate": "h-q"}) for _ in range(2)]
    health = http.health("one")
    assert health["jobs"]["inProgress"] == 1 and health["jobs"]["inQueue"] == 2
    assert health["workers"] == {
        "idle": 0,
        "initializing": 0,
        "ready": 0,
        "running": 1,
        "throttled": 0,
        "unhealthy": 0,
    }
    gate("h-q").set()
    gate("h-run").set()
    for job_id in [running, *queued]:
        http.wait("one", job_id)
    health = http.health("one")
    assert health["jobs"] == {"completed": 3, "failed": 0, "inProgress": 0, "inQueue": 0, "retried": 0}
    assert health["workers"]["idle"] == 1 and health["workers"]["ready"] == 1


def test_delay_and_execution_times_are_measured_in_ms(one_worker: Http) -> None:
    http = one_worker
    first = http.run("one", {"gate": "t1"})
    assert started("t1").wait(5)
    second = http.run("one", {"gate": "t2"})
    import time

    time.sleep(0.05)  # the second job waits in the queue behind the first for at least this long
    gate("t1").set()
    gate("t2").set()
    first_body, second_body = http.wait("one", first), http.wait("one", second)
    assert first_body["executionTime"] >= 50
    assert second_body["delayTime"] >= 50
    assert all(k in second_body for k in ("delayTime", "executionTime", "workerId"))
