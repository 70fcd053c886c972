"""A status the client does not know (RunPod's docs name RUNNING; its API may add one any day) never
breaks a caller: it counts as pending, and wait, stream and the batch runner keep polling. Over real
HTTP, against a loopback server that says RUNNING twice before COMPLETED."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from client_support import API_KEY, Api, LoopbackServer

from runpod_queue import BatchRunner, Client, Job, JobStatus
from runpod_queue.batch import PollOptions


class RunningTwice:
    """Answers every job's status (and stream) with RUNNING twice, then COMPLETED."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[str, int] = {}
        self.submitted = 0

    def __call__(self, method: str, path: str) -> tuple[int, Any]:
        parts = path.split("?")[0].split("/")  # ["", "v2", endpoint, operation, job_id?]
        operation = parts[3]
        if operation == "health":  # the batch runner's first call
            counts = {"inQueue": 0, "inProgress": 0, "completed": 0, "failed": 0, "retried": 0}
            return 200, {"jobs": counts, "workers": {"idle": 1, "running": 0}}
        if operation == "run":
            with self.lock:
                self.submitted += 1
                return 200, {"id": f"job-{self.submitted}", "status": "IN_QUEUE"}
        job_id = parts[4]
        with self.lock:
            count = self.seen[job_id] = self.seen.get(job_id, 0) + 1
        done = count > 2
        status = "COMPLETED" if done else "RUNNING"
        if operation == "stream":
            return 200, {"status": status, "stream": [{"output": count}]}
        body: dict[str, Any] = {"id": job_id, "status": status}
        if done:
            body.update(output={"ok": job_id}, delayTime=5, executionTime=7)
        return 200, body


@pytest.fixture
def server() -> Iterator[tuple[LoopbackServer, RunningTwice]]:
    script = RunningTwice()
    loopback = LoopbackServer(script)
    yield loopback, script
    loopback.close()


def test_an_unknown_status_is_kept_and_counts_as_pending(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "runpod_queue")
    job = Job.from_dict({"id": "j", "status": "SOMETHING_NEW_1"})
    again = Job.from_dict({"id": "k", "status": "SOMETHING_NEW_1"})
    assert job.status == "SOMETHING_NEW_1" and not isinstance(job.status, JobStatus)
    assert job.status_text == "SOMETHING_NEW_1" and not job.is_known_status
    assert job.is_pending and not job.is_terminal and not job.is_in_progress
    assert job.to_dict()["status"] == "SOMETHING_NEW_1" and again.raise_for_status() is again
    assert len([r for r in caplog.records if "SOMETHING_NEW_1" in r.getMessage()]) == 1  # once per status
    known = Job.from_dict({"id": "j", "status": "COMPLETED"})
    assert known.status is JobStatus.COMPLETED and known.status_text == "COMPLETED" and known.is_known_status
    with pytest.raises(ValueError, match="non-empty string"):
        Job("j", "")


def test_wait_polls_through_an_unknown_status(
    connect: Callable[..., Api], server: tuple[LoopbackServer, RunningTwice]
) -> None:
    loopback, _ = server
    api = connect(api_key=API_KEY, base_url=loopback.base_url)
    seen: list[str] = []
    job = api.endpoint("ep").wait("j1", timeout=30, on_update=lambda j: seen.append(j.status_text))
    assert job.status is JobStatus.COMPLETED and job.output == {"ok": "j1"}
    assert seen == ["RUNNING", "COMPLETED"]


def test_stream_polls_through_an_unknown_status(
    connect: Callable[..., Api], server: tuple[LoopbackServer, RunningTwice]
) -> None:
    loopback, _ = server
    api = connect(api_key=API_KEY, base_url=loopback.base_url)
    streamed = api.endpoint("ep").stream("j1", timeout=30)
    assert [c.output for c in streamed.chunks] == [1, 2, 3]
    assert streamed.job is not None and streamed.job.status is JobStatus.COMPLETED
    # Never a hold RunPod refuses: every /stream asked for 1000 ms or more.
    holds = [int(m.group(1)) for _, p, _ in loopback.requests if (m := re.search(r"wait=(\d+)", p))]
    assert holds and min(holds) >= 1000


def test_a_batch_polls_through_an_unknown_status(
    server: tuple[LoopbackServer, RunningTwice], tmp_path: Path
) -> None:
    loopback, script = server
    with Client(API_KEY, base_url=loopback.base_url) as client:
        runner = BatchRunner(
            client.endpoint("ep"),
            journal=tmp_path / "j.sqlite",
            output=tmp_path / "out.jsonl",
            polling=PollOptions(min_interval=0.01, max_interval=0.05),
        )
        summary = runner.run([f'{{"key": "k{n}", "input": {{"n": {n}}}}}' for n in range(3)])
    assert summary.ok and summary.completed == 3 and summary.failed == 0
    assert script.submitted == 3 and all(count >= 3 for count in script.seen.values())
