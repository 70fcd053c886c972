"""The alternative readings of rules RunPod's documents contradict (`Readings`), on the virtual clock.
The default readings are covered by test_lifecycle; each test here also checks the default differs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from emulator_support import Http, async_held, gate, started

from runpod_queue.emulator import Emulator, EndpointSpec, Readings
from shared_support import echo


@contextmanager
def virtual(readings: Readings, endpoints: dict[str, Any]) -> Iterator[tuple[Emulator, Http]]:
    with Emulator(endpoints, clock="virtual", readings=readings) as emu:
        http = Http(emu, key=None)
        try:
            yield emu, http
        finally:
            http.close()


def _code(http: Http, endpoint: str, job_id: str, **params: Any) -> int:
    return http.get(endpoint, f"status/{job_id}", params=params).status_code


def test_queued_ttl_deleted_removes_the_job_without_a_trace() -> None:
    with virtual(Readings(queued_ttl="deleted"), {"q": EndpointSpec(echo, workers=0)}) as (emu, http):
        job_id = http.run("q", {}, policy={"ttl": 10_000})
        emu.advance(9.999)
        assert http.status("q", job_id)["status"] == "IN_QUEUE"
        emu.advance(0.001)
        assert _code(http, "q", job_id) == 404
        jobs = http.health("q")["jobs"]
        assert jobs["inQueue"] == 0 and jobs["failed"] == 0


@pytest.mark.parametrize("reading,kept", [("retention", True), ("deleted", False)])
def test_finished_ttl_deleted_ends_retention_when_the_ttl_runs_out(reading: Any, kept: bool) -> None:
    with virtual(Readings(finished_ttl=reading), {"e": echo}) as (emu, http):
        job_id = http.run("e", {}, policy={"ttl": 20_000})
        http.wait("e", job_id)
        emu.advance(19.999)
        assert http.status("e", job_id)["status"] == "COMPLETED"
        emu.advance(0.001)
        assert (_code(http, "e", job_id) == 200) is kept


def test_execution_timeout_failed_ends_the_run_failed_with_an_error() -> None:
    with virtual(Readings(execution_timeout="FAILED"), {"a": async_held}) as (emu, http):
        job_id = http.run("a", {"gate": "reading-exec"}, policy={"executionTimeout": 5_000})
        assert started("reading-exec").wait(5)
        emu.advance(5)
        body = http.wait("a", job_id)
        assert body["status"] == "FAILED" and "executionTimeout" in body["error"]
        assert http.health("a")["jobs"]["failed"] == 1
        gate("reading-exec").set()


def test_status_ttl_as_job_ttl_resets_a_queued_jobs_ttl() -> None:
    with virtual(Readings(status_ttl="job_ttl"), {"q": EndpointSpec(echo, workers=0)}) as (emu, http):
        job_id = http.run("q", {}, policy={"ttl": 10_000})
        emu.advance(5)
        assert _code(http, "q", job_id, ttl=20_000) == 200
        emu.advance(19.999)  # past the original 10 s
        assert http.status("q", job_id)["status"] == "IN_QUEUE"
        emu.advance(0.001)
        assert http.status("q", job_id)["status"] == "TIMED_OUT"


@pytest.mark.parametrize("reading,kept", [("retention", False), ("job_ttl", True)])
def test_status_ttl_as_job_ttl_may_lengthen_a_finished_jobs_stay(reading: Any, kept: bool) -> None:
    with virtual(Readings(status_ttl=reading), {"e": echo}) as (emu, http):
        answer = http.post("e", "runsync", json={"input": {}})
        job_id = answer.json()["id"]
        assert _code(http, "e", job_id, ttl=120_000) == 200
        emu.advance(90)  # past /runsync's 1 min retention
        assert (_code(http, "e", job_id) == 200) is kept
        emu.advance(30)
        assert _code(http, "e", job_id) == 404


def test_an_unknown_reading_is_refused() -> None:
    with pytest.raises(ValueError, match=r"Readings.queued_ttl must be one of 'timed_out', 'deleted'"):
        Readings(queued_ttl="gone")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="readings must be a Readings"):
        Emulator({}, readings="deleted")  # type: ignore[arg-type]
