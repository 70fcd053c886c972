"""Unhealthy workers: a failed fitness check reported on the ping route (runpod-python rp_fitness.py)
shows the worker UNHEALTHY with its reason, moves its jobs on, and a restarted worker is healthy again;
an official worker that fails its check crash-loops visibly under the process supervisor."""

from __future__ import annotations

import importlib.util
from typing import Any

import httpx
import pytest
from external_support import API_KEY, TIMINGS, WORKERS, wait_for

from runpod_queue.emulator import Emulator, EndpointSpec, WorkerState
from runpod_queue.emulator._worker_processes import WorkerProcesses

REASON = "RuntimeError: model weights missing at /models"


def _get(http: httpx.Client, url: str, **params: Any) -> httpx.Response:
    answer = http.get(url, params=params)
    answer.raise_for_status()
    return answer


def test_a_failed_fitness_check_shows_the_worker_unhealthy_with_its_reason_until_it_restarts() -> None:
    endpoints = {"ep": EndpointSpec(handler=None)}
    with (
        Emulator(endpoints, api_key=API_KEY, clock="virtual", timings=TIMINGS) as emu,
        httpx.Client(headers={"Authorization": API_KEY}, timeout=10) as http,
    ):
        base = f"{emu.base_url}/ep"
        job_id = http.post(f"{base}/run", json={"input": {"n": 1}}).json()["id"]
        taken = _get(http, f"{base}/job-take/w1", gpu="x", job_in_progress=0).json()
        assert taken["id"] == job_id
        assert [w.status for w in emu.workers("ep")] == [WorkerState.RUNNING]

        _get(http, f"{base}/ping/w1", status="unhealthy", check="model_files", reason=REASON)

        [view] = emu.workers("ep")
        assert view.status is WorkerState.UNHEALTHY
        assert view.reason == f"fitness check model_files failed: {REASON}"
        assert _get(http, f"{base}/health").json()["workers"]["unhealthy"] == 1
        [failure] = emu.fitness_failures
        assert (failure.endpoint_id, failure.worker_id, failure.check, failure.reason) == (
            "ep",
            "w1",
            "model_files",
            REASON,
        )
        # It exits: the job it held goes back to the queue at once, for another worker.
        assert _get(http, f"{base}/status/{job_id}").json()["status"] == "IN_QUEUE"

        _get(http, f"{base}/ping/w1", runpod_version="1.12.0")  # restarted under its id: healthy again
        assert [w.status for w in emu.workers("ep")] == [WorkerState.IDLE]
        assert _get(http, f"{base}/health").json()["workers"]["unhealthy"] == 0


def test_a_plain_ping_does_not_mark_a_worker_unhealthy() -> None:
    with (
        Emulator(
            {"ep": EndpointSpec(handler=None)}, api_key=API_KEY, clock="virtual", timings=TIMINGS
        ) as emu,
        httpx.Client(headers={"Authorization": API_KEY}, timeout=10) as http,
    ):
        _get(http, f"{emu.base_url}/ep/ping/w1", runpod_version="1.12.0", job_id="")
        assert [w.status for w in emu.workers("ep")] == [WorkerState.IDLE]
        assert emu.fitness_failures == []


@pytest.mark.skipif(importlib.util.find_spec("runpod") is None, reason="needs the official runpod package")
def test_an_official_worker_failing_its_fitness_check_crash_loops_visibly() -> None:
    with (
        Emulator({"ep": EndpointSpec(handler=None)}, api_key=API_KEY, rate_limits=False) as emu,
        WorkerProcesses(emu.root_url, api_key=API_KEY, quiet=True, restart_exited=True) as procs,
    ):
        procs.start("ep", WORKERS / "worker_unfit.py")
        procs.start_supervisor(every_s=0.1)
        failures = wait_for(
            lambda: emu.fitness_failures if len(emu.fitness_failures) >= 2 else None,
            timeout=60,
            what="two fitness failures (a restart in between)",
        )
        assert {(f.check, f.reason) for f in failures} == {("model_files", REASON)}
        assert len({f.worker_id for f in failures}) == len(failures)  # each restart is a new worker
        assert WorkerState.UNHEALTHY in {w.status for w in emu.workers("ep")}
