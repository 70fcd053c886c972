"""`rpq listen`: every acknowledged delivery is on disk, even when killed right after answering."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from test_receiver import SECRET, _free_port, attempts, emu, eventually, run  # noqa: F401

from runpod_queue.emulator import Emulator
from runpod_queue.webhooks import WebhookSigner


def start_listen(out: Path, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "HOOK_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runpod_queue.cli",
            "listen",
            "--out",
            str(out),
            "--secret-env",
            "HOOK_SECRET",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/healthz"

    def up() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    eventually(up, timeout=20)
    return proc


def test_listen_keeps_every_acknowledged_line_across_a_kill(tmp_path: Path, emu: Emulator) -> None:  # noqa: F811
    out = tmp_path / "deliveries.jsonl"
    port = _free_port()
    signer = WebhookSigner(SECRET)
    base = f"http://127.0.0.1:{port}/"
    proc = start_listen(out, port)
    try:
        url = signer.sign(base)
        job_id = run(emu, "echo", url, {"paid": True})
        eventually(lambda: attempts(emu, job_id) == [200])
        proc.send_signal(signal.SIGKILL)  # right after answering
        proc.wait(5)
        lines = out.read_text().splitlines()
        assert len(lines) == 1
        record = json.loads(lines[0])
        assert record["id"] == job_id and record["output"] == {"paid": True}
        assert SECRET not in out.read_text() and "REDACTED" in record["webhook"]
        # Restarted, it remembers what it accepted: a repeated delivery is acknowledged, not written twice.
        proc = start_listen(out, port)
        replay = httpx.post(url, json={k: v for k, v in record.items() if k != "_rpq"})
        assert replay.status_code == 200 and "duplicate" in replay.json()["reason"]
        assert len(out.read_text().splitlines()) == 1
        # ... and its nonce stays claimed: another job's delivery under that URL is refused.
        forged = httpx.post(url, json={"id": "another-job", "status": "COMPLETED", "output": "fake"})
        assert forged.status_code == 403
        again = run(emu, "fail", signer.sign(base))
        eventually(lambda: attempts(emu, again) == [200])
        assert len(out.read_text().splitlines()) == 2
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert "Traceback" not in err


def test_listen_truncates_a_partial_last_line(tmp_path: Path) -> None:
    out = tmp_path / "deliveries.jsonl"
    out.write_text('{"id": "a", "status": "COMPLETED", "_rpq": {"nonce": "n1"}}\n{"id": "b", "sta')
    port = _free_port()
    proc = start_listen(out, port)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert out.read_text() == '{"id": "a", "status": "COMPLETED", "_rpq": {"nonce": "n1"}}\n'
    assert "1 already there" in err


def test_listen_without_the_secret_is_a_usage_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NO_SUCH_SECRET"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "runpod_queue.cli",
            "listen",
            "--out",
            str(tmp_path / "o.jsonl"),
            "--secret-env",
            "NO_SUCH_SECRET",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "NO_SUCH_SECRET" in done.stderr
    assert time.time() > 0
