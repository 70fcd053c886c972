"""`rpq listen`: every acknowledged delivery is on disk, even when killed right after answering."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner
from webhook_support import HTTP, SECRET, attempts, eventually, run

from runpod_queue.cli._app import app, load_commands
from runpod_queue.cli.listen import DeliveryLog
from runpod_queue.emulator import Emulator
from runpod_queue.webhooks import MemoryWebhookStore, WebhookReceiver, WebhookSigner

load_commands()


class Listener:
    """`rpq listen` in its own process (it must survive a SIGKILL test), on the port it reports."""

    def __init__(self, out: Path, port: int = 0) -> None:
        env = {**os.environ, "HOOK_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}
        args = ["listen", "--out", str(out), "--secret-env", "HOOK_SECRET", "--port", str(port)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runpod_queue.cli", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        # Printed once the socket listens: from here a delivery waits in its backlog, no polling needed.
        self.banner = self.process.stderr.readline()
        found = re.match(r"listening on http://127\.0\.0\.1:(\d+)/ ", self.banner)
        assert found, self.banner + self.process.stderr.read()
        self.port = int(found.group(1))
        self.base = f"http://127.0.0.1:{self.port}/"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(5)

    def stop(self) -> str:
        """Ctrl-C; the rest of its stderr."""
        self.process.send_signal(signal.SIGINT)
        _, err = self.process.communicate(timeout=10)
        return err


def test_listen_keeps_every_acknowledged_line_across_a_kill(tmp_path: Path, emu: Emulator) -> None:
    out = tmp_path / "deliveries.jsonl"
    signer = WebhookSigner(SECRET)
    listener = Listener(out)  # --port 0: the port it got is in its first line
    assert listener.port != 0
    try:
        url = signer.sign(listener.base)
        job_id = run(emu, "echo", url, {"paid": True})
        eventually(lambda: attempts(emu, job_id) == [200])
        listener.kill()  # right after answering
        lines = out.read_text().splitlines()
        assert len(lines) == 1
        record = json.loads(lines[0])
        assert record["id"] == job_id and record["output"] == {"paid": True}
        assert SECRET not in out.read_text() and "REDACTED" in record["webhook"]
        with out.open("a") as partial:  # as a kill in the middle of a write would leave it
            partial.write('{"id": "never-acknowledged", "sta')
        # Restarted on the same port (the URLs out there name it), it drops the partial line and
        # remembers what it accepted: a repeated delivery is acknowledged, not written twice.
        listener = Listener(out, listener.port)
        assert "(1 already there)" in listener.banner
        assert out.read_text() == lines[0] + "\n"
        replay = HTTP.post(url, json={k: v for k, v in record.items() if k != "_rpq"})
        assert replay.status_code == 200 and "duplicate" in replay.json()["reason"]
        assert len(out.read_text().splitlines()) == 1
        # ... and its nonce stays claimed: another job's delivery under that URL is refused.
        forged = HTTP.post(url, json={"id": "another-job", "status": "COMPLETED", "output": "fake"})
        assert forged.status_code == 403
        again = run(emu, "fail", signer.sign(listener.base))
        eventually(lambda: attempts(emu, again) == [200])
        assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [job_id, again]
    finally:
        err = listener.stop()
    assert "Traceback" not in err


def test_delivery_log_recovery_drops_a_partial_last_line_and_remembers_nonces(tmp_path: Path) -> None:
    out = tmp_path / "deliveries.jsonl"
    complete = '{"id": "a", "status": "COMPLETED", "_rpq": {"nonce": "n1"}}\n'
    out.write_text(complete + '{"id": "b", "sta')
    store = MemoryWebhookStore()
    log = DeliveryLog(out, store)
    log.close()
    assert log.recovered == 1
    assert out.read_text() == complete
    assert not store.claim("n1", "another-job")  # n1 stays claimed by job a
    assert store.claim("n1", "a")


def test_listen_without_the_secret_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["listen", "--out", str(tmp_path / "o.jsonl"), "--secret-env", "NO_SUCH_SECRET"],
        env={"NO_SUCH_SECRET": None},
    )
    assert result.exit_code == 2
    assert "environment variable NO_SUCH_SECRET is not set" in result.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_listen_on_an_address_in_use_is_a_usage_error(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            app,
            ["listen", "--out", str(tmp_path / "o.jsonl"), "--secret-env", "HOOK", "--port", str(port)],
            env={"HOOK": SECRET},
        )
    assert result.exit_code == 2
    assert f"error: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_line_listen_writes_is_strict_json(tmp_path: Path) -> None:
    signer = WebhookSigner(SECRET)
    out = tmp_path / "deliveries.jsonl"
    log = DeliveryLog(out, MemoryWebhookStore())
    receiver = WebhookReceiver(signer, log.write, store=log.store, with_delivery=True)
    for n, value in enumerate(["NaN", "-Infinity", "1e400", "[1.5, 2]"]):
        body = f'{{"id": "j{n}", "status": "COMPLETED", "output": {value}}}'.encode()
        receiver.handle(signer.token(), body)
    log.close()

    def strict(constant: str) -> None:
        raise AssertionError(f"{constant} in {out.name}")

    lines = out.read_text().splitlines()
    assert len(lines) == 1  # only the JSON body was accepted; the others were answered 400
    for line in lines:
        json.loads(line, parse_constant=strict)
