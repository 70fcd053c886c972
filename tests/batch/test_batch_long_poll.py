"""A job the runner waits on is asked about with one held /status-sync, not repeated short polls; jobs
beyond the hold cap fall back to the schedule. Counted through the emulator's recorded requests, on a
virtual clock (a hold ends only when the test moves it), never by timing."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from batch_support import FAST, batch_runner, lines, until, write_inputs

from runpod_queue import BatchSummary, Client, RateLimits
from runpod_queue.batch import PollOptions
from runpod_queue.emulator import Emulator, EndpointSpec

GATE = threading.Event()
STARTED: list[int] = []


def gated(job: dict[str, Any]) -> Any:
    STARTED.append(job["input"]["n"])
    GATE.wait(10)
    return job["input"]["n"]


def _calls(emu: Emulator) -> Counter[str]:
    return Counter(r.operation or "" for r in emu.requests if r.operation in ("status", "status-sync"))


def _per_job(emu: Emulator, op: str) -> Counter[str]:
    return Counter(r.job_id or "" for r in emu.requests if r.operation == op)


def _run_gated(emu: Emulator, tmp_path: Path, count: int, polling: PollOptions) -> BatchSummary:
    """Submit ``count`` gated jobs, let 20 progress ticks pass once all are running (a short poller would
    ask again and again meanwhile), then open the gate."""
    GATE.clear()
    STARTED.clear()
    ticks: list[BatchSummary] = []
    with Client(base_url=emu.base_url, retries=FAST, rate_limits=False) as client:
        runner = batch_runner(
            client, tmp_path, polling=polling, on_progress=ticks.append, progress_interval=0.01
        )

        async def go() -> BatchSummary:
            task = asyncio.create_task(runner.arun(lines(write_inputs(tmp_path / "in.jsonl", count))))
            await until(lambda: len(STARTED) == count)
            seen = len(ticks)
            await until(lambda: len(ticks) >= seen + 20)
            GATE.set()
            return await task

        return asyncio.run(go())


@pytest.fixture
def gated_emu() -> Any:
    with Emulator({"ep": EndpointSpec(gated, workers=12)}, clock="virtual", rate_limits=False) as emu:
        yield emu
    GATE.set()


def test_a_held_job_costs_one_call(gated_emu: Emulator, tmp_path: Path) -> None:
    summary = _run_gated(gated_emu, tmp_path, 10, PollOptions(min_interval=0.01, max_interval=0.05))
    assert summary.ok and summary.completed == 10
    assert _calls(gated_emu) == Counter({"status-sync": 10})  # no short /status at all
    assert set(_per_job(gated_emu, "status-sync").values()) == {1}
    assert summary.status_calls == 10 and summary.status_calls_per_job == 1.0
    held = [r for r in gated_emu.requests if r.operation == "status-sync"]
    assert all("wait=90000" in r.query for r in held)


def test_jobs_beyond_the_hold_cap_fall_back_to_the_schedule(gated_emu: Emulator, tmp_path: Path) -> None:
    polling = PollOptions(min_interval=0.01, max_interval=0.05, long_polls=3)
    summary = _run_gated(gated_emu, tmp_path, 10, polling)
    assert summary.ok and summary.completed == 10
    calls = _calls(gated_emu)
    # Three jobs held while the gate stayed shut, the seven others polled meanwhile, each more than once;
    # once the gate opened, the freed holds went to jobs still due (at most one hold per job here).
    assert 3 <= calls["status-sync"] <= 10
    assert calls["status"] > 7 * 2
    assert summary.status_calls == calls["status"] + calls["status-sync"]


def test_long_polls_off_polls_on_the_schedule(gated_emu: Emulator, tmp_path: Path) -> None:
    polling = PollOptions(min_interval=0.01, max_interval=0.05, long_polls=0)
    summary = _run_gated(gated_emu, tmp_path, 4, polling)
    assert summary.ok and summary.completed == 4
    calls = _calls(gated_emu)
    assert calls["status-sync"] == 0 and calls["status"] > 4


def test_a_hold_that_runs_out_is_held_again(gated_emu: Emulator, tmp_path: Path) -> None:
    """The server answers IN_PROGRESS when the hold passes; the job is held again at once (one more
    call per hold, none in between)."""
    GATE.clear()
    STARTED.clear()
    polling = PollOptions(min_interval=0.01, max_interval=0.05, hold=5)
    with Client(base_url=gated_emu.base_url, retries=FAST, rate_limits=False) as client:
        runner = batch_runner(client, tmp_path, polling=polling, rate_limits=RateLimits.off())

        async def go() -> BatchSummary:
            task = asyncio.create_task(runner.arun(lines(write_inputs(tmp_path / "in.jsonl", 2))))
            await until(lambda: len(STARTED) == 2)
            for _ in range(2):  # two rounds of holds run out: each advance ends every hold under way
                target = _calls(gated_emu)["status-sync"] + 2
                while _calls(gated_emu)["status-sync"] < target:
                    await asyncio.to_thread(gated_emu.advance, 5)
                    await asyncio.sleep(0.01)
            GATE.set()
            return await task

        summary = asyncio.run(go())
    assert summary.ok and summary.completed == 2
    # Held again each time a hold ran out, never asked with a short /status in between.
    assert all(n >= 2 for n in _per_job(gated_emu, "status-sync").values())
    assert _calls(gated_emu)["status"] == 0


@pytest.mark.parametrize("bad", [{"long_polls": -1}, {"long_polls": True}, {"hold": 0.5}, {"hold": 301}])
def test_poll_options_refuse_bad_holds(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="PollOptions"):
        PollOptions(**bad)
