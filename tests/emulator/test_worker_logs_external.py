"""The logs route for an official worker process we start (`WorkerProcesses(logs=…)`, as `rpq serve
--runpod-worker` does): its stdout/stderr become its log's container lines, and its exit ends the log."""

from __future__ import annotations

import importlib.util

import pytest
from external_support import API_KEY, WORKERS, wait_for

from runpod_queue import Client, JobStatus, Management
from runpod_queue.emulator import Emulator, EndpointSpec
from runpod_queue.emulator._worker_processes import WorkerProcesses

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("runpod") is None, reason="needs the official runpod package"
)


def test_an_official_workers_output_is_its_log_and_its_exit_ends_it(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with Emulator({"ep": EndpointSpec(handler=None)}, api_key=API_KEY, rate_limits=False) as emu:
        with WorkerProcesses(
            emu.root_url, api_key=API_KEY, restart_exited=False, logs=emu.core.logs
        ) as procs:
            worker = procs.start("ep", WORKERS / "worker_basic.py")
            with Client(API_KEY, base_url=emu.base_url) as client:
                job = client.endpoint("ep").run_sync({"mode": "echo", "value": 1}, timeout=60)
            assert job.status is JobStatus.COMPLETED and job.worker_id == worker.worker_id
            with Management(API_KEY, base_url=emu.management_url) as mgmt:
                lines = wait_for(
                    lambda: [
                        line
                        for line in mgmt.worker_logs("ep", worker.worker_id, tail=5000)
                        if line.source == "container" and job.id in line.line
                    ],
                    timeout=30,
                    what="the official worker's own lines naming the job",
                )
        assert lines  # the official worker logs each job it takes with its id
        # Its output still reaches the terminal, as before the logs route.
        assert job.id in capfd.readouterr().out
        with Management(API_KEY, base_url=emu.management_url) as mgmt:
            ended = wait_for(
                lambda: [
                    line
                    for line in mgmt.worker_logs("ep", worker.worker_id, source="system", tail=5)
                    if line.line.startswith("worker stopped: process exited")
                ],
                timeout=30,
                what="the end of the worker's log",
            )
        assert ended
