"""Unmodified `runpod.serverless.start` worker processes against the emulator, over real HTTP.

One emulator and one set of worker processes serve the module (importing `runpod` costs ~1.5 s per
process), all started at once. Every process is started in its own group and killed with it; the last
test checks none is left behind. The emulator runs on a virtual clock: nothing times out while workers
start, and a killed worker is found lost by advancing the clock, not by waiting.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from external_support import API_KEY, TIMINGS, WORKERS, live_group_members, runpod_imported, wait_for

from runpod_queue import Client, JobStatus
from runpod_queue.emulator import Emulator, EndpointSpec
from runpod_queue.emulator._worker_processes import WorkerProcesses
from shared_support import EmuSetup

ENDPOINTS = ("basic", "stream", "stream-agg", "batch", "lost")


@pytest.fixture(scope="module")
def emu_setup() -> EmuSetup:
    return EmuSetup(
        lambda: {name: EndpointSpec(handler=None) for name in ENDPOINTS},
        {"api_key": API_KEY, "clock": "virtual", "timings": TIMINGS, "rate_limits": False},
    )


@pytest.fixture(scope="module")
def procs(emu: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcesses]:
    # RPQ_TEST_WORKER_LOG keeps the workers' own logs somewhere that outlives pytest's tmp retention.
    log = Path(os.environ.get("RPQ_TEST_WORKER_LOG") or tmp_path_factory.mktemp("workers") / "workers.log")
    processes = WorkerProcesses(emu.root_url, api_key=API_KEY, output=log, restart_exited=False)
    try:
        processes.start("basic", WORKERS / "worker_basic.py")
        processes.start("stream", WORKERS / "worker_stream.py")
        processes.start("stream-agg", WORKERS / "worker_stream.py", env={"RPQ_TEST_AGGREGATE": "1"})
        processes.start("batch", WORKERS / "worker_batch.py")
        for _ in range(2):
            processes.start("lost", WORKERS / "worker_basic.py")
        emu.external.on_stop_pod.append(processes.request_replace)
        processes.start_supervisor(every_s=0.1)
        yield processes
    finally:
        # A SIGTERM'd worker first waits for its held polls (long on this clock): no need to be gentle.
        processes.close(timeout=0.5)
    for worker in processes.workers:
        assert worker.proc is not None and worker.proc.poll() is not None
        assert not live_group_members(worker.proc.pid)  # the ping process went with it


@pytest.fixture(scope="module")
def client(emu: Emulator, procs: WorkerProcesses) -> Iterator[Client]:
    with Client(API_KEY, base_url=emu.base_url) as c:
        yield c


def _worker_ids(procs: WorkerProcesses, endpoint_id: str) -> set[str]:
    return {w.worker_id for w in procs.workers if w.endpoint_id == endpoint_id}


# -- results ------------------------------------------------------------------------------------


def test_plain_handler_result_and_worker_id(client: Client, procs: WorkerProcesses) -> None:
    job = client.endpoint("basic").run_sync({"mode": "echo", "value": [1, "two"]})
    assert job.status is JobStatus.COMPLETED
    assert job.output["echo"] == [1, "two"]
    assert job.worker_id == job.output["worker"]
    assert job.worker_id in _worker_ids(procs, "basic")
    assert job.execution_time is not None and job.delay_time is not None


def test_batch_jobs_requests_reach_the_official_worker_with_their_batch_id(emu: Emulator) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=f"{emu.base_url}/basic", headers=headers) as http:
        batch_id = http.post("/batch", json=[{"input": {"mode": "batch-id"}}]).json()["id"]
        assert http.post(f"/batch/{batch_id}/finalize").status_code == 200

        def finished() -> dict[str, object] | None:
            item = http.get(f"/batch/{batch_id}/requests").json()["requests"][0]
            return item if item["status"] == "COMPLETED" else None

        assert wait_for(finished, what="the batch request")["output"] == {"batchId": batch_id}


def test_raising_handler_shows_runpods_error_string(client: Client) -> None:
    job = client.endpoint("basic").run_sync({"mode": "raise", "value": "x"})
    assert job.status is JobStatus.FAILED
    error = json.loads(job.error)  # status carries the worker's JSON string as is
    assert error["error_type"] == "<class 'ValueError'>"
    assert error["error_message"] == "boom: x"
    assert "Traceback" in error["error_traceback"]
    assert job.error_type == "ValueError"  # and the client exposes it parsed, without "<class '…'>"
    assert job.error_message == "boom: x"
    assert job.error_traceback is not None and "ValueError: boom: x" in job.error_traceback


def test_error_dict_fails_the_job_with_its_message(client: Client) -> None:
    job = client.endpoint("basic").run_sync({"mode": "error"})
    assert job.status is JobStatus.FAILED
    assert job.error == "bad input"
    assert job.error_message == "bad input"
    assert job.output == {"partial": 1}  # the rest of the dict, as the worker sent it


@pytest.mark.parametrize(("endpoint_id", "aggregate"), [("stream", False), ("stream-agg", True)])
def test_generator_streams_chunks_and_final_output(client: Client, endpoint_id: str, aggregate: bool) -> None:
    ep = client.endpoint(endpoint_id)
    job = ep.run({"n": 4})
    chunks = [c.output for c in ep.stream(job.id, timeout=30)]
    assert chunks == [{"token": i} for i in range(4)]
    final = ep.wait(job.id, timeout=30)
    assert final.status is JobStatus.COMPLETED
    assert final.output == (chunks if aggregate else [])


def test_generator_that_raises_fails_with_the_workers_string(client: Client) -> None:
    ep = client.endpoint("stream-agg")
    job = ep.run({"n": 4, "fail_at": 2})
    chunks = [c.output for c in ep.stream(job.id, timeout=30)]
    assert chunks == [{"token": 0}, {"token": 1}]
    final = ep.wait(job.id, timeout=30)
    assert final.status is JobStatus.FAILED
    assert final.error.startswith("handler: generator failed at 2 \ntraceback:")


def test_progress_update_visible_while_running_ignored_after(
    client: Client, emu: Emulator, tmp_path: Path
) -> None:
    ep = client.endpoint("basic")
    release = tmp_path / "release"
    job = ep.run({"mode": "progress", "release": str(release)})
    running = wait_for(
        lambda: (s := ep.status(job.id)).status is JobStatus.IN_PROGRESS and s.output is not None and s,
        what="the progress update",
    )
    assert running.output == {"pct": 50}
    release.touch()
    final = ep.wait(job.id, timeout=30)
    assert final.status is JobStatus.COMPLETED
    assert final.output == {"done": True}
    # A progress update that arrives after the result (the worker sends them from a thread) is ignored.
    with httpx.Client(verify=False) as http:
        late = http.post(
            f"{emu.base_url}/basic/job-done/{final.worker_id}/{job.id}?gpu=x&isStream=false",
            content=json.dumps({"status": "IN_PROGRESS", "output": {"pct": 99}}),
            headers={"Authorization": API_KEY, "Content-Type": "application/x-www-form-urlencoded"},
        )
    assert late.status_code == 200
    again = ep.status(job.id)
    assert (again.status, again.output) == (JobStatus.COMPLETED, {"done": True})


def test_concurrency_modifier_worker_runs_jobs_together(client: Client, procs: WorkerProcesses) -> None:
    ep = client.endpoint("batch")
    jobs = [ep.run({"seconds": 0.6}) for _ in range(4)]
    finals = [ep.wait(j.id, timeout=30) for j in jobs]
    assert all(f.status is JobStatus.COMPLETED for f in finals)
    assert {f.worker_id for f in finals} == _worker_ids(procs, "batch")
    assert max(f.output["peak"] for f in finals) >= 2  # taken with job-take-batch, run concurrently


# -- cancel, health, refresh ----------------------------------------------------------------------


def test_cancel_of_a_running_job_reaches_the_worker(client: Client, tmp_path: Path) -> None:
    ep = client.endpoint("basic")
    marker = tmp_path / "stopped"
    job = ep.run({"mode": "sleep", "marker": str(marker)})
    wait_for(lambda: ep.status(job.id).status is JobStatus.IN_PROGRESS, what="the job to start")
    health = ep.health()
    assert health.workers.running == 1
    assert health.jobs.in_progress == 1
    assert ep.cancel(job.id).status is JobStatus.CANCELLED
    wait_for(marker.exists, what="the worker to stop the handler")
    assert marker.read_text() == job.id
    assert ep.status(job.id).status is JobStatus.CANCELLED
    # The worker is free again.
    assert ep.run_sync({"mode": "echo", "value": 1}).status is JobStatus.COMPLETED
    assert ep.health().workers.idle == 1


def test_refresh_worker_replaces_the_worker(client: Client, procs: WorkerProcesses) -> None:
    ep = client.endpoint("basic")
    before_ids = _worker_ids(procs, "basic")
    job = ep.run_sync({"mode": "refresh"})
    assert job.status is JobStatus.COMPLETED
    assert job.output == {"ok": True}  # refresh_worker is an instruction, not output
    # The supervisor starts a fresh process under a new id; jobs keep flowing.
    after = ep.run_sync({"mode": "echo", "value": 2})
    assert after.status is JobStatus.COMPLETED
    assert after.worker_id not in before_ids
    assert after.worker_id in _worker_ids(procs, "basic")


# -- lost workers ---------------------------------------------------------------------------------


def test_killed_worker_job_requeued_once_then_failed(
    client: Client, emu: Emulator, procs: WorkerProcesses
) -> None:
    ep = client.endpoint("lost")
    pair = [w for w in procs.workers if w.endpoint_id == "lost"]
    job = ep.run({"mode": "hang"})
    holder = wait_for(lambda: ep.status(job.id).worker_id, what="a worker to take the job")
    first = next(w for w in pair if w.worker_id == holder)
    second = next(w for w in pair if w is not first)
    procs.kill(first)
    # Silent for 30 s of virtual time → lost. Steps of 10 s: the emulator notices the closed connections
    # in real time, so the silence starts at some step; a live worker keeps a poll open and never is.
    retried = wait_for(
        lambda: emu.advance(10) and (s := ep.status(job.id)).retries == 1 and s,
        what="the killed worker to be found lost",
    )
    assert ep.health().workers.unhealthy == 1
    assert ep.health().jobs.retried == 1
    taken = wait_for(
        lambda: (s := ep.status(job.id)).worker_id == second.worker_id and s,
        what="the job to be requeued to the second worker",
    )
    assert (retried.retries, taken.status) == (1, JobStatus.IN_PROGRESS)
    procs.kill(second)
    failed = wait_for(
        lambda: emu.advance(10) and (s := ep.status(job.id)).is_terminal and s,
        what="the second loss",
    )
    assert failed.status is JobStatus.FAILED
    assert failed.error == "job timed out after 1 retries"
    assert failed.retries == 1


# -- the official client --------------------------------------------------------------------------


def test_official_endpoint_against_external_workers(emu: Emulator, procs: WorkerProcesses) -> None:
    with runpod_imported():
        import runpod

    saved = runpod.api_key, runpod.endpoint_url_base
    runpod.api_key, runpod.endpoint_url_base = API_KEY, emu.base_url
    try:
        endpoint = runpod.Endpoint("basic")
        assert endpoint.run_sync({"mode": "echo", "value": "hi"}, timeout=60)["echo"] == "hi"
        streamer = runpod.Endpoint("stream-agg").run({"n": 2})
        assert list(streamer.stream()) == [{"token": 0}, {"token": 1}]
        assert streamer.output(timeout=30) == [{"token": 0}, {"token": 1}]
    finally:
        runpod.api_key, runpod.endpoint_url_base = saved


def test_a_result_over_20_mb_is_dropped_as_runpod_drops_it(emu: Emulator, client: Client) -> None:
    """The worker's job-done body is refused with a 400 (it logs that and does not retry 5xx-only), so
    the job ends COMPLETED without output, as on RunPod; the emulator says so everywhere it can."""
    job = client.endpoint("basic").run_sync({"mode": "big", "size": 21_000_000}, timeout=60)
    assert job.status is JobStatus.COMPLETED and job.output is None
    assert any(job.id in w and "20 MB" in w and "s3Config" in w for w in emu.warnings)
    with httpx.Client(base_url=emu.base_url, headers={"Authorization": API_KEY}) as http:
        answer = http.get(f"/basic/status/{job.id}")
    assert answer.json()["status"] == "COMPLETED" and "output" not in answer.json()
    assert "20 MB" in answer.headers["x-rpq-warning"]
    # The worker is free again: the next job runs.
    assert client.endpoint("basic").run_sync({"mode": "echo", "value": 1}).output["echo"] == 1


def test_no_worker_process_outlives_its_stop(procs: WorkerProcesses) -> None:
    extra = procs.start("lost", WORKERS / "worker_basic.py")
    wait_for(lambda: extra.alive, what="the worker to start")
    procs.stop(extra)
    assert extra.proc is not None and extra.proc.poll() is not None
    assert not live_group_members(extra.proc.pid)
