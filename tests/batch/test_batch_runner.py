"""BatchRunner against an in-process emulator: results, bad lines, retries, faults, retention, resume."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from batch_support import FAST, Recorder, batch_runner, keys_once, lines, read_output, until, write_inputs

from runpod_queue import (
    AsyncClient,
    BatchResult,
    BatchRunner,
    BatchSummary,
    Client,
    NotFoundError,
    OperationLimit,
    Policy,
    RateLimits,
    Retries,
)
from runpod_queue._limits import AsyncLimiter
from runpod_queue.batch import JournalError, PollOptions
from runpod_queue.batch._journal import Journal
from runpod_queue.emulator import Emulator, EndpointSpec, Faults, Timings


def test_every_input_gives_exactly_one_result_line(
    client: Client, recorder: Recorder, tmp_path: Path
) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", 60)
    seen: list[BatchResult] = []
    summary = batch_runner(client, tmp_path, on_result=seen.append).run(lines(inputs))
    assert summary.ok and summary.completed == 60 and summary.submitted == 60
    assert summary.rate_limited == 0 and summary.ambiguous == 0
    rows = keys_once(tmp_path / "out.jsonl")
    assert len(rows) == 60 and sorted(r.key for r in seen) == sorted(f"k{n}" for n in range(60))
    row = rows['"k7"']
    assert list(row) == ["key", "id", "status", "output", "delayTime", "executionTime", "attempts"]
    assert row["status"] == "COMPLETED" and row["output"] == {"n": 7, "run": 1} and row["attempts"] == 1
    assert isinstance(row["delayTime"], int) and isinstance(row["executionTime"], int)  # RunPod's ms
    result = next(r for r in seen if r.key == "k7")
    assert (
        result.delay_time == row["delayTime"] / 1000 and result.execution_time == row["executionTime"] / 1000
    )
    assert recorder.duplicates() == 0
    # One status call per job when jobs finish before their first check; never a fixed interval per job.
    assert summary.status_calls < 3 * 60


def test_plain_inputs_are_keyed_by_line_and_any_iterable_works(client: Client, tmp_path: Path) -> None:
    items: list[Any] = [{"n": 1}, ("mine", {"n": 2}), '{"n": 3}', "", {"key": 9, "input": {"n": 4}}]
    summary = batch_runner(client, tmp_path, output=None).run(iter(items))
    assert summary.ok and summary.completed == 4
    results = {r.key: r for r in batch_runner(client, tmp_path, output=None).results()}
    assert set(results) == {1, "mine", 3, 9}
    assert results["mine"].output == {"n": 2, "run": 1} and results[9].output["n"] == 4


def test_malformed_lines_are_reported_by_line_and_recorded_as_failed(client: Client, tmp_path: Path) -> None:
    bad = [
        json.dumps({"key": "a", "input": {"n": 1}}),
        "{not json",
        "[1, 2]",
        json.dumps({"key": [1], "input": {}}),
        json.dumps({"key": "b", "input": {"n": 2}}),
        json.dumps({"key": "a", "input": {"n": 3}}),  # duplicate key
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(bad) + "\n")
    warnings: list[str] = []
    summary = batch_runner(client, tmp_path, on_warning=warnings.append).run(lines(tmp_path / "in.jsonl"))
    assert (summary.completed, summary.invalid, summary.duplicates) == (2, 3, 1)
    assert not summary.ok
    rows = keys_once(tmp_path / "out.jsonl")
    assert {k for k, r in rows.items() if r["status"] == "INVALID"} == {"2", "3", "4"}
    assert rows["2"]["error"].startswith("line 2: invalid JSON") and rows["2"]["id"] is None
    assert "expected a JSON object" in rows["3"]["error"]
    assert [w.split(":")[0] for w in warnings] == ["line 2", "line 3", "line 4", "line 6"]
    assert "already used on line 1" in warnings[-1]
    # Running again changes nothing: no new line, nothing re-reported as new.
    again = batch_runner(client, tmp_path).run(lines(tmp_path / "in.jsonl"))
    assert again.submitted == 0 and again.reused == 5
    assert len(read_output(tmp_path / "out.jsonl")) == 5


def test_failed_and_timed_out_jobs_are_retried_then_recorded(
    client: Client, recorder: Recorder, tmp_path: Path
) -> None:
    items = [
        ("ok", {"n": 0}),
        ("flaky", {"n": 1, "fail_first": True}),
        ("broken", {"n": 2, "fail": True}),
        ("slow", {"n": 3, "sleep": 0.3}),  # executionTimeout 50 s scaled by 0.001: 50 ms
    ]
    runner = batch_runner(client, tmp_path, retry_failed=2, policy=Policy(execution_timeout=50))
    summary = runner.run(items)
    rows = keys_once(tmp_path / "out.jsonl")
    assert rows['"ok"']["status"] == "COMPLETED" and rows['"ok"']["attempts"] == 1
    assert rows['"flaky"']["status"] == "COMPLETED" and rows['"flaky"']["attempts"] == 2
    assert rows['"flaky"']["output"] == {"n": 1, "run": 2}
    assert rows['"broken"']["status"] == "FAILED" and rows['"broken"']["attempts"] == 3
    assert "asked to fail (run 3)" in rows['"broken"']["error"]
    assert rows['"slow"']["status"] == "TIMED_OUT" and rows['"slow"']["attempts"] == 3
    assert summary.retried == 1 + 2 + 2 and summary.failed == 2 and summary.completed == 2
    assert recorder.duplicates() == 0  # /retry reuses the job id: nothing submitted twice


def test_faults_on_every_route_lose_nothing(recorder: Recorder, tmp_path: Path) -> None:
    faults = Faults(error_500=0.05, error_503=0.05, error_429=0.05, drop=0.03, seed=7)
    # No pauses between resends (Retries(wait=False)): the test is about what is resent, not when.
    # time_scale 0.01: results are kept 18 s, far longer than the test runs.
    with (
        Emulator({"ep": recorder}, workers=4, time_scale=0.01, rate_limits=False, faults=faults) as emu,
        Client(base_url=emu.base_url, retries=Retries(wait=False), rate_limits=False) as client,
    ):
        # Every tenth input fails its first run: /retry goes through the faults too.
        items = [(f"k{n}", {"n": n, "fail_first": n % 10 == 0}) for n in range(100)]
        summary = batch_runner(client, tmp_path).run(items)
    rows = keys_once(tmp_path / "out.jsonl")
    assert len(rows) == 100 and all(r["status"] == "COMPLETED" for r in rows.values())
    assert summary.retried >= 10 and rows['"k10"']["attempts"] == 2
    assert summary.ok and summary.transient_errors + summary.rate_limited > 0
    # A /run whose answer was lost is the only way to run an input twice, and each one is counted.
    assert recorder.duplicates() <= summary.ambiguous


def test_results_past_retention_are_reported_lost(recorder: Recorder, tmp_path: Path) -> None:
    # RunPod keeps a result 30 minutes; here 0.1 s (100 s of RunPod time at time_scale 0.001).
    timings = Timings(retention_run=100)
    with (
        Emulator({"ep": recorder}, workers=4, time_scale=0.001, rate_limits=False, timings=timings) as emu,
        Client(base_url=emu.base_url, retries=FAST, rate_limits=False) as client,
    ):
        inputs = write_inputs(tmp_path / "in.jsonl", 10)

        async def submit_then_stop() -> BatchSummary:
            never = PollOptions(min_interval=3600, max_interval=3600)
            first = batch_runner(client, tmp_path, polling=never)
            task = asyncio.create_task(first.arun(lines(inputs)))
            await until(lambda: first.summary.submitted >= 10)
            first.stop()  # like Ctrl-C: the jobs finish on the endpoint, nobody collects them
            return await task

        stopped = asyncio.run(submit_then_stop())
        assert stopped.interrupted and stopped.in_flight == 10 and stopped.status_calls == 0
        journal = Journal(tmp_path / "j.sqlite", endpoint_id="ep")
        job_ids = [row.job_id for row in journal.in_state("submitted")]
        journal.close()
        for job_id in job_ids:  # the laptop slept until every result expired
            assert job_id is not None
            while True:
                try:
                    client.endpoint("ep").status(job_id)
                except NotFoundError:
                    break
        warnings: list[str] = []
        summary = batch_runner(client, tmp_path, on_warning=warnings.append).run(lines(inputs))
    assert summary.resumed == 10 and summary.submitted == 0 and summary.lost == 10
    rows = keys_once(tmp_path / "out.jsonl")
    assert len(rows) == 10 and {r["status"] for r in rows.values()} == {"LOST"}
    assert "30 minutes" in rows['"k0"']["error"] and rows['"k0"']["id"] in job_ids
    assert len(warnings) == 10 and "lost:" in warnings[0] and "--resubmit-lost" in warnings[0]
    assert recorder.duplicates() == 0


def test_stop_then_resume_collects_without_resubmitting(
    client: Client, recorder: Recorder, tmp_path: Path
) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", 60, sleep=0.002)

    async def stop_midway() -> BatchSummary:
        first = batch_runner(client, tmp_path, max_in_flight=15)
        task = asyncio.create_task(first.arun(lines(inputs)))
        await until(lambda: first.summary.submitted >= 20)
        first.stop()
        return await task

    stopped = asyncio.run(stop_midway())
    assert stopped.interrupted and stopped.submitted < 60
    db = sqlite3.connect(tmp_path / "j.sqlite")
    journaled = dict(db.execute("SELECT key, job_id FROM items WHERE job_id IS NOT NULL").fetchall())
    states = dict(db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
    db.close()
    assert "submitting" not in states  # a graceful stop lets every /run on the wire finish
    summary = batch_runner(client, tmp_path).run(lines(inputs))
    assert summary.ok and summary.ambiguous == 0
    assert summary.submitted + stopped.submitted == 60
    rows = keys_once(tmp_path / "out.jsonl")
    assert len(rows) == 60
    for key, job_id in journaled.items():
        assert rows[key]["id"] == job_id
    assert recorder.duplicates() == 0


def test_torn_last_output_line_is_repaired_on_resume(client: Client, tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", 20)
    assert batch_runner(client, tmp_path).run(lines(inputs)).ok
    out = tmp_path / "out.jsonl"
    written = out.read_text().splitlines(keepends=True)
    out.write_text("".join(written[:-3]) + written[-3][:10])  # lost two lines, tore a third (kill mid-write)
    summary = batch_runner(client, tmp_path).run(lines(inputs))
    assert summary.submitted == 0 and summary.status_calls == 0 and summary.reused == 20
    assert keys_once(out) == {json.dumps(json.loads(line)["key"]): json.loads(line) for line in written}


def test_output_without_its_journal_and_journal_of_another_endpoint_are_refused(
    client: Client, tmp_path: Path
) -> None:
    (tmp_path / "out.jsonl").write_text('{"key": 1}\n')
    with pytest.raises(JournalError, match="already has results"):
        batch_runner(client, tmp_path).run([{"n": 1}])
    (tmp_path / "out.jsonl").unlink()
    Journal(tmp_path / "other.sqlite", endpoint_id="other").close()
    wrong = BatchRunner(client.endpoint("ep"), journal=tmp_path / "other.sqlite")
    with pytest.raises(JournalError, match="belongs to a batch on endpoint 'other'"):
        wrong.run([{"n": 1}])
    assert batch_runner(client, tmp_path).run([{"n": 1}]).ok


def test_bad_arguments(client: Client) -> None:
    ep = client.endpoint("ep")
    with pytest.raises(TypeError, match=r"Client\(\)\.endpoint"):
        BatchRunner("ep", journal="j")  # type: ignore[arg-type] - the pre-1.0 spelling
    with pytest.raises(ValueError, match="max_in_flight"):
        BatchRunner(ep, journal="j", max_in_flight=0)
    with pytest.raises(ValueError, match="retry_failed"):
        BatchRunner(ep, journal="j", retry_failed=-1)
    with pytest.raises(TypeError, match="rate_limits must be a RateLimits"):
        BatchRunner(ep, journal="j", rate_limits=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="polling must be a PollOptions"):
        BatchRunner(ep, journal="j", polling={"concurrency": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="progress_interval"):
        BatchRunner(ep, journal="j", progress_interval=0)
    with Client("rpq-secret-key-7d2e", base_url="http://127.0.0.1:1/v2") as keyed:
        runner = BatchRunner(keyed.endpoint("ep"), journal="j")
        assert repr(runner) == "BatchRunner(Endpoint('ep'), journal='j')"  # never the key


def test_many_jobs_in_flight_share_one_status_budget(recorder: Recorder, tmp_path: Path) -> None:
    # No workers: 200 jobs stay queued. The server allows 100 status calls per 10 s; polling 200 jobs
    # "every interval" would blow through that at once — one shared budget does not.
    limits = {"run": OperationLimit(1000, 200), "status": OperationLimit(100, 20)}
    spec = EndpointSpec(handler=recorder, workers=0)
    with (
        Emulator({"ep": spec}, time_scale=0.001, rate_limits=RateLimits(limits=limits)) as emu,
        Client(base_url=emu.base_url, retries=FAST, rate_limits=False) as client,
    ):
        ticks: list[BatchSummary] = []

        async def poll_for_a_while() -> BatchSummary:
            batch = batch_runner(
                client,
                tmp_path,
                rate_limits=RateLimits(limits=limits),
                on_progress=ticks.append,
                progress_interval=0.01,
                # Short checks only: the schedule's budget is what this test is about (the emulator's
                # time_scale would also shorten every held long-poll to a blink).
                polling=PollOptions(min_interval=0.01, max_interval=0.2, long_polls=0),
            )
            task = asyncio.create_task(batch.arun(lines(write_inputs(tmp_path / "in.jsonl", 200))))
            await until(lambda: batch.summary.status_calls >= 100)
            spent = len(ticks)
            # The budget is spent: 20 more progress ticks (0.2 s, 20 check intervals) without a call.
            await until(lambda: len(ticks) >= spent + 20)
            batch.stop()
            return await task

        summary = asyncio.run(poll_for_a_while())
    assert summary.submitted == 200 and summary.in_flight == 200 and summary.interrupted
    assert summary.rate_limited == 0
    assert 100 <= summary.status_calls <= 100 + 20  # one window, plus at most the calls on the wire
    assert summary.in_queue >= 100  # every job asked about (or inferred from one) is still queued


def test_keys_are_identity_across_runs_not_line_numbers(client: Client, tmp_path: Path) -> None:
    items = [(f"k{n}", {"n": n}) for n in range(20)]
    assert batch_runner(client, tmp_path).run(items[:10]).ok
    # Reordered and extended: the first ten are done, not duplicates; the rest are new.
    summary = batch_runner(client, tmp_path).run(list(reversed(items)))
    assert summary.ok and summary.duplicates == 0 and summary.reused == 10 and summary.submitted == 10
    assert len(keys_once(tmp_path / "out.jsonl")) == 20
    assert [r.key for r in batch_runner(client, tmp_path).results()] == [f"k{n}" for n in reversed(range(20))]


def test_a_stop_with_inputs_still_waiting_for_a_run_slot_is_an_interruption(
    client: Client, recorder: Recorder, tmp_path: Path
) -> None:
    slow_runs = RateLimits(limits={"run": OperationLimit(10, 5)})  # every input is read at once

    async def stop_while_waiting() -> BatchSummary:
        batch = batch_runner(client, tmp_path, rate_limits=slow_runs)
        task = asyncio.create_task(batch.arun([(n, {"n": n}) for n in range(30)]))
        await until(lambda: batch.summary.completed >= 10)
        batch.stop()
        return await task

    stopped = asyncio.run(stop_while_waiting())
    assert stopped.interrupted and not stopped.ok and stopped.submitted == 10 and stopped.in_flight == 0
    summary = batch_runner(client, tmp_path, rate_limits=RateLimits.off()).run(
        [(n, {"n": n}) for n in range(30)]
    )
    assert summary.ok and summary.submitted == 20 and summary.reused == 10
    assert len(keys_once(tmp_path / "out.jsonl")) == 30 and recorder.duplicates() == 0


def test_run_inside_an_event_loop_points_to_arun(client: Client, tmp_path: Path) -> None:
    async def call_run() -> None:
        batch_runner(client, tmp_path).run([])

    with pytest.raises(RuntimeError, match=r"await runner.arun\(inputs\)"):
        asyncio.run(call_run())


def test_an_async_endpoint_runs_with_arun_and_its_client_limiter_never_makes_a_request_wait(
    emu: Emulator, recorder: Recorder, tmp_path: Path
) -> None:
    # The runner's own limiter grants every /run and /status first and releases it last, with the same
    # limits: the client's limiter, which sees the same requests, must let each one go at once.
    limits = RateLimits(
        limits={"run": OperationLimit(8, 3), "status": OperationLimit(8, 3)}, window=0.2, margin=0.0
    )
    waited: list[str] = []
    # The client's limiter is the one its constructor makes (shared by with_options(): the one the
    # runner's requests go through); the runner's own is made later.
    made: list[AsyncLimiter] = []
    init = AsyncLimiter.__init__

    def recording_init(self: AsyncLimiter, config: RateLimits) -> None:
        init(self, config)
        made.append(self)

    async def main() -> BatchSummary:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(AsyncLimiter, "__init__", recording_init)
            client = AsyncClient(base_url=emu.base_url, retries=FAST, rate_limits=limits)
        async with client:
            (limiter,) = made
            acquire = limiter.acquire

            async def must_not_wait(endpoint_id: str, op: str, deadline: float | None = None) -> Any:
                pending = acquire(endpoint_id, op, deadline)
                try:
                    pending.send(None)
                except StopIteration as granted:
                    return granted.value
                pending.close()
                waited.append(op)
                raise AssertionError(f"the client's limiter made a {op} request wait")

            limiter.acquire = must_not_wait  # type: ignore[method-assign]
            runner = BatchRunner(
                client.endpoint("ep"),
                journal=tmp_path / "j.sqlite",
                rate_limits=limits,
                polling=PollOptions(min_interval=0.01, max_interval=0.05),
            )
            with pytest.raises(RuntimeError, match=r"await runner.arun"):
                runner.run([])
            return await runner.arun([(n, {"n": n}) for n in range(24)])

    summary = asyncio.run(main())
    assert waited == []
    assert summary.ok and summary.completed == 24 and summary.status_calls >= 24
    assert recorder.duplicates() == 0
