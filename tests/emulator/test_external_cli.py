"""`rpq worker-env` and `rpq serve --external / --runpod-worker`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from external_support import WORKERS, live_group_members, wait_for
from typer.testing import CliRunner

from runpod_queue import Client, JobStatus
from runpod_queue.cli._app import app, load_commands
from runpod_queue.emulator._worker_processes import WorkerProcesses


def test_worker_env_prints_export_lines() -> None:
    load_commands()
    result = CliRunner().invoke(app, ["worker-env", "my-ep", "--port", "9123", "--worker-id", "w1"])
    assert result.exit_code == 0, result.output
    exports = dict(re.findall(r"^export (\w+)=(.*)$", result.output, re.M))
    assert exports["RUNPOD_WEBHOOK_GET_JOB"] == "'http://127.0.0.1:9123/v2/my-ep/job-take/$ID?gpu=emulator'"
    assert exports["RUNPOD_WEBHOOK_POST_OUTPUT"].endswith("/job-done/$RUNPOD_POD_ID/$ID?gpu=emulator'")
    assert exports["RUNPOD_WEBHOOK_POST_STREAM"].endswith("/job-stream/$RUNPOD_POD_ID/$ID?gpu=emulator'")
    assert exports["RUNPOD_WEBHOOK_PING"] == "'http://127.0.0.1:9123/v2/my-ep/ping/$RUNPOD_POD_ID'"
    assert exports["RUNPOD_POD_ID"] == "w1"
    assert exports["RUNPOD_SKIP_AUTO_SYSTEM_CHECKS"] == "true"
    assert exports["RUNPOD_SKIP_GPU_CHECK"] == "true"
    assert exports["RUNPOD_AI_API_KEY"]  # pings only start with a key


def test_worker_env_never_prints_the_key_but_hands_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    load_commands()
    monkeypatch.setenv("RPQ_EMULATOR_API_KEY", "sk-emu-very-secret-42")
    result = CliRunner().invoke(app, ["worker-env", "my-ep"])
    assert result.exit_code == 0, result.output
    assert "sk-emu-very-secret-42" not in result.output
    shell = subprocess.run(
        ["bash", "-c", 'eval "$1"; printf %s "$RUNPOD_AI_API_KEY"', "_", result.output],
        capture_output=True, text=True, env={**os.environ, "RPQ_EMULATOR_API_KEY": "sk-emu-very-secret-42"},
    )  # fmt: skip
    assert shell.stdout == "sk-emu-very-secret-42"
    monkeypatch.delenv("RPQ_EMULATOR_API_KEY")
    keyless = CliRunner().invoke(app, ["worker-env", "my-ep"]).output
    assert "RPQ_EMULATOR_API_KEY" not in keyless  # no key required: a placeholder value is enough


def test_serve_runs_official_workers_and_stops_them(tmp_path: Path) -> None:
    out = tmp_path / "serve.out"
    with out.open("wb") as sink:
        serve = subprocess.Popen(
            [sys.executable, "-m", "runpod_queue.cli", "serve", f"basic={WORKERS / 'worker_basic.py'}",
             "--runpod-worker", "--replicas", "2", "--external", "other", "--port", "0", "--api-key", "k"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        url = wait_for(
            lambda: (m := re.search(r"RunPod emulator at (\S+)", out.read_text())) and m.group(1),
            what="the server to start",
        )
        found = wait_for(lambda: len(f := re.findall(r"pid (\d+)", out.read_text())) == 2 and f)
        pids = [int(p) for p in found]
        with Client("k", base_url=url) as client:
            job = client.endpoint("basic").run_sync({"mode": "echo", "value": 7})
            assert job.status is JobStatus.COMPLETED
            assert job.output["echo"] == 7
            wait_for(lambda: client.endpoint("basic").health().workers.idle == 2, what="both workers")
            assert client.endpoint("other").health().workers.idle == 0  # external: nobody feeds it yet
        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=20) == 0
        for pid in pids:
            assert not live_group_members(pid)
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait(timeout=10)


def test_a_worker_that_cannot_start_is_restarted_with_backoff(tmp_path: Path) -> None:
    with WorkerProcesses("http://127.0.0.1:9", quiet=True) as procs:
        worker = procs.start("ep", WORKERS / "worker_broken.py")
        assert worker.proc is not None
        worker.proc.wait(timeout=10)
        procs.supervise()
        assert (worker.restarts, worker.quick_exits) == (0, 1)
        assert worker.restart_at is not None
        procs.supervise()  # still backing off
        assert worker.restarts == 0
        worker.restart_at = 0.0  # as if the backoff had passed
        procs.supervise()
        assert worker.restarts == 1
        assert worker.proc.wait(timeout=10) != 0


def _serve_with_a_worker(out: Path) -> tuple[subprocess.Popen[bytes], list[int]]:
    with out.open("wb") as sink:
        serve = subprocess.Popen(
            [sys.executable, "-m", "runpod_queue.cli", "serve", f"basic={WORKERS / 'worker_basic.py'}",
             "--runpod-worker", "--port", "0"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    found = wait_for(lambda: (f := re.findall(r"pid (\d+)", out.read_text())) and f, what="the worker")
    return serve, [int(p) for p in found]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_every_stop_signal_takes_the_workers_down_too(tmp_path: Path, signum: signal.Signals) -> None:
    # Before: SIGTERM and SIGHUP killed `rpq serve` before it stopped its workers, which kept running
    # with parent 1, retrying the gone emulator.
    serve, pids = _serve_with_a_worker(tmp_path / "serve.out")
    try:
        serve.send_signal(signum)
        serve.wait(timeout=20)
        for pid in pids:
            wait_for(lambda pid=pid: not live_group_members(pid), what=f"worker group {pid} to exit")
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait(timeout=10)
        for pid in pids:
            for member in live_group_members(pid):
                os.kill(member, signal.SIGKILL)


def test_a_worker_exits_when_its_parent_is_killed_outright(tmp_path: Path) -> None:
    # SIGKILL leaves no chance to clean up: the worker watches its parent (PR_SET_PDEATHSIG on Linux).
    serve, pids = _serve_with_a_worker(tmp_path / "serve.out")
    try:
        serve.kill()
        serve.wait(timeout=20)
        for pid in pids:
            wait_for(lambda pid=pid: not _running(pid), what=f"worker {pid} to exit")
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait(timeout=10)
        for pid in pids:
            for member in live_group_members(pid):
                os.kill(member, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def test_ctrl_c_answers_held_worker_polls_cleanly(tmp_path: Path) -> None:
    # Before: uvicorn's graceful stop waited for the held polls, gave up after its grace, logged
    # "ERROR: Cancel 2 running task(s), timeout graceful shutdown exceeded" and answered them with 500.
    import threading

    import httpx

    out = tmp_path / "serve.out"
    with out.open("wb") as sink:
        serve = subprocess.Popen(
            [sys.executable, "-m", "runpod_queue.cli", "serve", "--external", "ext", "--port", "0"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    answers: dict[str, int | str] = {}
    try:
        url = wait_for(
            lambda: (m := re.search(r"RunPod emulator at (\S+)", out.read_text())) and m.group(1),
            what="the server to start",
        )

        def poll(name: str, path: str) -> None:
            try:
                answers[name] = httpx.get(f"{url}/ext/{path}", timeout=60).status_code
            except httpx.HTTPError as exc:
                answers[name] = repr(exc)

        threads = [
            threading.Thread(target=poll, args=("job-stop", "job-stop/w-stop")),
            threading.Thread(target=poll, args=("job-take", "job-take/w-take?job_in_progress=0")),
        ]
        for thread in threads:
            thread.start()
        with Client("any", base_url=url) as client:
            wait_for(lambda: client.endpoint("ext").health().workers.idle == 2, what="both polls held")
        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=20) == 0
        for thread in threads:
            thread.join(20)
        assert answers == {"job-stop": 204, "job-take": 204}
        assert "ERROR" not in out.read_text()
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait(timeout=10)
