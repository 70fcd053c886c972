"""kill -9 of a running `rpq batch` at a random moment, then the same batch again: nothing lost, nothing
submitted twice that the journal knew about, the output valid with every key exactly once."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from batch_support import Recorder, keys_once, lines, write_inputs

from runpod_queue import BatchRunner
from runpod_queue.emulator import Emulator

COUNT = 200


def start_batch(emu: Emulator, tmp_path: Path, inputs: Path) -> subprocess.Popen[bytes]:
    args = [
        sys.executable,
        "-m",
        "runpod_queue.cli",
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
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_resume_after_kill_9(seed: int, recorder: Recorder, tmp_path: Path) -> None:
    rng = random.Random(seed)
    inputs = write_inputs(tmp_path / "in.jsonl", COUNT, sleep=0.01)
    with Emulator({"ep": recorder}, workers=4, time_scale=0.01, rate_limits=False) as emu:
        proc = start_batch(emu, tmp_path, inputs)
        # A random moment of the batch's life (not of the interpreter's start-up): once the endpoint has
        # run a random number of jobs, plus a random few milliseconds.
        ran = rng.randint(1, COUNT - 30)
        limit = time.monotonic() + 30
        while recorder.executed() < ran and proc.poll() is None and time.monotonic() < limit:
            time.sleep(0.001)
        time.sleep(rng.uniform(0, 0.03))
        proc.kill()
        proc.wait()

        journaled: dict[str, str] = {}
        ambiguous_rows = 0
        if (tmp_path / "j.sqlite").exists():
            db = sqlite3.connect(tmp_path / "j.sqlite")
            journaled = dict(db.execute("SELECT key, job_id FROM items WHERE job_id IS NOT NULL"))
            ambiguous_rows = db.execute("SELECT COUNT(*) FROM items WHERE state = 'submitting'").fetchone()[0]
            db.close()

        again = BatchRunner(
            "ep", journal=tmp_path / "j.sqlite", output=tmp_path / "out.jsonl", base_url=emu.base_url
        )
        summary = again.run(lines(inputs))

    assert summary.ok, summary
    assert 0 < summary.resumed + summary.reused < COUNT  # the kill did land mid-batch
    assert summary.ambiguous == ambiguous_rows
    rows = keys_once(tmp_path / "out.jsonl")
    assert len(rows) == COUNT and all(r["status"] == "COMPLETED" for r in rows.values())
    for key, job_id in journaled.items():
        n = int(key.strip('"')[1:])
        assert recorder.ids[n] == {job_id}, f"{key} was submitted again although its job id was journaled"
        assert rows[key]["id"] == job_id
    # Only an item killed between "submitting" and its job id may have run twice, and it was counted.
    assert recorder.duplicates() <= summary.ambiguous


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(recorder: Recorder, tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", COUNT, sleep=0.01)
    with Emulator({"ep": recorder}, workers=4, time_scale=0.01, rate_limits=False) as emu:
        proc = start_batch(emu, tmp_path, inputs)
        limit = time.monotonic() + 30
        while recorder.executed() < 40 and time.monotonic() < limit:
            time.sleep(0.002)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        text = err.decode()
        assert proc.returncode == 130, text
        assert "running the same command again" in text and "rpq batch" in text
        db = sqlite3.connect(tmp_path / "j.sqlite")
        states = dict(db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
        db.close()
        assert "submitting" not in states  # every /run on the wire finished and was journaled

        again = start_batch(emu, tmp_path, inputs)
        _, err = again.communicate(timeout=60)
        assert again.returncode == 0, err.decode()
    rows = keys_once(tmp_path / "out.jsonl")
    assert len(rows) == COUNT and recorder.duplicates() == 0
