"""Webhook-driven batches: every job carries a signed webhook, deliveries are the results, and only jobs
whose delivery is late are polled. Every receiver binds port 0 and the test asks which port it got."""

from __future__ import annotations

import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from batch_support import FAST, Recorder, batch_runner, keys_once, lines, write_inputs
from typer.testing import CliRunner

from runpod_queue import BatchRunner, Client
from runpod_queue.batch import WebhookOptions
from runpod_queue.batch import _journal as jn
from runpod_queue.cli._app import app, load_commands
from runpod_queue.emulator import Emulator

load_commands()
ANY_PORT = ("127.0.0.1", 0)


def webhook_runner(client: Client, tmp_path: Path, *, url: str | None = None, **kwargs: Any) -> BatchRunner:
    grace = kwargs.pop("grace", 30.0)
    hooks = WebhookOptions(listen=ANY_PORT, url=url, grace=grace)
    return batch_runner(client, tmp_path, webhooks=hooks, **kwargs)


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A URL nothing answers (a tunnel that is down): its port is bound, never listened on, so it refuses
    connections for as long as the test runs and no other server can take it meanwhile."""
    with socket.socket() as sock:
        sock.bind(ANY_PORT)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hooks"


def test_deliveries_are_the_results_and_nothing_is_polled(
    emu: Emulator, client: Client, recorder: Recorder, tmp_path: Path
) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", 50)
    runner = webhook_runner(client, tmp_path)
    before = len(emu.webhook_attempts)
    summary = runner.run(lines(inputs))
    assert summary.ok and summary.completed == 50
    assert summary.webhook_deliveries == 50
    assert summary.status_calls == 0  # every result came by webhook
    rows = keys_once(tmp_path / "out.jsonl")
    assert len(rows) == 50 and all(r["status"] == "COMPLETED" for r in rows.values())
    assert recorder.duplicates() == 0
    # Every webhook was signed and went to the port the receiver got: all accepted on the first try.
    address = runner.webhook_address
    assert address is not None and address[1] != 0
    attempts = emu.webhook_attempts[before:]
    assert len(attempts) == 50 and all(a.status_code == 200 and "rpq_token=" in a.url for a in attempts)
    assert all(a.url.startswith(f"http://127.0.0.1:{address[1]}/") for a in attempts)


def test_a_failed_delivery_is_checked_then_retried_as_polling_would(client: Client, tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", 10, fail_first=True)
    summary = webhook_runner(client, tmp_path, retry_failed=1).run(lines(inputs))
    assert summary.ok and summary.completed == 10 and summary.retried == 10
    # One status check per job, prompted by its FAILED delivery; the retried attempt's COMPLETED
    # delivery finished it.
    assert summary.status_calls == 10
    rows = keys_once(tmp_path / "out.jsonl")
    assert all(r["status"] == "COMPLETED" and r["attempts"] == 2 for r in rows.values())


def test_jobs_whose_delivery_never_comes_are_polled_once_late(
    client: Client, refused_url: str, tmp_path: Path
) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", 20)
    summary = webhook_runner(client, tmp_path, url=refused_url, grace=0.05).run(lines(inputs))
    assert summary.ok and summary.completed == 20
    assert summary.webhook_deliveries == 0 and summary.status_calls >= 20
    assert len(keys_once(tmp_path / "out.jsonl")) == 20


def test_the_journal_is_private_and_holds_no_secret_yet_a_resumed_batch_still_verifies(
    emu: Emulator, tmp_path: Path
) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", 5)
    # A key to derive the secret from (the keyless emulator takes any).
    with Client(
        base_url=emu.base_url, api_key="rpq-test-key-0123456789", retries=FAST, rate_limits=False
    ) as keyed:
        webhook_runner(keyed, tmp_path).run(lines(inputs))
        for name in ("j.sqlite", "j.sqlite-wal"):
            path = tmp_path / name
            if path.exists():
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        journal = jn.Journal(tmp_path / "j.sqlite", endpoint_id="ep")
        assert journal.meta("webhook_secret") is None and journal.meta("webhook_salt")
        journal.close()
        more = write_inputs(tmp_path / "in.jsonl", 8)
        # The resumed run derives the same secret: the 3 new jobs' deliveries verify.
        summary = webhook_runner(keyed, tmp_path).run(lines(more))
        assert summary.ok and summary.reused == 5 and summary.webhook_deliveries == 3
    journal = jn.Journal(tmp_path / "j.sqlite", endpoint_id="ep")
    assert journal.meta("webhook_secret") is None
    journal.close()


def test_without_a_key_the_secret_is_kept_in_the_journal_so_a_resumed_batch_still_verifies(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)  # a keyless local emulator: nothing to derive from
    inputs = write_inputs(tmp_path / "in.jsonl", 5)
    with Client(base_url=emu.base_url, retries=FAST, rate_limits=False) as keyless:
        webhook_runner(keyless, tmp_path).run(lines(inputs))
        journal = jn.Journal(tmp_path / "j.sqlite", endpoint_id="ep")
        secret = journal.meta("webhook_secret")
        journal.close()
        assert secret and len(secret) >= 32
        more = write_inputs(tmp_path / "in.jsonl", 8)
        summary = webhook_runner(keyless, tmp_path).run(lines(more))
        assert summary.ok and summary.reused == 5 and summary.webhook_deliveries == 3


def test_forged_deliveries_do_not_finish_jobs(tmp_path: Path) -> None:
    release = threading.Event()
    started: list[str] = []

    def held(job: dict[str, Any]) -> Any:
        started.append(job["id"])
        release.wait(10)
        return "real"

    with (
        Emulator({"ep": held}, rate_limits=False) as emu,
        Client(base_url=emu.base_url, retries=FAST, rate_limits=False) as client,
    ):
        runner = webhook_runner(client, tmp_path)
        worker = threading.Thread(target=runner.run, args=([{"n": 1}],))
        worker.start()
        try:
            while not started:  # the job is running: its id is known and its result is not
                release.wait(0.01)
            address = runner.webhook_address
            assert address is not None
            hook = f"http://127.0.0.1:{address[1]}/"
            fake = {"id": started[0], "status": "COMPLETED", "output": "forged"}
            assert httpx.post(hook, json=fake).status_code == 401
            assert httpx.post(f"{hook}?rpq_token=a.1.b", json=fake).status_code == 401
        finally:
            release.set()
            worker.join(30)
    rows = keys_once(tmp_path / "out.jsonl")
    assert [r["output"] for r in rows.values()] == ["real"]


def test_a_listen_address_in_use_is_an_error_not_an_exit(client: Client, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(ANY_PORT)
        busy.listen()
        port = busy.getsockname()[1]
        taken = WebhookOptions(listen=("127.0.0.1", port))
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            batch_runner(client, tmp_path, webhooks=taken).run([{"n": 1}])
    # Nothing was sent; the journal is usable by the next run.
    assert webhook_runner(client, tmp_path).run([{"n": 1}]).completed == 1


def test_cli_webhook_batch_on_any_port(emu: Emulator, tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path / "in.jsonl", 15)
    base = ["batch", str(inputs), "-e", "ep", "--base-url", emu.base_url, "--no-rate-limits", "--no-progress"]
    done = CliRunner().invoke(
        app, [*base, "-o", str(tmp_path / "out.jsonl"), "--listen", "127.0.0.1:0", "--webhook-grace", "30s"]
    )
    assert done.exit_code == 0, done.output
    assert "receiving webhooks on 127.0.0.1:" in done.output and "127.0.0.1:0 " not in done.output
    assert "webhook deliveries" in done.output
    assert len(keys_once(tmp_path / "out.jsonl")) == 15
    for bad, message in [
        (["--listen", "nonsense"], "HOST:PORT"),
        (["--webhook-url", "https://t.example/h"], "needs --listen"),
        (["--listen", "127.0.0.1:0", "--webhook-grace", "soon"], "not a duration"),
    ]:
        refused = CliRunner().invoke(app, [*base, "-o", str(tmp_path / "o2.jsonl"), *bad])
        assert refused.exit_code == 2 and message in refused.output, refused.output
