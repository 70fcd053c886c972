"""Fleets on the virtual clock: cold start, idle timeout, the two scalers, max, min, capacity, the
idle-endpoint cap. Each rule is checked at the instant before it applies and at the instant it does."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from emulator_support import KEY, eventually
from typer.testing import CliRunner

from runpod_queue.cli._app import app, load_commands
from runpod_queue.emulator import Emulator, EndpointSpec, WorkerState

_GATE = threading.Event()


async def quick(job: dict[str, Any]) -> Any:
    return job["input"]


async def gated(job: dict[str, Any]) -> Any:
    """Runs until the test opens the gate (real time; the virtual clock does not move meanwhile)."""
    while not _GATE.is_set():
        await asyncio.sleep(0.002)
    return job["input"]


@pytest.fixture(autouse=True)
def _gate() -> Iterator[None]:
    _GATE.clear()
    yield
    _GATE.set()


def fleet(**options: Any) -> Emulator:
    handler = options.pop("handler", quick)
    return Emulator({"ep": EndpointSpec(handler, **options)}, api_key=KEY, clock="virtual")


def run(emu: Emulator, value: Any = 1) -> str:
    answer = httpx.post(
        f"{emu.base_url}/ep/run", json={"input": {"n": value}}, headers={"Authorization": KEY}, timeout=5
    )
    answer.raise_for_status()
    return str(answer.json()["id"])


def status(emu: Emulator, job_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{emu.base_url}/ep/status/{job_id}", headers={"Authorization": KEY}, timeout=5)
    return dict(answer.json())


def health(emu: Emulator) -> dict[str, int]:
    answer = httpx.get(f"{emu.base_url}/ep/health", headers={"Authorization": KEY}, timeout=5)
    return dict(answer.json()["workers"])


def states(emu: Emulator) -> list[WorkerState]:
    return [w.status for w in emu.workers("ep")]


def test_the_default_endpoint_has_ready_workers_and_no_fleet() -> None:
    with Emulator({"ep": quick}, api_key=KEY, clock="virtual", workers=2) as emu:
        assert states(emu) == [WorkerState.IDLE, WorkerState.IDLE]
        job = run(emu)
        eventually(lambda: status(emu, job)["status"] == "COMPLETED")
        assert status(emu, job)["delayTime"] < 1000
        with pytest.raises(ValueError, match="not a fleet"):
            emu.set_capacity("ep", gpus=0)


def test_first_job_on_a_cold_endpoint_waits_its_cold_start() -> None:
    with fleet(workers_max=2, cold_start=30) as emu:
        assert states(emu) == []  # min 0: nothing runs before a request
        job = run(emu)
        assert states(emu) == [WorkerState.INITIALIZING]
        assert health(emu)["initializing"] == 1
        emu.advance(29.999)
        assert status(emu, job)["status"] == "IN_QUEUE"
        emu.advance(0.001)
        eventually(lambda: status(emu, job)["status"] == "COMPLETED")
        assert status(emu, job)["delayTime"] == 30_000
        assert health(emu)["idle"] == 1


def test_an_idle_worker_stops_after_idle_timeout_but_a_min_worker_stays() -> None:
    options = {"scaler": "request_count", "scaler_value": 1, "idle_timeout": 5, "cold_start": 10}
    with fleet(handler=gated, workers_min=1, workers_max=3, **options) as emu:
        assert states(emu) == [WorkerState.INITIALIZING]  # the min worker boots at start
        emu.advance(10)
        assert states(emu) == [WorkerState.IDLE]
        first, second = run(emu), run(emu)  # one worker per request: a second one boots
        assert states(emu) == [WorkerState.RUNNING, WorkerState.INITIALIZING]
        emu.advance(10)
        eventually(lambda: states(emu) == [WorkerState.RUNNING, WorkerState.RUNNING])
        _GATE.set()
        eventually(lambda: status(emu, second)["status"] == "COMPLETED")
        assert (status(emu, first)["delayTime"], status(emu, second)["delayTime"]) == (0, 10_000)
        eventually(lambda: states(emu) == [WorkerState.IDLE, WorkerState.IDLE])
        emu.advance(4.999)
        assert len(states(emu)) == 2
        emu.advance(0.001)  # 5 s idle: the one above min stops; the min worker never idles out
        assert states(emu) == [WorkerState.IDLE]
        emu.advance(3600)
        assert states(emu) == [WorkerState.IDLE]


def test_queue_delay_adds_a_worker_when_a_job_waited_the_threshold_never_above_max() -> None:
    with fleet(handler=gated, workers_max=2, cold_start=0, scaler="queue_delay", scaler_value=4) as emu:
        first = run(emu)
        eventually(lambda: status(emu, first)["status"] == "IN_PROGRESS")
        second, third = run(emu), run(emu)
        assert states(emu) == [WorkerState.RUNNING]
        emu.advance(3.999)
        assert states(emu) == [WorkerState.RUNNING]
        emu.advance(0.001)  # both waited 4 s: one more worker, as max is 2
        eventually(lambda: states(emu) == [WorkerState.RUNNING, WorkerState.RUNNING])
        emu.advance(60)
        assert len(states(emu)) == 2
        assert status(emu, third)["status"] == "IN_QUEUE"
        assert status(emu, second)["status"] == "IN_PROGRESS"
        _GATE.set()
        eventually(lambda: status(emu, third)["status"] == "COMPLETED")


def test_request_count_runs_one_worker_per_n_requests() -> None:
    with fleet(handler=gated, workers_max=5, cold_start=1, scaler="request_count", scaler_value=2) as emu:
        jobs = [run(emu) for _ in range(5)]  # ceil(5 / 2) = 3 workers
        assert states(emu) == [WorkerState.INITIALIZING] * 3
        emu.advance(1)
        eventually(lambda: states(emu) == [WorkerState.RUNNING] * 3)
        _GATE.set()
        eventually(lambda: all(status(emu, j)["status"] == "COMPLETED" for j in jobs))


def test_a_raised_min_starts_workers_and_a_lowered_max_stops_idle_ones() -> None:
    with fleet(workers_max=3, cold_start=2, idle_timeout=3600) as emu:
        emu.update_endpoint("ep", workers_min=2)
        assert states(emu) == [WorkerState.INITIALIZING] * 2
        emu.advance(2)
        assert states(emu) == [WorkerState.IDLE] * 2
        emu.update_endpoint("ep", workers_min=0, workers_max=1)
        assert states(emu) == [WorkerState.IDLE]
        with pytest.raises(ValueError, match="above workers_max"):
            emu.update_endpoint("ep", workers_min=2)


def test_no_free_gpu_leaves_workers_throttled_until_capacity_returns() -> None:
    with fleet(workers_max=2, cold_start=5) as emu:
        emu.set_capacity("ep", gpus=0)
        job = run(emu)
        assert states(emu) == [WorkerState.THROTTLED]
        assert health(emu)["throttled"] == 1
        assert emu.workers("ep")[0].reason == "no GPU free: capacity is 0"
        emu.advance(600)
        assert status(emu, job)["status"] == "IN_QUEUE"
        emu.set_capacity("ep", gpus=1)
        assert states(emu) == [WorkerState.INITIALIZING]
        emu.advance(4.999)
        assert status(emu, job)["status"] == "IN_QUEUE"
        emu.advance(0.001)
        eventually(lambda: status(emu, job)["status"] == "COMPLETED")
        assert status(emu, job)["delayTime"] == 605_000


def test_flashboot_restarts_a_recently_stopped_worker_in_a_tenth_of_its_cold_start() -> None:
    with fleet(workers_max=1, cold_start=20, idle_timeout=1, flashboot=True) as emu:
        first = run(emu)
        emu.advance(20)
        eventually(lambda: status(emu, first)["status"] == "COMPLETED")
        emu.advance(1)
        assert states(emu) == []
        second = run(emu)
        emu.advance(1.999)
        assert status(emu, second)["status"] == "IN_QUEUE"
        emu.advance(0.001)
        eventually(lambda: status(emu, second)["status"] == "COMPLETED")
        assert status(emu, second)["delayTime"] == 2_000


def test_an_endpoint_idle_for_7_days_runs_no_worker_until_its_settings_change() -> None:
    day = 86_400
    with fleet(workers_max=3, cold_start=0) as emu:
        emu.advance(7 * day - 0.001)
        first = run(emu)
        eventually(lambda: status(emu, first)["status"] == "COMPLETED")  # 3 days: max 2, one is enough
        emu.advance(7 * day)
        job = run(emu)
        emu.advance(60)
        assert states(emu) == []
        assert status(emu, job)["status"] == "IN_QUEUE"
        emu.update_endpoint("ep", workers_max=3)
        eventually(lambda: status(emu, job)["status"] == "COMPLETED")


def test_fleet_options_are_checked_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="leave it out"):
        EndpointSpec(quick, workers=2, workers_max=3)
    with pytest.raises(ValueError, match="above workers_max"):
        EndpointSpec(quick, workers_min=4, workers_max=3)
    with pytest.raises(ValueError, match="give a handler"):
        EndpointSpec(None, workers_max=3)
    with pytest.raises(ValueError, match="scaler must be"):
        EndpointSpec(quick, workers_max=3, scaler="gpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"scaler_value must be a number >= 1"):
        EndpointSpec(quick, workers_max=3, scaler="request_count", scaler_value=0.5)


def test_rpq_serve_makes_each_handler_a_fleet_and_refuses_fleet_options_without_one() -> None:
    here = Path(__file__).parent / "handlers"
    fleet_options = ["--clock", "virtual", "--workers-max", "2", "--cold-start", "30s", "--api-key", KEY]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runpod_queue.cli",
            "serve",
            f"echo={here / 'simple.py'}",
            "--port",
            "0",
            *fleet_options,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        base = re.search(r"(http://127\.0\.0\.1:\d+/v2)", proc.stdout.readline())
        assert base is not None
        lines = [proc.stdout.readline() for _ in range(2)]
        assert any("(fleet: 0 to 2 workers)" in line for line in lines), lines
        with httpx.Client(headers={"Authorization": KEY}) as http:
            job = http.post(f"{base.group(1)}/echo/run", json={"input": {}}).json()["id"]
            workers = http.get(f"{base.group(1)}/echo/health").json()["workers"]
            assert workers["initializing"] == 1
            root = base.group(1).removesuffix("/v2")
            http.post(f"{root}/_emulator/advance", json={"seconds": 30})
            eventually(lambda: http.get(f"{base.group(1)}/echo/status/{job}").json()["status"] == "COMPLETED")
            assert http.get(f"{base.group(1)}/echo/status/{job}").json()["delayTime"] == 30_000
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=15)
    load_commands()
    refused = CliRunner().invoke(app, ["serve", str(here / "simple.py"), "--cold-start", "5s", "--port", "0"])
    assert refused.exit_code == 2
    assert "--cold-start shape a fleet: add --workers-max N" in refused.output
