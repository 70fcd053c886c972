"""`BatchRunner(…, warm=N)` / `rpq batch --warm N`: workersMin is N while the batch runs and back to what
it was after it — after a normal end, after Ctrl-C, and (through the journal) on the resume after a crash."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from batch_support import Recorder, batch_runner, write_inputs

from runpod_queue import Client, ConfigurationError, Management
from runpod_queue.batch import BatchResult
from runpod_queue.batch._journal import Journal
from runpod_queue.batch._warm import WARM_META, Warm
from runpod_queue.emulator import Emulator, EndpointSpec
from shared_support import EmuSetup


@pytest.fixture(scope="module")
def emu_setup(shared_recorder: Recorder) -> EmuSetup:
    return EmuSetup(
        lambda: {"ep": EndpointSpec(shared_recorder, workers_max=3)},
        {"time_scale": 0.001, "rate_limits": False},
    )


@pytest.fixture(autouse=True)
def cold(emu: Emulator) -> None:
    """Every test starts from min 0 (a failed test must not leave the next one warm)."""
    emu.update_endpoint("ep", workers_min=0, workers_max=3)


def _min(emu: Emulator) -> int:
    with Management(base_url=emu.management_url) as mgmt:
        return mgmt.endpoint("ep").workers_min


class MinSeen:
    """An ``on_result`` that reads workersMin while the batch runs."""

    def __init__(self, emu: Emulator, stop_after: int | None = None) -> None:
        self.emu = emu
        self.seen: list[int] = []
        self.stop_after = stop_after

    def __call__(self, result: BatchResult) -> None:
        self.seen.append(_min(self.emu))
        if self.stop_after is not None and len(self.seen) >= self.stop_after:
            raise KeyboardInterrupt  # what Ctrl-C is inside the run


def test_warm_raises_min_for_the_run_and_puts_it_back(
    client: Client, emu: Emulator, recorder: Recorder, tmp_path: Path
) -> None:
    seen = MinSeen(emu)
    summary = batch_runner(client, tmp_path, warm=2, on_result=seen).run(
        write_inputs(tmp_path / "in.jsonl", 5).open()
    )
    assert summary.completed == 5
    assert seen.seen == [2] * 5
    assert _min(emu) == 0
    journal = Journal(tmp_path / "j.sqlite", endpoint_id="ep")
    try:
        assert journal.meta(WARM_META) is None  # restored: nothing left to do on a resume
    finally:
        journal.close()


def test_a_min_already_high_enough_is_left_alone(
    client: Client, emu: Emulator, recorder: Recorder, tmp_path: Path
) -> None:
    emu.update_endpoint("ep", workers_min=3)
    seen = MinSeen(emu)
    batch_runner(client, tmp_path, warm=2, on_result=seen).run(write_inputs(tmp_path / "in.jsonl", 2).open())
    assert seen.seen == [3, 3] and _min(emu) == 3


def test_warm_is_put_back_after_ctrl_c(
    client: Client, emu: Emulator, recorder: Recorder, tmp_path: Path
) -> None:
    seen = MinSeen(emu, stop_after=1)
    runner = batch_runner(client, tmp_path, warm=2, on_result=seen, max_in_flight=1)
    with pytest.raises(KeyboardInterrupt):
        runner.run(write_inputs(tmp_path / "in.jsonl", 5).open())
    assert seen.seen == [2]
    assert _min(emu) == 0


def test_a_crashed_run_leaves_the_previous_min_in_the_journal_and_the_resume_restores_it(
    client: Client, emu: Emulator, recorder: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", 4)

    async def crash(self: Warm, *exc: Any) -> None:  # the process dies: no `finally` restores anything
        return None

    with monkeypatch.context() as patched:
        patched.setattr(Warm, "__aexit__", crash)
        batch_runner(client, tmp_path, warm=2).run(inputs.open())
    assert _min(emu) == 2  # left raised by the "crash"
    journal = Journal(tmp_path / "j.sqlite", endpoint_id="ep")
    try:
        assert journal.meta(WARM_META) == "0"  # recorded before the PATCH
    finally:
        journal.close()
    # The resume (here without --warm) restores it when it ends.
    summary = batch_runner(client, tmp_path).run(inputs.open())
    assert summary.reused == 4
    assert _min(emu) == 0


def test_a_resume_with_warm_keeps_the_first_recorded_min(
    client: Client, emu: Emulator, recorder: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu.update_endpoint("ep", workers_min=1)
    inputs = write_inputs(tmp_path / "in.jsonl", 3)

    async def crash(self: Warm, *exc: Any) -> None:
        return None

    with monkeypatch.context() as patched:
        patched.setattr(Warm, "__aexit__", crash)
        batch_runner(client, tmp_path, warm=3).run(inputs.open())
    assert _min(emu) == 3
    batch_runner(client, tmp_path, warm=3).run(inputs.open())  # min is 3 now: 1 is what goes back
    assert _min(emu) == 1


def test_warm_above_max_is_refused_before_anything_is_sent(
    client: Client, emu: Emulator, recorder: Recorder, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match=r"warm=4 is above endpoint ep's max workers \(3\)"):
        batch_runner(client, tmp_path, warm=4).run(write_inputs(tmp_path / "in.jsonl", 2).open())
    assert recorder.executed() == 0 and _min(emu) == 0
    assert not (tmp_path / "j.sqlite").exists()  # a refused run leaves no journal


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_warm_must_be_a_positive_int(client: Client, tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ValueError, match="warm must be an integer >= 1"):
        batch_runner(client, tmp_path, warm=bad)


def test_warm_from_async_arun(client: Client, emu: Emulator, recorder: Recorder, tmp_path: Path) -> None:
    seen = MinSeen(emu)
    runner = batch_runner(client, tmp_path, warm=1, on_result=seen)
    summary = asyncio.run(runner.arun(write_inputs(tmp_path / "in.jsonl", 2).open()))
    assert summary.completed == 2 and seen.seen == [1, 1] and _min(emu) == 0


def test_rpq_batch_warm_raises_and_restores_min(emu: Emulator, recorder: Recorder, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from runpod_queue.cli._app import app, load_commands

    load_commands()
    inputs = write_inputs(tmp_path / "in.jsonl", 3)
    out = tmp_path / "out.jsonl"
    env = {"RUNPOD_ENDPOINT_BASE_URL": emu.base_url}
    args = ["batch", str(inputs), "--endpoint", "ep", "--out", str(out), "--warm", "2", "--no-rate-limits"]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert "done: all 3 ok" in result.output and _min(emu) == 0
    refused = CliRunner().invoke(app, [*args[:-3], "--warm", "9"], env=env)
    assert refused.exit_code != 0 and "warm=9 is above endpoint ep's max workers (3)" in refused.output
