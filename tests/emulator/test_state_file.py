"""State that survives a restart: `Emulator(state=FILE)` / `rpq serve --state FILE` (SQLite WAL)."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from runpod_queue.cli._app import app, load_commands
from runpod_queue.emulator import Emulator, EndpointSpec
from runpod_queue.errors import ConfigurationError
from shared_support import echo


def _emulator(path: Path, **endpoints: Any) -> Emulator:
    specs = endpoints or {"q": EndpointSpec(echo, workers=0), "e": echo}
    return Emulator(specs, clock="virtual", state=path, rate_limits=False)


@pytest.fixture
def client() -> Iterator[Any]:
    clients: list[httpx.Client] = []

    def make(emu: Emulator) -> httpx.Client:
        clients.append(http := httpx.Client(base_url=emu.base_url, timeout=10))
        return http

    yield make
    for http in clients:
        http.close()


def test_jobs_counters_and_the_clock_come_back_after_a_restart(tmp_path: Path, client: Any) -> None:
    path = tmp_path / "s.db"
    with _emulator(path) as emu:
        http = client(emu)
        queued = [
            http.post("/q/run", json={"input": {"i": i}, "policy": {"ttl": 100_000}}).json()["id"]
            for i in range(3)
        ]
        done = http.post("/e/runsync", json={"input": {"x": 1}}).json()
        emu.advance(40)
    with _emulator(path) as emu:
        http = client(emu)
        assert emu.now == 40
        assert http.get(f"/e/status/{done['id']}").json() == done
        assert [http.get(f"/q/status/{j}").json()["status"] for j in queued] == ["IN_QUEUE"] * 3
        assert http.get("/e/health").json()["jobs"]["completed"] == 1
        # What was left of the ttl (100 s from t=0) and of the retention (60 s from t=0) goes on.
        emu.advance(19.5)
        assert http.get(f"/e/status/{done['id']}").status_code == 200
        emu.advance(0.5)
        assert http.get(f"/e/status/{done['id']}").status_code == 404
        emu.advance(39.5)
        assert http.get(f"/q/status/{queued[0]}").json()["status"] == "IN_QUEUE"
        emu.advance(0.5)
        assert http.get(f"/q/status/{queued[0]}").json()["status"] == "TIMED_OUT"


def test_queued_jobs_keep_their_order_and_run_when_workers_come(tmp_path: Path, client: Any) -> None:
    path = tmp_path / "s.db"
    with _emulator(path) as emu:
        http = client(emu)
        ids = [http.post("/q/run", json={"input": {"i": i}}).json()["id"] for i in range(5)]
    with _emulator(path, q=EndpointSpec(echo, workers=1)) as emu:
        http = client(emu)
        outputs = [http.get(f"/q/status-sync/{j}").json()["output"] for j in ids]
        assert outputs == [{"i": i} for i in range(5)]
        assert [v.id for v in emu.jobs("q")] == ids


def test_a_running_job_is_requeued_on_restart_as_a_lost_workers_job(tmp_path: Path, client: Any) -> None:
    path = tmp_path / "s.db"
    with _emulator(path, x=None) as emu:
        http = client(emu)
        job_id = http.post("/x/run", json={"input": {"n": 1}}).json()["id"]
        taken = http.get("/x/job-take/w1")
        assert taken.json()["id"] == job_id
        assert http.get(f"/x/status/{job_id}").json()["status"] == "IN_PROGRESS"
    with _emulator(path, x=None) as emu:
        http = client(emu)
        status = http.get(f"/x/status/{job_id}").json()
        assert status["status"] == "IN_QUEUE" and status["retries"] == 1
        assert http.get("/x/job-take/w2").json()["input"] == {"n": 1}


def test_an_owed_webhook_is_sent_again_after_a_restart(tmp_path: Path, client: Any) -> None:
    path = tmp_path / "s.db"
    hook = "http://127.0.0.1:9/never"  # refused: the delivery stays owed
    with _emulator(path) as emu:
        http = client(emu)
        http.post("/e/runsync", json={"input": {}, "webhook": hook})
        emu.advance(0)  # returns once the delivery in flight has its answer
        assert len(emu.webhook_attempts) == 1
    with _emulator(path) as emu:
        emu.advance(0)
        assert [a.url for a in emu.webhook_attempts] == [hook]


def test_reset_empties_the_state_file(tmp_path: Path, client: Any) -> None:
    path = tmp_path / "s.db"
    with _emulator(path) as emu:
        http = client(emu)
        http.post("/q/run", json={"input": {}})
        emu.reset()
    with _emulator(path) as emu:
        assert emu.jobs("q") == [] and emu.now == 0


def test_a_state_file_from_a_newer_version_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    _emulator(path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'format'")
    before = path.read_bytes()
    with pytest.raises(ConfigurationError, match=r"newer runpod-queue \(state format 99"):
        _emulator(path)
    load_commands()
    refused = CliRunner().invoke(app, ["serve", "--external", "x", "--state", str(path), "--port", "0"])
    assert refused.exit_code == 2 and "newer runpod-queue" in refused.output
    assert path.read_bytes() == before


def test_a_file_that_is_not_a_state_file_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.db"
    text.write_text("hello")
    with pytest.raises(ConfigurationError, match="not a runpod-queue state file"):
        _emulator(text)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(ConfigurationError, match="not a runpod-queue state file"):
        _emulator(other)


_RPQ_SERVE = (sys.executable, "-m", "runpod_queue.cli", "serve")


def _serve(path: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [*_RPQ_SERVE, "--external", "q", "--state", str(path), "--port", "0", "--no-rate-limits"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    match = re.search(r"(http://127\.0\.0\.1:\d+/v2)", proc.stdout.readline())
    assert match
    return proc, match.group(1)


def test_kill_9_loses_no_acknowledged_job(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    proc, base = _serve(path)
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            ids = [http.post("/q/run", json={"input": {"i": i}}).json()["id"] for i in range(1000)]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=15)
    proc, base = _serve(path)
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            statuses = {http.get(f"/q/status/{j}").json()["status"] for j in ids}
            assert statuses == {"IN_QUEUE"}
            assert http.get("/q/health").json()["jobs"]["inQueue"] == 1000
            assert http.get("/q/job-take/w").json()["input"] == {"i": 0}  # the order kept
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert "Traceback" not in err
