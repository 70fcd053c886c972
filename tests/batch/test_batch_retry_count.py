"""``attempts`` counts executions the service confirmed: a /retry that failed without running, or a
batch stopped around a /retry, never spends one of the allowed runs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from batch_support import Recorder, batch_runner, keys_once

from runpod_queue import AsyncEndpoint, Client, Job
from runpod_queue.batch import PollOptions
from runpod_queue.batch._journal import Journal
from runpod_queue.errors import APIConnectionError, ServerError

_REQUEST = httpx.Request("POST", "http://127.0.0.1/v2/ep/retry/x")


def test_a_retry_answered_500_without_running_is_not_counted(
    client: Client, recorder: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = AsyncEndpoint.retry
    refused: list[str] = []

    async def first_retry_fails(self: AsyncEndpoint, job_id: str) -> Job:
        if not refused:
            refused.append(job_id)  # a 500 from a server that did nothing
            raise ServerError("boom", request=_REQUEST, response=None, status_code=500)
        return await real(self, job_id)

    monkeypatch.setattr(AsyncEndpoint, "retry", first_retry_fails)
    summary = batch_runner(client, tmp_path, retry_failed=1).run([("k", {"n": 1, "fail_first": True})])
    row = keys_once(tmp_path / "out.jsonl")['"k"']
    assert refused and row["status"] == "COMPLETED" and row["attempts"] == 2
    assert summary.retried == 1 and recorder.executed() == 2


def test_a_batch_stopped_around_a_retry_still_gets_every_allowed_run(
    client: Client, recorder: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stopped: list[Any] = []

    async def stop_instead(self: AsyncEndpoint, job_id: str) -> Job:
        stopped[0].stop()  # as if killed: the /retry was journaled, never sent
        raise APIConnectionError("connection lost", request=_REQUEST, sent=True)

    async def first_run() -> None:
        batch = batch_runner(client, tmp_path, retry_failed=1)
        stopped.append(batch)
        with monkeypatch.context() as patch:
            patch.setattr(AsyncEndpoint, "retry", stop_instead)
            summary = await batch.arun([("k", {"n": 1, "fail_first": True})])
        assert summary.interrupted

    asyncio.run(first_run())
    journal = Journal(tmp_path / "j.sqlite", endpoint_id="ep")
    row = journal.get('"k"')
    journal.close()
    assert row is not None and row.state == "submitted" and row.attempts == 1
    summary = batch_runner(client, tmp_path, retry_failed=1).run([("k", {"n": 1, "fail_first": True})])
    row_out = keys_once(tmp_path / "out.jsonl")['"k"']
    assert row_out["status"] == "COMPLETED" and row_out["attempts"] == 2 and recorder.executed() == 2
    assert summary.retried == 1


def test_a_retry_whose_answer_was_lost_but_which_ran_is_counted(
    client: Client, recorder: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = AsyncEndpoint.retry

    async def answer_lost(self: AsyncEndpoint, job_id: str) -> Job:
        await real(self, job_id)  # it reached the server and runs again
        raise APIConnectionError("answer lost", request=_REQUEST, sent=True)

    monkeypatch.setattr(AsyncEndpoint, "retry", answer_lost)
    items = [("k", {"n": 1, "fail": True})]
    summary = batch_runner(client, tmp_path, retry_failed=2).run(items)
    row = keys_once(tmp_path / "out.jsonl")['"k"']
    assert row["status"] == "FAILED" and row["attempts"] == 3 == recorder.executed()
    assert summary.retried == 2


def test_a_status_answer_that_breaks_the_contract_is_recorded_and_the_batch_goes_on(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runpod_queue.errors import APIResponseError

    real = AsyncEndpoint.status
    bad: set[str] = set()
    answers: list[str] = []

    async def status(self: AsyncEndpoint, job_id: str, **kwargs: Any) -> Job:
        job = await real(self, job_id, **kwargs)
        if job.output == {"n": 2, "run": 1} or job_id in bad:  # e.g. "delayTime": 1e400
            bad.add(job_id)
            answers.append(job_id)
            response = httpx.Response(200, request=_REQUEST)
            raise APIResponseError(
                "'delayTime' should be a number, got inf", request=_REQUEST, response=response
            )
        return job

    monkeypatch.setattr(AsyncEndpoint, "status", status)
    items = [("a", {"n": 1}), ("b", {"n": 2})]

    async def bounded() -> Any:  # the limit only stops a batch stuck on the job (as it was)
        # Short checks only: the broken answer is injected into AsyncEndpoint.status.
        polling = PollOptions(min_interval=0.01, max_interval=0.2, long_polls=0)
        return await asyncio.wait_for(batch_runner(client, tmp_path, polling=polling).arun(items), 20)

    summary = asyncio.run(bounded())
    rows = keys_once(tmp_path / "out.jsonl")
    assert rows['"a"']["status"] == "COMPLETED" and rows['"b"']["status"] == "UNREADABLE"
    assert "broke the API contract" in rows['"b"']["error"] and rows['"b"']["id"] in bad
    assert summary.failed == 1 and summary.completed == 1 and not summary.ok
    asked = len(answers)
    again = batch_runner(client, tmp_path).run(items)  # the resume does not ask about it again
    assert len(answers) == asked and again.failed == 1 and again.submitted == 0
