"""Lifecycle rules a RunPod app must handle, on the virtual clock: a day-long ttl and the 30-minute
retention pass in one call, so these tests take milliseconds, not hours."""

from __future__ import annotations

import socket
import time

import pytest
import requests

from runpod_queue import Client, Policy
from runpod_queue.emulator import EndpointSpec
from runpod_queue.testing import mock_runpod
from shared_support import echo

pytestmark = pytest.mark.timeout(30)

BASE = "https://api.runpod.ai/v2"


def test_a_job_that_sat_in_the_queue_past_its_24h_ttl() -> None:
    # No worker on the endpoint: the job waits in the queue, as behind a cold start that never ends.
    with mock_runpod({"busy": EndpointSpec(echo, workers=0)}, clock="virtual") as emu:
        job_id = requests.post(f"{BASE}/busy/run", json={"input": {}}, timeout=10).json()["id"]
        emu.advance(86_400 - 1)
        assert requests.get(f"{BASE}/busy/status/{job_id}", timeout=10).json()["status"] == "IN_QUEUE"
        emu.advance(1)  # RunPod's default ttl: 24 h from submission
        assert requests.get(f"{BASE}/busy/status/{job_id}", timeout=10).json()["status"] == "TIMED_OUT"
        assert [j.status for j in emu.jobs("busy")] == ["TIMED_OUT"]


def test_results_fetched_before_the_30_minute_retention_and_gone_after() -> None:
    with mock_runpod({"echo": echo}, clock="virtual") as emu:
        job_id = requests.post(f"{BASE}/echo/run", json={"input": {"n": 1}}, timeout=10).json()["id"]
        for _ in range(1000):  # the handler runs in real time; virtual time stands still meanwhile
            if requests.get(f"{BASE}/echo/status/{job_id}", timeout=10).json()["status"] == "COMPLETED":
                break
        emu.advance(30 * 60 - 1)
        assert requests.get(f"{BASE}/echo/status/{job_id}", timeout=10).json()["output"] == {"n": 1}
        emu.advance(1)
        assert requests.get(f"{BASE}/echo/status/{job_id}", timeout=10).status_code == 404
        assert emu.jobs("echo") == []
        assert [r.status_code for r in emu.requests if r.job_id == job_id][-2:] == [200, 404]


def test_auto_clock_skips_the_wait_for_a_ttl_to_run_out() -> None:
    # mock_runpod's default clock: a client waiting on a job that only time can end sees it end at once.
    # Our client holds each status-sync poll at most 30 s and paces its polls in real time, so "auto"
    # suits waits of seconds to minutes; a day-long ttl is the virtual clock's job (test above).
    with mock_runpod({"busy": EndpointSpec(echo, workers=0)}) as emu, Client() as client:
        endpoint = client.endpoint("busy")
        job = endpoint.wait(endpoint.run({}, policy=Policy(ttl=20)).id, timeout=30)
        assert job.is_timed_out
        assert emu.now == 20
        assert [r.operation for r in emu.requests] == ["run", "status-sync"]


def test_webhook_retries_on_the_virtual_clock() -> None:
    # A webhook URL nobody listens on (a port just closed): each POST fails; RunPod retries twice, 10 s apart.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    with mock_runpod({"echo": echo}, clock="virtual") as emu:
        job = requests.post(f"{BASE}/echo/runsync", json={"input": {}, "webhook": dead}, timeout=10).json()
        assert job["status"] == "COMPLETED"
        for _ in range(2000):  # the first POST is real I/O, sent once the job ended: let it finish
            if emu.webhook_attempts:
                break
            time.sleep(0.005)
        emu.advance(20)
        attempts = [(a.job_id, a.attempt, a.delivered) for a in emu.webhook_attempts]
        assert attempts == [(job["id"], 1, False), (job["id"], 2, False), (job["id"], 3, False)]


def test_auto_clock_ends_a_stream_hold_at_its_length_while_a_handler_runs() -> None:
    # Before: under the default (auto) mock, time stood still while the handler ran, so a /stream hold
    # on a running job lasted until the job ended instead of its length (RunPod's 10 s; 0.2 s here).
    import threading

    from runpod_queue.emulator import Timings

    release = threading.Event()

    def slow(job: dict[str, object]) -> str:
        release.wait(30)
        return "done"

    with mock_runpod({"ep": slow}, timings=Timings(stream_default_wait=0.2)) as emu:
        try:
            job = requests.post(f"{BASE}/ep/run", json={"input": {}}, timeout=10).json()["id"]
            held = requests.get(f"{BASE}/ep/stream/{job}", timeout=15).json()
            assert held["status"] == "IN_PROGRESS"  # the hold ended; the handler still runs
            assert not release.is_set()
            assert emu.clock.now() >= 0.2  # the emulator's clock moved with the handler's real time
        finally:
            release.set()
