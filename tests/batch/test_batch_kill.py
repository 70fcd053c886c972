"""kill -9 of a running `rpq batch` at random moments (the second one during its resume), then the same
batch again: nothing lost, nothing submitted twice that the journal knew about, the output valid with every
key exactly once. And Ctrl-C: a clean stop that the same command resumes."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from batch_support import FAST, Recorder, batch_runner, keys_once, lines, write_inputs
from typer.testing import CliRunner

from runpod_queue import Client
from runpod_queue.cli._app import app, load_commands
from runpod_queue.emulator import Emulator

load_commands()
COUNT = 120
SLEEP = 0.002  # per job: long enough for a batch to be caught mid-way, short enough to be quick
KILLS = 2


def batch_args(emu: Emulator, tmp_path: Path, inputs: Path) -> list[str]:
    return [
        "batch",
        str(inputs),
        "--endpoint",
        "ep",
        "--out",
        str(tmp_path / "out.jsonl"),
        "--journal",
        str(tmp_path / "j.sqlite"),
        "--base-url",
        emu.base_url,
        "--max-in-flight",
        "40",
        "--no-progress",
    ]


def start_batch(emu: Emulator, tmp_path: Path, inputs: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "runpod_queue.cli", *batch_args(emu, tmp_path, inputs)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def journal_state(path: Path) -> tuple[dict[str, str], set[str]]:
    """(key -> job id) of the journaled submissions, and the keys caught between submitting and an id."""
    if not path.exists():
        return {}, set()
    db = sqlite3.connect(path)
    try:
        journaled = dict(db.execute("SELECT key, job_id FROM items WHERE job_id IS NOT NULL"))
        submitting = {key for (key,) in db.execute("SELECT key FROM items WHERE state = 'submitting'")}
    finally:
        db.close()
    return journaled, submitting


@pytest.mark.parametrize("seed", [1, 2])
def test_resume_after_kill_9(seed: int, recorder: Recorder, tmp_path: Path) -> None:
    rng = random.Random(seed)
    inputs = write_inputs(tmp_path / "in.jsonl", COUNT, sleep=SLEEP)
    journaled: dict[str, str] = {}
    ambiguous_keys: set[str] = set()
    ambiguous_rows = 0
    possible_duplicates = 0
    with Emulator({"ep": recorder}, workers=4, time_scale=0.01, rate_limits=False) as emu:
        for _ in range(KILLS):
            proc = start_batch(emu, tmp_path, inputs)
            # A random moment of the batch's life (not of the interpreter's start-up): once the endpoint has
            # run a random number of further jobs, plus a random few milliseconds.
            ran = recorder.executed() + rng.randint(1, (COUNT - recorder.executed()) // 3)
            limit = time.monotonic() + 30
            while recorder.executed() < ran and proc.poll() is None and time.monotonic() < limit:
                time.sleep(0.001)
            time.sleep(rng.uniform(0, 0.02))
            proc.kill()
            proc.wait()
            assert proc.returncode == -signal.SIGKILL, "the batch ended before the kill"
            now_journaled, submitting = journal_state(tmp_path / "j.sqlite")
            for key, job_id in journaled.items():
                assert now_journaled[key] == job_id, f"{key}: a journaled job id changed"
            journaled = now_journaled
            ambiguous_keys |= submitting
            ambiguous_rows = len(submitting)
            # Each kill while a key is submitting may add one run of it: a key caught submitting by both
            # kills (the resume was re-sending it) may have run three times.
            possible_duplicates += len(submitting)

        with Client(base_url=emu.base_url, retries=FAST, rate_limits=False) as client:
            summary = batch_runner(client, tmp_path).run(lines(inputs))

    assert summary.ok, summary
    assert 0 < summary.resumed + summary.reused < COUNT  # the last kill did land mid-batch
    # Counted over the whole journal: at least the last kill's, at most every kill's caught /runs.
    assert ambiguous_rows <= summary.ambiguous <= possible_duplicates
    rows = keys_once(tmp_path / "out.jsonl")
    assert len(rows) == COUNT and all(r["status"] == "COMPLETED" for r in rows.values())
    for key, job_id in journaled.items():
        n = int(key.strip('"')[1:])
        assert rows[key]["id"] == job_id
        if key in ambiguous_keys:  # an earlier /run of it may have created a job nobody heard of
            assert job_id in recorder.ids[n]
        else:
            assert recorder.ids[n] == {job_id}, f"{key} was submitted again although its job id was journaled"
    # Only an item killed between "submitting" and its job id may have run twice, and it was counted.
    assert recorder.duplicates() <= possible_duplicates


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(recorder: Recorder, tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", COUNT, sleep=SLEEP)
    with Emulator({"ep": recorder}, workers=4, time_scale=0.01, rate_limits=False) as emu:
        proc = start_batch(emu, tmp_path, inputs)
        limit = time.monotonic() + 30
        while recorder.executed() < 30 and time.monotonic() < limit:
            time.sleep(0.002)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        text = err.decode()
        assert proc.returncode == 130, text
        assert "running the same command again" in text and "rpq batch" in text
        _, submitting = journal_state(tmp_path / "j.sqlite")
        assert not submitting  # every /run on the wire finished and was journaled

        again = CliRunner().invoke(app, batch_args(emu, tmp_path, inputs))  # the same command, in-process
        assert again.exit_code == 0, again.output
    rows = keys_once(tmp_path / "out.jsonl")
    assert len(rows) == COUNT and recorder.duplicates() == 0
