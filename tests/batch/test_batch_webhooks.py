"""Webhook-driven batches: every job carries a signed webhook, deliveries are the results, and only jobs
whose delivery is late are polled."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from batch_support import Recorder, keys_once, lines, write_inputs

from runpod_queue.batch import BatchRunner
from runpod_queue.batch import journal as jn
from runpod_queue.emulator import Emulator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def webhook_runner(emu: Emulator, tmp_path: Path, *, public: str | None = None, **kwargs: Any) -> BatchRunner:
    port = free_port()
    return BatchRunner(
        "ep",
        journal=tmp_path / "j.sqlite",
        output=tmp_path / "out.jsonl",
        base_url=emu.base_url,
        rate_limits=False,
        webhook_url=public or f"http://127.0.0.1:{port}/hooks",
        listen=("127.0.0.1", port),
        **kwargs,
    )


def test_deliveries_are_the_results_and_nothing_is_polled(
    emu: Emulator, recorder: Recorder, tmp_path: Path
) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", 200)
    runner = webhook_runner(emu, tmp_path, webhook_grace=30)
    summary = runner.run(lines(inputs))
    assert summary.ok and summary.completed == 200
    assert summary.webhook_deliveries == 200
    assert summary.status_calls == 0  # every result came by webhook
    rows = keys_once(tmp_path / "out.jsonl")
    assert len(rows) == 200 and all(r["status"] == "COMPLETED" for r in rows.values())
    assert recorder.duplicates() == 0
    # Every webhook was signed: the emulator's deliveries were all accepted on the first try.
    attempts = emu.webhook_attempts
    assert len(attempts) == 200 and all(a.status_code == 200 and "rpq_token=" in a.url for a in attempts)


def test_a_failed_delivery_is_checked_then_retried_as_polling_would(
    emu: Emulator, recorder: Recorder, tmp_path: Path
) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", 20, fail_first=True)
    runner = webhook_runner(emu, tmp_path, webhook_grace=30, retries=1)
    summary = runner.run(lines(inputs))
    assert summary.ok and summary.completed == 20 and summary.retried == 20
    # One status check per job, prompted by its FAILED delivery; the retried attempt's COMPLETED
    # delivery finished it.
    assert summary.status_calls == 20
    rows = keys_once(tmp_path / "out.jsonl")
    assert all(r["status"] == "COMPLETED" and r["attempts"] == 2 for r in rows.values())


def test_jobs_whose_delivery_never_comes_are_polled_once_late(
    emu: Emulator, recorder: Recorder, tmp_path: Path
) -> None:
    # The public URL leads nowhere (a tunnel that is down): the receiver never hears of any job.
    dead = f"http://127.0.0.1:{free_port()}/hooks"
    inputs = write_inputs(tmp_path / "in.jsonl", 30)
    runner = webhook_runner(emu, tmp_path, public=dead, webhook_grace=0.2)
    summary = runner.run(lines(inputs))
    assert summary.ok and summary.completed == 30
    assert summary.webhook_deliveries == 0 and summary.status_calls >= 30
    assert len(keys_once(tmp_path / "out.jsonl")) == 30


def test_the_secret_is_kept_in_the_journal_so_a_resumed_batch_still_verifies(
    emu: Emulator, tmp_path: Path
) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", 5)
    webhook_runner(emu, tmp_path).run(lines(inputs))
    journal = jn.Journal(tmp_path / "j.sqlite", endpoint_id="ep")
    secret = journal.meta("webhook_secret")
    journal.close()
    assert secret and len(secret) >= 32
    more = write_inputs(tmp_path / "in.jsonl", 8)
    summary = webhook_runner(emu, tmp_path).run(lines(more))
    assert summary.ok and summary.reused == 5 and summary.webhook_deliveries == 3
    journal = jn.Journal(tmp_path / "j.sqlite", endpoint_id="ep")
    assert journal.meta("webhook_secret") == secret
    journal.close()


def test_forged_deliveries_do_not_finish_jobs(tmp_path: Path) -> None:
    release = threading.Event()

    def held(job: dict[str, Any]) -> Any:
        release.wait(10)
        return "real"

    with Emulator({"ep": held}, rate_limits=False) as emu:
        port = free_port()
        runner = webhook_runner(emu, tmp_path, public=f"http://127.0.0.1:{port}/", webhook_grace=30)
        runner.listen = ("127.0.0.1", port)
        worker = threading.Thread(target=runner.run, args=([{"n": 1}],))
        worker.start()
        deadline = time.monotonic() + 10
        while not runner._by_id:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        job_id = next(iter(runner._by_id))
        fake = {"id": job_id, "status": "COMPLETED", "output": "forged"}
        assert httpx.post(f"http://127.0.0.1:{port}/", json=fake).status_code == 401
        assert httpx.post(f"http://127.0.0.1:{port}/?rpq_token=a.1.b", json=fake).status_code == 401
        release.set()
        worker.join(30)
    rows = keys_once(tmp_path / "out.jsonl")
    assert [r["output"] for r in rows.values()] == ["real"]


def test_bad_webhook_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="go together"):
        BatchRunner("ep", journal=tmp_path / "j", webhook_url="https://x.example/h")
    with pytest.raises(ValueError, match="http"):
        BatchRunner("ep", journal=tmp_path / "j", webhook_url="x.example/h", listen=("127.0.0.1", 1))


def test_cli_webhook_batch(emu: Emulator, tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", 25)
    port = free_port()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "runpod_queue.cli",
            "batch",
            str(inputs),
            "--endpoint",
            "ep",
            "--out",
            str(tmp_path / "out.jsonl"),
            "--base-url",
            emu.base_url,
            "--no-rate-limits",
            "--no-progress",
            "--webhook-url",
            f"http://127.0.0.1:{port}/",
            "--listen",
            f"127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "webhook deliveries" in done.stdout
    assert len(keys_once(tmp_path / "out.jsonl")) == 25
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "runpod_queue.cli",
            "batch",
            str(inputs),
            "--endpoint",
            "ep",
            "--out",
            str(tmp_path / "o2.jsonl"),
            "--base-url",
            emu.base_url,
            "--listen",
            "nonsense",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "go together" in bad.stderr


def test_a_listen_address_in_use_is_an_error_not_an_exit(emu: Emulator, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        runner = webhook_runner(emu, tmp_path, public=f"http://127.0.0.1:{port}/")
        runner.listen = ("127.0.0.1", port)
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            runner.run([{"n": 1}])
    # Nothing was sent; the journal is usable by the next run.
    retry = webhook_runner(emu, tmp_path)
    assert retry.run([{"n": 1}]).completed == 1
