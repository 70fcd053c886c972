"""The worker protocol route by route, with the test playing the worker over HTTP (no processes).

The emulator runs on a virtual clock with RunPod's timings: a held job-take or job-stop lasts 20 s, a
worker silent for 30 s is lost, and both happen only when a test advances the clock. Each test has an
endpoint of its own, so moving the shared clock only touches other tests' leftovers.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from emulator_support import answered_while_advancing
from external_support import wait_for

from runpod_queue import Client, JobStatus, Policy, S3Config
from runpod_queue.emulator import Emulator, EndpointSpec
from shared_support import EmuSetup

KEY = "protocol-key"
_ids = iter(f"ep{i}" for i in range(100))
_release = threading.Event()


def _blocking(job: dict[str, Any]) -> Any:
    _release.wait(10)
    return {"in_process": True}


def _endpoints() -> dict[str, Any]:
    endpoints: dict[str, Any] = {eid: EndpointSpec(handler=None) for eid in (f"ep{i}" for i in range(100))}
    endpoints["mixed"] = EndpointSpec(handler=_blocking, workers=1)
    return endpoints


@pytest.fixture(scope="module")
def emu_setup() -> EmuSetup:
    options = {"api_key": KEY, "clock": "virtual", "rate_limits": False}
    return EmuSetup(_endpoints, options, before_stop=_release.set)


@pytest.fixture(scope="module")
def client(emu: Emulator) -> Iterator[Client]:
    with Client(KEY, base_url=emu.base_url) as c:
        yield c


@pytest.fixture
def ep() -> str:
    """An endpoint no other test has touched: its queue and workers are this test's alone."""
    return next(_ids)


class FakeWorker:
    """Speaks to the emulator exactly as the official worker does (URLs, raw key, form-labelled JSON)."""

    def __init__(self, emu: Emulator, endpoint_id: str, worker_id: str) -> None:
        self.base = f"{emu.base_url}/{endpoint_id}"
        self.id = worker_id
        self.http = httpx.Client(headers={"Authorization": KEY}, timeout=10, verify=False)

    def take(self, in_progress: int = 0) -> httpx.Response:
        return self.http.get(f"{self.base}/job-take/{self.id}?gpu=x&job_in_progress={in_progress}")

    def take_job(self) -> dict[str, Any]:
        return wait_for(lambda: (r := self.take()).status_code == 200 and r.json(), what="a job")

    def take_batch(self, size: int) -> httpx.Response:
        return self.http.get(
            f"{self.base}/job-take-batch/{self.id}?gpu=x&batch_size={size}&job_in_progress=1"
        )

    def done(self, job_id: str, body: Any, *, stream: bool = False) -> httpx.Response:
        return self.http.post(
            f"{self.base}/job-done/{self.id}/{job_id}?gpu=x&isStream={'true' if stream else 'false'}",
            content=json.dumps(body),
            headers={"Content-Type": "application/x-www-form-urlencoded", "charset": "utf-8"},
        )

    def stream(self, job_id: str, chunk: Any) -> httpx.Response:
        return self.http.post(
            f"{self.base}/job-stream/{self.id}/{job_id}?gpu=x&isStream=false",
            content=json.dumps({"output": chunk}),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )

    def stop(self) -> httpx.Response:
        return self.http.get(f"{self.base}/job-stop/{self.id}?gpu=x")

    def ping(self, job_ids: str | None = None) -> httpx.Response:
        params = {"runpod_version": "1.12.0"} | ({"job_id": job_ids} if job_ids else {})
        return self.http.get(f"{self.base}/ping/{self.id}", params=params)


@pytest.fixture
def worker(emu: Emulator, ep: str) -> Iterator[FakeWorker]:
    w = FakeWorker(emu, ep, "wkr1")
    yield w
    w.http.close()


def test_empty_take_is_held_20_s_then_204(client: Client, emu: Emulator, worker: FakeWorker, ep: str) -> None:
    answers: list[httpx.Response] = []
    poller = threading.Thread(target=lambda: answers.append(worker.take()))
    poller.start()
    # The worker exists from its first request, and its hold starts in the same step.
    wait_for(lambda: client.endpoint(ep).health().workers.idle == 1, what="the worker to register")
    emu.advance(19.999)
    assert not answers
    emu.advance(0.001)
    poller.join(10)
    assert answers[0].status_code == 204
    assert answers[0].content == b""


def test_take_hands_the_job_with_its_extras(client: Client, worker: FakeWorker, ep: str) -> None:
    s3 = S3Config(access_id="a", access_secret="s", bucket_name="b", endpoint_url="https://s3.example")
    job = client.endpoint(ep).run({"x": 1}, webhook="http://127.0.0.1:9/hook", s3_config=s3)
    taken = worker.take_job()
    assert taken["id"] == job.id
    assert taken["input"] == {"x": 1}
    assert taken["webhook"] == "http://127.0.0.1:9/hook"
    assert taken["s3Config"]["bucketName"] == "b"
    status = client.endpoint(ep).status(job.id)
    assert (status.status, status.worker_id) == (JobStatus.IN_PROGRESS, "wkr1")
    health = client.endpoint(ep).health()
    assert (health.workers.running, health.jobs.in_progress) == (1, 1)


def test_a_held_take_is_woken_by_a_new_job(client: Client, worker: FakeWorker, ep: str) -> None:
    answers: list[httpx.Response] = []
    poller = threading.Thread(target=lambda: answers.append(worker.take()))
    poller.start()
    wait_for(lambda: client.endpoint(ep).health().workers.idle == 1, what="the worker to register")
    job = client.endpoint(ep).run({"n": 1})
    poller.join(10)
    taken = answers[0].json() if answers[0].status_code == 200 else worker.take_job()
    assert taken["id"] == job.id


@pytest.mark.parametrize(
    ("body", "stream", "status", "output", "error"),
    [
        ({"output": {"a": 1}}, False, JobStatus.COMPLETED, {"a": 1}, None),
        ({}, False, JobStatus.COMPLETED, None, None),  # a handler that returned {}
        ({"output": {"p": 1}, "error": "bad"}, False, JobStatus.FAILED, {"p": 1}, "bad"),
        ({"error": '{"error_type": "E", "error_message": "m"}'}, False, JobStatus.FAILED, None, None),
        ({"output": [{"t": 0}, {"t": 1}]}, True, JobStatus.COMPLETED, [{"t": 0}, {"t": 1}], None),
        ({"output": []}, True, JobStatus.COMPLETED, [], None),
    ],
)
def test_job_done_bodies(
    client: Client,
    worker: FakeWorker,
    ep: str,
    body: dict[str, Any],
    stream: bool,
    status: JobStatus,
    output: Any,
    error: str | None,
) -> None:
    job = client.endpoint(ep).run({})
    worker.take_job()
    assert worker.done(job.id, body, stream=stream).status_code == 200
    final = client.endpoint(ep).status(job.id)
    assert final.status is status
    assert final.output == output
    assert final.error == (error if error is not None else body.get("error"))


def test_stream_chunks_then_aggregate(client: Client, worker: FakeWorker, ep: str) -> None:
    endpoint = client.endpoint(ep)
    job = endpoint.run({})
    worker.take_job()
    for i in range(3):
        assert worker.stream(job.id, {"token": i}).status_code == 200
    worker.done(job.id, {"output": []}, stream=True)
    assert [c.output for c in endpoint.stream(job.id, timeout=10)] == [{"token": i} for i in range(3)]


def test_oversized_stream_chunk_fails_the_job(client: Client, worker: FakeWorker, ep: str) -> None:
    job = client.endpoint(ep).run({})
    worker.take_job()
    worker.stream(job.id, "x" * 1_100_000)
    final = client.endpoint(ep).status(job.id)
    assert final.status is JobStatus.FAILED
    assert "exceeds" in final.error
    assert worker.stop().json() == {"jobsToStop": [job.id]}


def test_progress_update_then_result(client: Client, worker: FakeWorker, ep: str) -> None:
    job = client.endpoint(ep).run({})
    worker.take_job()
    worker.done(job.id, {"status": "IN_PROGRESS", "output": "50%"})
    running = client.endpoint(ep).status(job.id)
    assert (running.status, running.output) == (JobStatus.IN_PROGRESS, "50%")
    worker.done(job.id, {"output": "all"})
    worker.done(job.id, {"status": "IN_PROGRESS", "output": "late"})  # after the end: ignored
    final = client.endpoint(ep).status(job.id)
    assert (final.status, final.output) == (JobStatus.COMPLETED, "all")


def test_take_batch_answers_a_list(client: Client, emu: Emulator, worker: FakeWorker, ep: str) -> None:
    ids = {client.endpoint(ep).run({"i": i}).id for i in range(3)}
    first = worker.take_batch(2).json()
    second = worker.take_batch(2).json()
    assert [len(first), len(second)] == [2, 1]
    assert {j["id"] for j in first + second} == ids
    assert answered_while_advancing(emu, lambda: worker.take_batch(2), step=20).status_code == 204


def test_cancel_reaches_job_stop_and_a_late_result_is_ignored(
    client: Client, emu: Emulator, worker: FakeWorker, ep: str
) -> None:
    job = client.endpoint(ep).run({})
    worker.take_job()
    client.endpoint(ep).cancel(job.id)
    assert worker.stop().json() == {"jobsToStop": [job.id]}
    assert worker.done(job.id, {"output": "too late"}).status_code == 200
    assert client.endpoint(ep).status(job.id).status is JobStatus.CANCELLED
    assert answered_while_advancing(emu, worker.stop, step=20).status_code == 204


def test_stop_is_resent_while_pings_still_list_the_job(
    client: Client, emu: Emulator, worker: FakeWorker, ep: str
) -> None:
    job = client.endpoint(ep).run({})
    worker.take_job()
    client.endpoint(ep).cancel(job.id)
    assert worker.stop().json() == {"jobsToStop": [job.id]}
    worker.ping(job.id)  # the worker dropped the stop and still runs it
    assert worker.stop().json() == {"jobsToStop": [job.id]}
    worker.ping()  # it stopped
    assert answered_while_advancing(emu, worker.stop, step=20).status_code == 204


def test_execution_timeout_and_ttl_reach_job_stop_at_once(
    client: Client, emu: Emulator, worker: FakeWorker, ep: str
) -> None:
    endpoint = client.endpoint(ep)
    slow = endpoint.run({}, policy=Policy(execution_timeout=5))
    worker.take_job()
    emu.advance(5)
    assert worker.stop().json() == {"jobsToStop": [slow.id]}
    assert endpoint.status(slow.id).status is JobStatus.TIMED_OUT
    expiring = endpoint.run({}, policy=Policy(ttl=10))
    worker.take_job()
    emu.advance(10)  # mid-run: the job is removed and the worker told to drop it
    assert worker.stop().json() == {"jobsToStop": [expiring.id]}
    assert worker.http.get(f"{worker.base}/status/{expiring.id}").status_code == 404


def test_lost_worker_job_requeued_once_then_failed(client: Client, emu: Emulator, ep: str) -> None:
    endpoint = client.endpoint(ep)
    first, second = FakeWorker(emu, ep, "first"), FakeWorker(emu, ep, "second")
    job = endpoint.run({})
    first.take_job()  # ... and then falls silent
    emu.advance(29.999)
    assert endpoint.status(job.id).status is JobStatus.IN_PROGRESS
    assert endpoint.health().workers.unhealthy == 0
    emu.advance(0.001)  # silent for 30 s: lost
    requeued = endpoint.status(job.id)
    assert (requeued.status, requeued.retries) == (JobStatus.IN_QUEUE, 1)
    health = endpoint.health()
    assert (health.jobs.retried, health.workers.unhealthy) == (1, 1)
    assert second.take_job()["id"] == job.id
    assert first.done(job.id, {"output": "stale"}).status_code == 200  # the lost run's result is dropped
    assert endpoint.status(job.id).status is JobStatus.IN_PROGRESS
    assert first.stop().json() == {"jobsToStop": [job.id]}  # back from the dead: told to drop it
    emu.advance(30)  # the second worker falls silent too
    failed = endpoint.status(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error == "job timed out after 1 retries"
    assert failed.retries == 1
    for w in (first, second):
        w.http.close()


def test_a_worker_holding_a_poll_is_never_lost(client: Client, emu: Emulator, ep: str) -> None:
    endpoint = client.endpoint(ep)
    busy = FakeWorker(emu, ep, "busy")
    stops: list[httpx.Response] = []
    poller = threading.Thread(target=lambda: stops.append(busy.stop()))
    poller.start()  # its first request: it registers and its 20 s hold starts in the same step
    wait_for(lambda: endpoint.health().workers.idle == 1, what="the poll")
    job = endpoint.run({})
    busy.take_job()
    emu.advance(19.999)
    assert endpoint.status(job.id).retries is None
    emu.advance(0.001)
    poller.join(10)
    assert stops[0].status_code == 204
    emu.advance(29.999)  # silent since the poll ended, 20 s later than its last other request
    assert endpoint.status(job.id).retries is None
    emu.advance(0.001)
    assert endpoint.status(job.id).retries == 1
    busy.http.close()


def test_take_with_nothing_in_progress_requeues_what_the_worker_held(
    client: Client, worker: FakeWorker, ep: str
) -> None:
    job = client.endpoint(ep).run({})
    worker.take_job()
    # A restart under the same id: it asks for work saying it runs nothing.
    again = worker.take().json()
    assert again["id"] == job.id
    assert client.endpoint(ep).status(job.id).retries == 1


def test_a_take_whose_worker_went_away_is_not_handed_a_job(
    client: Client, emu: Emulator, worker: FakeWorker, ep: str
) -> None:
    with socket.create_connection((emu.host, emu.port)) as sock:
        sock.sendall(
            f"GET /v2/{ep}/job-take/ghost?gpu=x&job_in_progress=0 HTTP/1.1\r\n"
            f"Host: x\r\nAuthorization: {KEY}\r\n\r\n".encode()
        )
        wait_for(lambda: client.endpoint(ep).health().workers.idle == 1, what="the poll to arrive")
    job = client.endpoint(ep).run({})
    assert worker.take_job()["id"] == job.id


def test_stop_pod_replaces_the_worker(client: Client, worker: FakeWorker, ep: str) -> None:
    job = client.endpoint(ep).run({})
    worker.take_job()
    worker.done(job.id, {"output": 1, "stopPod": True})
    assert client.endpoint(ep).status(job.id).output == 1  # the job ends normally
    assert client.endpoint(ep).health().workers.idle == 0
    worker.ping()  # nobody manages its process: the same process comes back as a fresh worker
    assert client.endpoint(ep).health().workers.idle == 1


def test_in_process_and_external_workers_share_an_endpoint(emu: Emulator, client: Client) -> None:
    endpoint = client.endpoint("mixed")
    external = FakeWorker(emu, "mixed", "ext")
    first = endpoint.run({})  # the in-process worker takes it and blocks
    wait_for(lambda: endpoint.status(first.id).status is JobStatus.IN_PROGRESS, what="in-process start")
    second = endpoint.run({})
    assert external.take_job()["id"] == second.id
    external.done(second.id, {"output": "external"})
    _release.set()
    assert endpoint.wait(first.id, timeout=10).output == {"in_process": True}
    assert endpoint.status(second.id).output == "external"
    external.http.close()


def test_worker_routes_need_the_key(worker: FakeWorker) -> None:
    answer = worker.http.get(
        f"{worker.base}/job-take/w?gpu=x&job_in_progress=0", headers={"Authorization": ""}
    )
    assert answer.status_code == 401
    bearer = worker.http.get(f"{worker.base}/ping/w", headers={"Authorization": f"Bearer {KEY}"})
    assert bearer.status_code == 200


def test_an_oversized_progress_update_is_refused_and_the_run_goes_on(
    emu: Emulator, client: Client, worker: FakeWorker, ep: str
) -> None:
    job = client.endpoint(ep).run({})
    worker.take_job()
    big = worker.done(job.id, {"status": "IN_PROGRESS", "output": "x" * 20_000_001})
    assert big.status_code == 400 and "20 MB" in big.json()["error"]
    assert any(job.id in w and "progress update" in w for w in emu.warnings)
    assert client.endpoint(ep).status(job.id).status is JobStatus.IN_PROGRESS
    assert worker.done(job.id, {"output": "small"}).status_code == 200
    assert client.endpoint(ep).wait(job.id, timeout=10).output == "small"


def test_bad_job_done_body_is_a_400(client: Client, worker: FakeWorker, ep: str) -> None:
    job = client.endpoint(ep).run({})
    worker.take_job()
    answer = worker.http.post(f"{worker.base}/job-done/{worker.id}/{job.id}?isStream=false", content=b"a=1")
    assert answer.status_code == 400
    assert "JSON" in answer.json()["error"]
