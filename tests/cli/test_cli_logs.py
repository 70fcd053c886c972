"""`rpq logs ENDPOINT [JOB | --worker W] [--follow] [--json]` against the emulator's worker logs route."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from cli_support import API_KEY, Invoke

from runpod_queue.emulator import Emulator, EndpointSpec
from shared_support import EmuSetup


def _talk(job: dict[str, Any]) -> Any:
    print(f"working on {job['input']['n']}")
    return job["input"]


_EMU = EmuSetup(
    lambda: {
        "talk": EndpointSpec(_talk, workers=1),
        "cold": EndpointSpec(_talk, workers_max=1, cold_start=30, idle_timeout=60),
    },
    {"api_key": API_KEY, "clock": "virtual", "rate_limits": False},
)


@pytest.fixture(scope="module")
def emu_setup() -> EmuSetup:
    return _EMU


def _run(emu: Emulator, endpoint: str, n: int) -> dict[str, Any]:
    body: dict[str, Any] = httpx.post(
        f"{emu.base_url}/{endpoint}/runsync", json={"input": {"n": n}}, headers={"Authorization": API_KEY}
    ).json()
    assert body["status"] == "COMPLETED", body
    return body


def test_logs_by_job_prints_only_that_jobs_lines(rpq: Invoke, emu: Emulator) -> None:
    first = _run(emu, "talk", 1)
    second = _run(emu, "talk", 2)
    assert first["workerId"] == second["workerId"]
    shown = rpq("logs", "talk", second["id"])
    assert shown.exit_code == 0, shown.output
    assert "working on 2" in shown.output and "working on 1" not in shown.output
    assert (
        f"job {second['id']} started" in shown.output
        and f"job {second['id']} ended: COMPLETED" in shown.output
    )
    assert API_KEY not in shown.output


def test_logs_by_worker_prints_all_its_lines_and_json_lines(rpq: Invoke, emu: Emulator) -> None:
    job = _run(emu, "talk", 3)
    shown = rpq("logs", "talk", "--worker", job["workerId"])
    assert shown.exit_code == 0, shown.output
    assert "worker started: ready (no cold start)" in shown.output and "working on 3" in shown.output
    as_json = [json.loads(line) for line in rpq("logs", "talk", job["id"], "--json").output.splitlines()]
    assert [row["line"] for row in as_json if row["source"] == "container"] == ["working on 3"]
    assert {row["workerId"] for row in as_json} == {job["workerId"]}
    assert all(row["jobId"] == job["id"] and row["ts"].endswith("Z") for row in as_json)


def test_logs_follow_by_job_ends_with_the_job(rpq: Invoke, emu: Emulator) -> None:
    job = _run(emu, "talk", 4)
    followed = rpq("logs", "talk", job["id"], "--follow")  # the job ended: its end line stops the follow
    assert followed.exit_code == 0, followed.output
    assert followed.output.rstrip().endswith(f"job {job['id']} ended: COMPLETED")


def test_logs_refusals_are_one_clear_line(rpq: Invoke, emu: Emulator) -> None:
    neither = rpq("logs", "talk")
    assert neither.exit_code == 2 and "give a JOB id or --worker W" in neither.output
    unknown = rpq("logs", "talk", "--worker", "nope")
    assert unknown.exit_code == 3 and "worker 'nope' not found on endpoint 'talk'" in unknown.output
    queued = httpx.post(
        f"{emu.base_url}/cold/run", json={"input": {"n": 1}}, headers={"Authorization": API_KEY}
    ).json()
    waiting = rpq("logs", "cold", queued["id"])
    assert waiting.exit_code == 2 and "has no worker yet: add --follow to wait for it" in waiting.output
