"""BatchRunner against an in-process emulator: results, bad lines, retries, faults, retention, resume."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from batch_support import Recorder, keys_once, lines, read_output, until, write_inputs

from runpod_queue import BatchResult, BatchRunner, BatchSummary, OperationLimit, Policy, RateLimits, Retries
from runpod_queue.batch import JournalError
from runpod_queue.emulator import Emulator, EndpointSpec, Faults

FAST = Retries(backoff=0.01, max_backoff=0.05, max_retry_after=0.2)


def runner(emu: Emulator, tmp_path: Path, **kwargs: Any) -> BatchRunner:
    kwargs.setdefault("output", tmp_path / "out.jsonl")
    kwargs.setdefault("backoff", FAST)
    kwargs.setdefault("min_poll_interval", 0.01)
    kwargs.setdefault("max_poll_interval", 0.2)
    return BatchRunner("ep", journal=tmp_path / "j.sqlite", base_url=emu.base_url, **kwargs)


def test_every_input_gives_exactly_one_result_line(emu: Emulator, recorder: Recorder, tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", 150)
    seen: list[BatchResult] = []
    summary = runner(emu, tmp_path, on_result=seen.append).run(lines(inputs))
    assert summary.ok and summary.completed == 150 and summary.submitted == 150
    assert summary.rate_limited == 0 and summary.ambiguous == 0
    rows = keys_once(tmp_path / "out.jsonl")
    assert len(rows) == 150 and len(seen) == 150
    row = rows['"k7"']
    assert list(row) == ["key", "id", "status", "output", "delayTime", "executionTime", "attempts"]
    assert row["status"] == "COMPLETED" and row["output"] == {"n": 7, "run": 1} and row["attempts"] == 1
    assert recorder.duplicates() == 0
    # One status call per job when jobs finish before their first check; never a fixed interval per job.
    assert summary.status_calls < 3 * 150


def test_plain_inputs_are_keyed_by_line_and_any_iterable_works(emu: Emulator, tmp_path: Path) -> None:
    items: list[Any] = [{"n": 1}, ("mine", {"n": 2}), '{"n": 3}', "", {"key": 9, "input": {"n": 4}}]
    summary = runner(emu, tmp_path, output=None).run(iter(items))
    assert summary.ok and summary.completed == 4
    results = {r.key: r for r in runner(emu, tmp_path, output=None).results()}
    assert set(results) == {1, "mine", 3, 9}
    assert results["mine"].output == {"n": 2, "run": 1} and results[9].output["n"] == 4


def test_malformed_lines_are_reported_by_line_and_recorded_as_failed(emu: Emulator, tmp_path: Path) -> None:
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
    summary = runner(emu, tmp_path, on_warning=warnings.append).run(lines(tmp_path / "in.jsonl"))
    assert (summary.completed, summary.invalid, summary.duplicates) == (2, 3, 1)
    assert not summary.ok
    rows = keys_once(tmp_path / "out.jsonl")
    assert {k for k, r in rows.items() if r["status"] == "INVALID"} == {"2", "3", "4"}
    assert rows["2"]["error"].startswith("line 2: invalid JSON") and rows["2"]["id"] is None
    assert "expected a JSON object" in rows["3"]["error"]
    assert [w.split(":")[0] for w in warnings] == ["line 2", "line 3", "line 4", "line 6"]
    assert "already used on line 1" in warnings[-1]
    # Running again changes nothing: no new line, nothing re-reported as new.
    again = runner(emu, tmp_path).run(lines(tmp_path / "in.jsonl"))
    assert again.submitted == 0 and again.reused == 5
    assert len(read_output(tmp_path / "out.jsonl")) == 5


def test_failed_and_timed_out_jobs_are_retried_then_recorded(
    emu: Emulator, recorder: Recorder, tmp_path: Path
) -> None:
    items = [
        ("ok", {"n": 0}),
        ("flaky", {"n": 1, "fail_first": True}),
        ("broken", {"n": 2, "fail": True}),
        ("slow", {"n": 3, "sleep": 0.3}),  # executionTimeout 50 s scaled by 0.001: 50 ms
    ]
    summary = runner(emu, tmp_path, retries=2, policy=Policy(execution_timeout=50)).run(items)
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
    # time_scale 0.01: retention (18 s) outlasts the injected 429s' Retry-After of 1 s.
    with Emulator({"ep": recorder}, workers=4, time_scale=0.01, rate_limits=False, faults=faults) as emu:
        # Every tenth input fails its first run: /retry goes through the faults too.
        items = [(f"k{n}", {"n": n, "fail_first": n % 10 == 0}) for n in range(200)]
        summary = runner(emu, tmp_path).run(items)
    rows = keys_once(tmp_path / "out.jsonl")
    assert len(rows) == 200 and all(r["status"] == "COMPLETED" for r in rows.values())
    assert summary.retried >= 20 and rows['"k10"']["attempts"] == 2
    assert summary.ok and summary.transient_errors + summary.rate_limited > 0
    # A /run whose answer was lost is the only way to run an input twice, and each one is counted.
    assert recorder.duplicates() <= summary.ambiguous


def test_results_past_retention_are_reported_lost(recorder: Recorder, tmp_path: Path) -> None:
    # time_scale 0.0005: RunPod's 30-minute retention lasts 0.9 s.
    with Emulator({"ep": recorder}, workers=4, time_scale=0.0005, rate_limits=False) as emu:
        inputs = write_inputs(tmp_path / "in.jsonl", 20)

        async def submit_then_stop() -> BatchSummary:
            first = runner(emu, tmp_path, min_poll_interval=30, max_poll_interval=30)
            task = asyncio.create_task(first.arun(lines(inputs)))
            await until(lambda: first.summary.submitted >= 20)
            first.stop()  # like Ctrl-C: the jobs finish on the endpoint, nobody collects them
            return await task

        stopped = asyncio.run(submit_then_stop())
        assert stopped.interrupted and stopped.in_flight == 20 and stopped.status_calls == 0
        time.sleep(1.5)  # the laptop slept
        warnings: list[str] = []
        summary = runner(emu, tmp_path, on_warning=warnings.append).run(lines(inputs))
    assert summary.resumed == 20 and summary.submitted == 0 and summary.lost == 20
    rows = keys_once(tmp_path / "out.jsonl")
    assert len(rows) == 20 and {r["status"] for r in rows.values()} == {"LOST"}
    assert "30 minutes" in rows['"k0"']["error"] and rows['"k0"']["id"]
    assert len(warnings) == 20 and "lost to retention" in warnings[0]
    assert recorder.duplicates() == 0


def test_stop_then_resume_collects_without_resubmitting(
    emu: Emulator, recorder: Recorder, tmp_path: Path
) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", 120, sleep=0.01)

    async def stop_midway() -> BatchSummary:
        first = runner(emu, tmp_path, max_in_flight=30)
        task = asyncio.create_task(first.arun(lines(inputs)))
        await until(lambda: first.summary.submitted >= 40)
        first.stop()
        return await task

    stopped = asyncio.run(stop_midway())
    assert stopped.interrupted and stopped.submitted < 120
    db = sqlite3.connect(tmp_path / "j.sqlite")
    journaled = dict(db.execute("SELECT key, job_id FROM items WHERE job_id IS NOT NULL").fetchall())
    states = dict(db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
    db.close()
    assert "submitting" not in states  # a graceful stop lets every /run on the wire finish
    summary = runner(emu, tmp_path).run(lines(inputs))
    assert summary.ok and summary.ambiguous == 0
    assert summary.submitted + stopped.submitted == 120
    rows = keys_once(tmp_path / "out.jsonl")
    assert len(rows) == 120
    for key, job_id in journaled.items():
        assert rows[key]["id"] == job_id
    assert recorder.duplicates() == 0


def test_torn_last_output_line_is_repaired_on_resume(emu: Emulator, tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", 30)
    assert runner(emu, tmp_path).run(lines(inputs)).ok
    out = tmp_path / "out.jsonl"
    written = out.read_text().splitlines(keepends=True)
    out.write_text("".join(written[:-3]) + written[-3][:10])  # lost two lines, tore a third (kill mid-write)
    summary = runner(emu, tmp_path).run(lines(inputs))
    assert summary.submitted == 0 and summary.status_calls == 0 and summary.reused == 30
    rows = keys_once(out)
    assert len(rows) == 30


def test_output_without_its_journal_and_journal_of_another_endpoint_are_refused(
    emu: Emulator, tmp_path: Path
) -> None:
    (tmp_path / "out.jsonl").write_text('{"key": 1}\n')
    with pytest.raises(JournalError, match="already has results"):
        runner(emu, tmp_path).run([{"n": 1}])
    (tmp_path / "out.jsonl").unlink()
    assert runner(emu, tmp_path).run([{"n": 1}]).ok
    with Emulator({"other": lambda job: 1}, rate_limits=False) as other:
        wrong = BatchRunner("other", journal=tmp_path / "j.sqlite", base_url=other.base_url)
        with pytest.raises(JournalError, match="belongs to a batch on endpoint 'ep'"):
            wrong.run([{"n": 1}])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        BatchRunner("", journal="j")
    with pytest.raises(ValueError):
        BatchRunner("ep", journal="j", max_in_flight=0)
    with pytest.raises(ValueError):
        BatchRunner("ep", journal="j", retries=-1)


def test_many_jobs_in_flight_share_one_status_budget(recorder: Recorder, tmp_path: Path) -> None:
    # No workers: 300 jobs stay queued. The server allows 150 status calls per 10 s; polling 300 jobs
    # "every interval" would blow through that at once — one shared budget does not.
    limits = {"run": OperationLimit(1000, 200), "status": OperationLimit(150, 50)}
    spec = EndpointSpec(handler=recorder, workers=0)
    with Emulator({"ep": spec}, time_scale=0.001, rate_limits=limits) as emu:

        async def poll_for_a_while() -> BatchSummary:
            batch = runner(emu, tmp_path, rate_limits=RateLimits(limits=limits), backoff=None)
            task = asyncio.create_task(batch.arun(lines(write_inputs(tmp_path / "in.jsonl", 300))))
            await until(lambda: batch.summary.status_calls >= 150)
            await asyncio.sleep(1.0)  # the budget is spent: polling waits for the window
            batch.stop()
            return await task

        summary = asyncio.run(poll_for_a_while())
    assert summary.submitted == 300 and summary.in_flight == 300 and summary.interrupted
    assert summary.rate_limited == 0
    assert 150 <= summary.status_calls <= 150 + 50  # one window, plus at most the calls on the wire


def test_keys_are_identity_across_runs_not_line_numbers(emu: Emulator, tmp_path: Path) -> None:
    items = [(f"k{n}", {"n": n}) for n in range(20)]
    assert runner(emu, tmp_path).run(items[:10]).ok
    # Reordered and extended: the first ten are done, not duplicates; the rest are new.
    summary = runner(emu, tmp_path).run(list(reversed(items)))
    assert summary.ok and summary.duplicates == 0 and summary.reused == 10 and summary.submitted == 10
    assert len(keys_once(tmp_path / "out.jsonl")) == 20
    assert [r.key for r in runner(emu, tmp_path).results()] == [f"k{n}" for n in reversed(range(20))]


def test_a_stop_with_inputs_still_waiting_for_a_run_slot_is_an_interruption(
    emu: Emulator, recorder: Recorder, tmp_path: Path
) -> None:
    slow_runs = RateLimits(limits={"run": OperationLimit(10, 5)})  # every input is read at once

    async def stop_while_waiting() -> BatchSummary:
        batch = runner(emu, tmp_path, rate_limits=slow_runs)
        task = asyncio.create_task(batch.arun([(n, {"n": n}) for n in range(30)]))
        await until(lambda: batch.summary.completed >= 10)
        batch.stop()
        return await task

    stopped = asyncio.run(stop_while_waiting())
    assert stopped.interrupted and not stopped.ok and stopped.submitted == 10 and stopped.in_flight == 0
    summary = runner(emu, tmp_path, rate_limits=False).run([(n, {"n": n}) for n in range(30)])
    assert summary.ok and summary.submitted == 20 and summary.reused == 10
    assert len(keys_once(tmp_path / "out.jsonl")) == 30 and recorder.duplicates() == 0


def test_run_inside_an_event_loop_points_to_arun(tmp_path: Path) -> None:
    async def call_run() -> None:
        BatchRunner("ep", journal=tmp_path / "j").run([])

    with pytest.raises(RuntimeError, match=r"await runner.arun\(inputs\)"):
        asyncio.run(call_run())
