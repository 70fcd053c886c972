"""Testing `summarizer` (an app calling RunPod with `requests`) without RunPod: `mock_runpod` routes its
requests to a local emulator; `emu.jobs()` / `emu.requests` show what the app did; time travel covers a
day-long ttl and the 30-minute retention in milliseconds. Runs in this project's CI."""

from __future__ import annotations

from typing import Any

import pytest
from summarizer import SummaryExpired, SummaryFailed, result, submit, summarize

from runpod_queue.emulator import EndpointSpec
from runpod_queue.testing import Emulator, mock_runpod


def handler(job: dict[str, Any]) -> Any:
    """Stands in for the real worker: same input, same output shape."""
    text = job["input"]["text"]
    if not text:
        raise ValueError("text is empty")
    return {"summary": text[:10]}


def test_summarize() -> None:
    with mock_runpod({"summarizer": handler}) as emu:
        assert summarize("a long story about queues") == {"summary": "a long sto"}
        (job,) = emu.jobs("summarizer")
        assert (job.status, job.input) == ("COMPLETED", {"text": "a long story about queues"})


def test_a_failed_job_raises_the_workers_error() -> None:
    with mock_runpod({"summarizer": handler}), pytest.raises(SummaryFailed, match="text is empty"):
        summarize("")


def test_the_app_cancels_a_job_that_never_finishes() -> None:
    # No worker: the job stays queued, the app gives up after its polls and must cancel it.
    with mock_runpod({"summarizer": EndpointSpec(handler, workers=0)}) as emu:
        with pytest.raises(TimeoutError):
            result(submit("x"), poll_every=0, max_polls=3)
        assert [r.operation for r in emu.requests] == ["run", "status", "status", "status", "cancel"]
        assert emu.jobs("summarizer")[0].status == "CANCELLED"


def test_a_job_stuck_in_the_queue_past_its_24h_ttl() -> None:
    with mock_runpod({"summarizer": EndpointSpec(handler, workers=0)}, clock="virtual") as emu:
        job_id = submit("x")
        emu.advance(24 * 3600)  # a day passes in one call
        with pytest.raises(SummaryExpired, match="timed out"):
            result(job_id)


def test_results_are_gone_after_30_minutes() -> None:
    with mock_runpod({"summarizer": handler}, clock="virtual") as emu:
        job_id = submit("fetch me in time")
        assert result(job_id) == {"summary": "fetch me i"}
        emu.advance(30 * 60)
        with pytest.raises(SummaryExpired, match="within 30 minutes"):
            result(job_id)


# The pytest plugin (installed with the package): a marker for the whole test, the emulator as a fixture.
@pytest.mark.runpod_mock({"summarizer": handler})
def test_with_the_marker(runpod_mock: Emulator) -> None:
    assert summarize("marker") == {"summary": "marker"}
    assert runpod_mock.requests[0].operation == "run"
