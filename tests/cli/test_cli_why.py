"""`rpq why ENDPOINT JOB`: the diagnosis as a sentence, the workers, a hint; `--json` as a document."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from cli_support import API_KEY, Invoke

from runpod_queue.emulator import Emulator, EndpointSpec
from shared_support import EmuSetup


def _echo(job: dict[str, Any]) -> Any:
    return job["input"]


_EMU = EmuSetup(
    lambda: {"cold": EndpointSpec(_echo, workers_max=2, cold_start=30)},
    {"api_key": API_KEY, "clock": "virtual", "rate_limits": False},
)


@pytest.fixture(scope="module")
def emu_setup() -> EmuSetup:
    return _EMU


def test_why_names_the_cold_start_then_that_the_job_is_done(rpq: Invoke, emu: Emulator) -> None:
    submitted = rpq("run", "cold", '{"n": 1}', "--no-wait", "--json")
    assert submitted.exit_code == 0, submitted.output
    job_id = json.loads(submitted.output)["id"]
    shown = rpq("why", "cold", job_id)
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith(f"cold_start: Job {job_id} waits for a cold start")
    workers = "workers  0 running, 0 idle, 1 initializing, 0 throttled, 0 unhealthy (min 0, max 2)"
    assert workers in shown.output
    assert "try      keep workers warm: `rpq endpoint scale cold --min 1`" in shown.output
    assert API_KEY not in shown.output
    emu.advance(30)  # the cold start ends; the job then runs on its worker's thread, in real time
    deadline = time.monotonic() + 10
    while json.loads(rpq("status", "cold", job_id, "--json").output)["status"] != "COMPLETED":
        assert time.monotonic() < deadline, "the job did not complete after its cold start"
        time.sleep(0.005)
    document = json.loads(rpq("why", "cold", job_id, "--json").output)
    facts = (document["reason"], document["jobStatus"], document["workersMax"])
    assert facts == ("not_waiting", "COMPLETED", 2)


def test_why_of_an_unknown_job_exits_with_the_api_error(rpq: Invoke) -> None:
    missing = rpq("why", "cold", "no-such-job")
    assert missing.exit_code == 3, missing.output
