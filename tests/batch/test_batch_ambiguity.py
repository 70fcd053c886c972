"""Ambiguity is reported only where a /run may really have reached the server, over the whole journal."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from batch_support import FAST, Recorder, batch_runner, keys_once, until

from runpod_queue import Client
from runpod_queue.batch._journal import Journal
from runpod_queue.emulator import Emulator, Faults


def test_an_item_refused_with_503_waits_as_pending_not_as_ambiguous(
    recorder: Recorder, tmp_path: Path
) -> None:
    with (
        Emulator({"ep": recorder}, workers=1, time_scale=0.001, rate_limits=False) as emu,
        Client(base_url=emu.base_url, retries=FAST, rate_limits=False) as client,
    ):

        def items() -> Iterator[Any]:
            emu.set_faults(Faults(error_503=1.0))  # after the runner's health check: every /run is refused
            yield ("k", {"n": 1})

        async def stopped_while_backing_off() -> None:
            batch = batch_runner(client, tmp_path)
            task = asyncio.create_task(batch.arun(items()))
            await until(lambda: batch.summary.transient_errors >= 3)
            batch.stop()
            summary = await task
            assert summary.interrupted and summary.ambiguous == 0

        asyncio.run(stopped_while_backing_off())
        journal = Journal(tmp_path / "j.sqlite", endpoint_id="ep")
        row = journal.get('"k"')
        journal.close()
        assert row is not None and row.state == "pending" and row.submits == 0
        emu.set_faults(Faults())
        warnings: list[str] = []
        summary = batch_runner(client, tmp_path, on_warning=warnings.append).run([("k", {"n": 1})])
    assert summary.ok and summary.ambiguous == 0 and warnings == []
    assert keys_once(tmp_path / "out.jsonl")['"k"']["status"] == "COMPLETED"


def test_the_summary_counts_ambiguity_over_the_whole_journal(client: Client, tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite", endpoint_id="ep")
    journal.begin_run()
    journal.add_pending('"a"', 1)
    journal.submitting('"a"', 1)  # killed here: its /run may have created a job
    journal.close()
    items = [("a", {"n": 1}), ("b", {"n": 2})]
    resumed = batch_runner(client, tmp_path).run(items)
    assert resumed.ok and resumed.ambiguous == 1
    again = batch_runner(client, tmp_path).run(items)  # nothing left to do; the doubt remains
    assert again.ok and again.submitted == 0 and again.ambiguous == 1


def test_journal_ambiguity_counts_resends_and_items_still_submitting(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j", endpoint_id="ep")
    for key in ('"a"', '"b"', '"c"'):
        j.add_pending(key, 1)
    j.submitting('"a"', 1)
    j.unsent('"a"')  # a 429: certainly not sent
    j.submitting('"a"', 1)
    j.submitted('"a"', "job-a", 1.0)
    j.submitting('"b"', 2)
    j.submitting('"b"', 2)  # sent again after an answer that never came
    j.submitted('"b"', "job-b", 1.0)
    j.submitting('"c"', 3)  # on the wire when the batch stopped
    assert j.ambiguous() == 2
    j.close()


def test_jobs_a_restarted_server_forgot_are_not_blamed_on_retention_and_can_be_resubmitted(
    recorder: Recorder, tmp_path: Path
) -> None:
    from runpod_queue.batch import PollOptions

    items = [(f"k{n}", {"n": n}) for n in range(5)]
    with (
        Emulator({"ep": recorder}, workers=1, rate_limits=False) as first,
        Client(base_url=first.base_url, retries=FAST, rate_limits=False) as client,
    ):

        async def submit_then_stop() -> None:
            never = PollOptions(min_interval=3600, max_interval=3600)
            batch = batch_runner(client, tmp_path, polling=never)
            task = asyncio.create_task(batch.arun(items))
            await until(lambda: batch.summary.submitted >= 5)
            batch.stop()
            await task

        asyncio.run(submit_then_stop())
    with (
        Emulator({"ep": recorder}, workers=1, rate_limits=False) as restarted,  # knows none of those jobs
        Client(base_url=restarted.base_url, retries=FAST, rate_limits=False) as client,
    ):
        warnings: list[str] = []
        summary = batch_runner(client, tmp_path, on_warning=warnings.append).run(items)
        assert summary.lost == 5 and summary.resubmitted_lost == 0
        rows = keys_once(tmp_path / "out.jsonl")
        assert {r["status"] for r in rows.values()} == {"LOST"}
        assert "the server no longer knows this job" in rows['"k0"']["error"]
        assert "expired" not in rows['"k0"']["error"] and "--resubmit-lost" in warnings[0]
        again = batch_runner(client, tmp_path).run(items)  # without the option nothing changes
        assert again.submitted == 0 and again.lost == 5
        recorder.reset()
        resubmitted = batch_runner(client, tmp_path, resubmit_lost=True).run(items)
    assert resubmitted.ok and resubmitted.submitted == 5 and resubmitted.completed == 5
    assert resubmitted.resubmitted_lost == 5 and resubmitted.ambiguous == 5
    rows = keys_once(tmp_path / "out.jsonl")  # one line per key: the LOST lines were replaced
    assert len(rows) == 5 and {r["status"] for r in rows.values()} == {"COMPLETED"}
    assert recorder.executed() == 5


@pytest.mark.parametrize("fault", ["error_500", "error_500_processed"])
def test_a_500_is_ambiguous_whether_it_came_before_or_after_the_job_was_created(
    recorder: Recorder, tmp_path: Path, fault: str
) -> None:
    # A client cannot tell the two apart, so both are reported as "may have run"; only the second really
    # runs the input twice. Reported ambiguity is an upper bound of real doubles, not a count of them.
    with (
        Emulator({"ep": recorder}, workers=1, time_scale=0.001, rate_limits=False) as emu,
        Client(base_url=emu.base_url, retries=FAST, rate_limits=False) as client,
    ):

        def items() -> Iterator[Any]:
            emu.set_faults(Faults(**{fault: 1.0}))  # after the runner's health check
            yield ("k", {"n": 1})

        async def through_one_500() -> Any:
            batch = batch_runner(client, tmp_path)
            task = asyncio.create_task(batch.arun(items()))
            await until(lambda: batch.summary.ambiguous >= 1)
            emu.set_faults(Faults())
            return await task

        summary = asyncio.run(through_one_500())
    assert summary.ok and summary.completed == 1 and summary.ambiguous >= 1
    assert keys_once(tmp_path / "out.jsonl")['"k"']["status"] == "COMPLETED"
    if fault == "error_500":
        assert recorder.duplicates() == 0  # refused before a job existed: the doubt was unfounded
    else:
        assert 1 <= recorder.duplicates() <= summary.ambiguous  # the job ran, and so did its resend
