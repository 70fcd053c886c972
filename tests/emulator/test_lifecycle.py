"""The state machine: queue order, ttl, executionTimeout, retention, cancel, retry, purge, health.

Every rule that is about time runs on a virtual clock: the test moves time with `emu.advance()` and
checks the job just before and exactly at the instant the rule says, with no sleeping.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from emulator_support import (
    CANCELLED,
    KEY,
    SEEN,
    Http,
    async_held,
    blocking,
    echo,
    eventually,
    gate,
    held,
    started,
)

from runpod_queue.emulator import Emulator, EndpointSpec, Timings

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}


@contextmanager
def virtual(endpoints: dict[str, Any], **options: Any) -> Iterator[tuple[Emulator, Http]]:
    """A fresh emulator on a virtual clock (now == 0) and a client for it."""
    with Emulator(endpoints, clock="virtual", **options) as emu:
        http = Http(emu, key=None)
        try:
            yield emu, http
        finally:
            http.close()


def _gone(http: Http, endpoint: str, job_id: str) -> bool:
    return http.get(endpoint, f"status/{job_id}").status_code == 404


@pytest.fixture
def one_worker() -> Iterator[Http]:
    """A fresh emulator whose `one` endpoint has a single worker (for ordering)."""
    with Emulator({"one": EndpointSpec(held, workers=1)}, api_key=KEY, clock="virtual") as emu:
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


# -- ttl ------------------------------------------------------------------------------------------


def test_ttl_running_out_in_the_queue_times_the_job_out() -> None:
    with virtual({"q": EndpointSpec(echo, workers=0)}) as (emu, http):
        job_id = http.run("q", {}, policy={"ttl": 10_000})
        emu.advance(9.999)
        assert http.status("q", job_id) == {"id": job_id, "status": "IN_QUEUE"}
        emu.advance(0.001)
        assert http.status("q", job_id) == {"id": job_id, "status": "TIMED_OUT"}
        assert http.health("q")["jobs"] == {
            "completed": 0,
            "failed": 1,
            "inProgress": 0,
            "inQueue": 0,
            "retried": 0,
        }


def test_default_ttl_is_a_day() -> None:
    with virtual({"q": EndpointSpec(echo, workers=0)}) as (emu, http):
        job_id = http.run("q", {})
        emu.advance(timedelta(days=1) - timedelta(milliseconds=1))
        assert http.status("q", job_id)["status"] == "IN_QUEUE"
        emu.advance(0.001)
        assert http.status("q", job_id)["status"] == "TIMED_OUT"


def test_a_ttl_longer_than_the_execution_timeout_still_times_out_a_job_left_waiting() -> None:
    # Such a job's ttl timer is set only once it is known to wait (one started at once needs none).
    with virtual({"a": EndpointSpec(async_held, workers=1)}) as (emu, http):
        blocker = http.run("a", {"gate": "ttl-blocker"})
        assert started("ttl-blocker").wait(5)
        waiting = http.run("a", {"gate": "ttl-waiting"}, policy={"ttl": 20_000, "executionTimeout": 5_000})
        emu.advance(19.999)
        assert http.status("a", waiting)["status"] == "IN_QUEUE"
        emu.advance(0.001)
        assert http.status("a", waiting)["status"] == "TIMED_OUT"
        gate("ttl-blocker").set()
        assert http.wait("a", blocker)["status"] == "COMPLETED"


def test_ttl_running_out_mid_run_removes_the_job_and_cancels_its_handler() -> None:
    with virtual({"a": async_held}) as (emu, http):
        job_id = http.run("a", {"gate": "ttlrun"}, policy={"ttl": 20_000, "executionTimeout": 600_000})
        assert started("ttlrun").wait(5)
        emu.advance(19.999)
        assert http.status("a", job_id)["status"] == "IN_PROGRESS"
        emu.advance(0.001)
        assert _gone(http, "a", job_id)
        eventually(lambda: "ttlrun" in CANCELLED)
        assert http.health("a")["jobs"]["inProgress"] == 0


# -- executionTimeout -----------------------------------------------------------------------------


def test_execution_timeout_counts_from_start_and_cancels_an_async_handler() -> None:
    with virtual({"a": EndpointSpec(async_held, workers=1)}) as (emu, http):
        first = http.run("a", {"gate": "exec-first"})
        assert started("exec-first").wait(5)
        timed = http.run("a", {"gate": "exec"}, policy={"executionTimeout": 5_000})
        emu.advance(3)  # queued behind the first job: its executionTimeout has not started
        gate("exec-first").set()
        http.wait("a", first)
        assert started("exec").wait(5)
        emu.advance(4.999)
        assert http.status("a", timed)["status"] == "IN_PROGRESS"
        emu.advance(0.001)
        body = http.status("a", timed)
        assert body["status"] == "TIMED_OUT"
        assert (body["delayTime"], body["executionTime"]) == (3000, 5000)
        eventually(lambda: "exec" in CANCELLED)


def test_execution_timeout_of_a_blocking_sync_handler_replaces_the_worker() -> None:
    with virtual({"b": blocking}) as (emu, http):
        job_id = http.run("b", {}, policy={"executionTimeout": 5_000})
        assert started("blocking").wait(5)
        emu.advance(5)
        body = http.status("b", job_id)
        assert body["status"] == "TIMED_OUT"
        # The endpoint still serves: a fresh worker took the stuck one's place.
        gate("blocking").set()
        done = http.wait("b", http.run("b", {}))
        assert done["status"] == "COMPLETED" and done["workerId"] != body["workerId"]


def test_default_execution_timeout_is_ten_minutes() -> None:
    with virtual({"a": async_held}) as (emu, http):
        job_id = http.run("a", {"gate": "exec-default"})
        assert started("exec-default").wait(5)
        emu.advance(599.999)
        assert http.status("a", job_id)["status"] == "IN_PROGRESS"
        emu.advance(0.001)
        assert http.status("a", job_id)["status"] == "TIMED_OUT"


# -- retention ------------------------------------------------------------------------------------


def test_results_are_kept_30_min_after_run_and_1_min_after_runsync() -> None:
    with virtual({"e": echo}) as (emu, http):
        run_id = http.run("e", {})
        assert http.wait("e", run_id)["status"] == "COMPLETED"
        sync_id = http.post("e", "runsync", json={"input": {}}).json()["id"]
        emu.advance(59.999)
        assert http.status("e", sync_id)["status"] == "COMPLETED"
        emu.advance(0.001)
        assert _gone(http, "e", sync_id)
        emu.advance(1800 - 60 - 0.001)
        assert http.status("e", run_id)["status"] == "COMPLETED"
        emu.advance(0.001)
        answer = http.get("e", f"status/{run_id}")
        assert answer.status_code == 404 and "retention" in answer.json()["error"]


def test_runsync_answers_its_result_even_when_retention_ended_before_the_answer() -> None:
    # Retention 0: the result is gone from /status at once, but the held runsync still gets it (under
    # load the answer can resume after a short retention ran out; it answered 404 "ttl ran out").
    with virtual({"e": echo}, timings=Timings(retention_sync=0)) as (_, http):
        answer = http.post("e", "runsync", json={"input": {"x": 1}})
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "COMPLETED" and answer.json()["output"] == {"x": 1}
        assert _gone(http, "e", answer.json()["id"])


def test_status_ttl_shortens_retention_but_never_lengthens_it() -> None:
    with virtual({"e": echo}) as (emu, http):
        short, long = http.run("e", {}), http.run("e", {})
        http.wait("e", short)
        http.wait("e", long)
        assert http.get("e", f"status/{short}", params={"ttl": 1000}).status_code == 200
        assert http.get("e", f"status/{long}", params={"ttl": 7_200_000}).status_code == 200  # 2 h
        emu.advance(0.999)
        assert http.status("e", short)["status"] == "COMPLETED"
        emu.advance(0.001)
        assert _gone(http, "e", short)
        emu.advance(1800 - 1)
        assert _gone(http, "e", long)  # still the 30 min retention


def test_status_ttl_given_before_the_end_applies_from_the_end() -> None:
    with virtual({"q": EndpointSpec(echo, workers=0)}) as (emu, http):
        job_id = http.run("q", {}, policy={"ttl": 10_000})
        assert http.get("q", f"status/{job_id}", params={"ttl": 2000}).status_code == 200
        emu.advance(10)  # TIMED_OUT now: kept 2 s from here, not 30 min
        emu.advance(1.999)
        assert http.status("q", job_id)["status"] == "TIMED_OUT"
        emu.advance(0.001)
        assert _gone(http, "q", job_id)


def test_overridden_timings_apply_to_one_rule() -> None:
    with virtual({"e": echo}, timings=Timings(retention_run=timedelta(seconds=5))) as (emu, http):
        run_id = http.run("e", {})
        http.wait("e", run_id)
        sync_id = http.post("e", "runsync", json={"input": {}}).json()["id"]
        emu.advance(5)
        assert _gone(http, "e", run_id)
        assert http.status("e", sync_id)["status"] == "COMPLETED"  # runsync keeps its 1 min


def test_finished_jobs_past_the_cap_are_forgotten_oldest_first_and_warned_once() -> None:
    with virtual({"e": echo, "q": EndpointSpec(echo, workers=0)}, timings=Timings(max_retained_jobs=3)) as (
        emu,
        http,
    ):
        queued = http.run("q", {})  # never finishes: not counted, never forgotten
        ids = []
        for n in range(5):
            ids.append(http.run("e", {"n": n}))
            http.wait("e", ids[-1])
        assert [_gone(http, "e", job_id) for job_id in ids] == [True, True, False, False, False]
        assert emu.forgotten_jobs == 2
        assert http.status("q", queued)["status"] == "IN_QUEUE"
        (warning,) = [w for w in emu.warnings if w.kind == "jobs_forgotten"]
        assert "more than 3 finished jobs" in warning and "max_retained_jobs" in warning
        # A job forgotten by its retention leaves room: nothing more is evicted early.
        emu.advance(1800)
        again = http.run("e", {})
        http.wait("e", again)
        assert emu.forgotten_jobs == 2 and http.status("e", again)["status"] == "COMPLETED"
        assert len([w for w in emu.warnings if w.kind == "jobs_forgotten"]) == 1


def test_max_retained_jobs_is_a_positive_count_or_none() -> None:
    assert (
        Timings().max_retained_jobs == 100_000 and Timings(max_retained_jobs=None).max_retained_jobs is None
    )
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=r"max_retained_jobs must be an int >= 1 or None"):
            Timings(max_retained_jobs=bad)  # type: ignore[arg-type]


def test_timings_are_seconds_and_say_so_when_wrong() -> None:
    assert Timings(retention_run=timedelta(minutes=2)).retention_run == 120.0
    assert Timings().retention_run == 1800.0 and Timings().job_take_hold == 20.0
    with pytest.raises(ValueError, match=r"Timings.retention_sync must be at least 0 seconds"):
        Timings(retention_sync=-1)
    with pytest.raises(TypeError, match=r"Timings.webhook_retry_gap must be a number of seconds"):
        Timings(webhook_retry_gap="10s")  # type: ignore[arg-type]


def test_time_scale_shortens_rules_on_a_real_clock() -> None:
    # The one real-clock lifecycle check: 30 min retention at time_scale 1e-5 is 18 ms of real time.
    with Emulator({"e": echo}, time_scale=0.00001) as emu:
        http = Http(emu, key=None)
        job_id = http.run("e", {})
        eventually(lambda: _gone(http, "e", job_id))
        http.close()


# -- delayTime / executionTime ----------------------------------------------------------------------


def test_delay_and_execution_times_are_virtual_ms() -> None:
    with virtual({"one": EndpointSpec(held, workers=1)}) as (emu, http):
        first = http.run("one", {"gate": "t1"})
        assert started("t1").wait(5)
        second = http.run("one", {"gate": "t2"})
        emu.advance(2.5)  # the second job waits in the queue behind the first
        gate("t1").set()
        assert started("t2").wait(5)
        emu.advance(1.25)
        gate("t2").set()
        first_body, second_body = http.wait("one", first), http.wait("one", second)
        assert (first_body["delayTime"], first_body["executionTime"]) == (0, 2500)
        assert (second_body["delayTime"], second_body["executionTime"]) == (2500, 1250)


# -- cancel ---------------------------------------------------------------------------------------


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


def test_cancel_of_cancelled_and_timed_out_jobs_is_refused() -> None:
    with virtual({"q": EndpointSpec(echo, workers=0)}) as (emu, http):
        cancelled = http.run("q", {})
        http.post("q", f"cancel/{cancelled}")
        assert http.post("q", f"cancel/{cancelled}").status_code == 400
        timed_out = http.run("q", {}, policy={"ttl": 10_000})
        emu.advance(10)
        answer = http.post("q", f"cancel/{timed_out}")
        assert answer.status_code == 400 and "TIMED_OUT" in answer.json()["error"]


# -- retry ----------------------------------------------------------------------------------------


def test_retry_of_a_failed_job_keeps_its_id_and_input(http: Http) -> None:
    job_id = http.run("faildict", {"p": 1})
    first = http.wait("faildict", job_id)
    assert first["status"] == "FAILED"
    failed_before = http.health("faildict")["jobs"]["failed"]
    assert http.post("faildict", f"retry/{job_id}").json() == {"id": job_id, "status": "IN_QUEUE"}
    second = http.wait("faildict", job_id)
    assert second["status"] == "FAILED" and second["error"] == "prompt is required"
    assert http.health("faildict")["jobs"]["failed"] == failed_before + 1


def test_retry_of_a_timed_out_job_requeues_it_and_its_ttl_counts_again() -> None:
    with virtual({"q": EndpointSpec(echo, workers=0)}) as (emu, http):
        job_id = http.run("q", {"keep": True}, policy={"ttl": 10_000})
        emu.advance(10)
        assert http.status("q", job_id)["status"] == "TIMED_OUT"
        assert http.post("q", f"retry/{job_id}").status_code == 200
        assert http.status("q", job_id) == {"id": job_id, "status": "IN_QUEUE"}
        assert http.health("q")["jobs"]["inQueue"] == 1
        emu.advance(9.999)
        assert http.status("q", job_id)["status"] == "IN_QUEUE"
        emu.advance(0.001)
        assert http.status("q", job_id)["status"] == "TIMED_OUT"


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


# -- purge & health -------------------------------------------------------------------------------


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
