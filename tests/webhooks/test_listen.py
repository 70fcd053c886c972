"""`rpq listen`: every acknowledged delivery is on disk, even when killed right after answering."""

from __future__ import annotations

import errno
import json
import socket
import stat
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner
from webhook_support import HTTP, SECRET, Listener, attempts, eventually, run

from runpod_queue.cli import _listen as listen_module
from runpod_queue.cli._app import app, load_commands
from runpod_queue.cli._listen import DeliveryLog
from runpod_queue.emulator import Emulator
from runpod_queue.webhooks import MemoryWebhookStore, WebhookReceiver, WebhookSigner

load_commands()


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


def test_the_delivery_file_is_created_readable_by_its_owner_only(tmp_path: Path) -> None:
    out = tmp_path / "deliveries.jsonl"
    DeliveryLog(out, MemoryWebhookStore()).close()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # job results may be private


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


def test_listen_logs_every_answer_on_one_line_without_the_token(tmp_path: Path, emu: Emulator) -> None:
    signer = WebhookSigner(SECRET)
    listener = Listener(tmp_path / "deliveries.jsonl")
    url = signer.sign(listener.base)
    expired = f"{listener.base}?rpq_token={signer.token(now=time.time() - 10 * 86_400)}"
    forged = url[:-4] + ("AAAA" if not url.endswith("AAAA") else "BBBB")
    tokens = [WebhookSigner.token_from_url(u) for u in (url, expired, forged)]
    try:
        job_id = run(emu, "echo", url, {"n": 1})
        eventually(lambda: attempts(emu, job_id) == [200])
        status = {"id": job_id, "status": "COMPLETED", "output": {"n": 1}}
        answers = [
            HTTP.post(url, json=status),  # RunPod repeating itself
            HTTP.post(url, json={"id": "other-job", "status": "COMPLETED"}),
            HTTP.post(expired, json=status),
            HTTP.post(forged, json=status),
            HTTP.post(signer.sign(listener.base), content=b"{not json"),
            HTTP.post(signer.sign(listener.base), json={"id": "j\nforged line", "status": "COMPLETED"}),
        ]
        assert [a.status_code for a in answers] == [200, 403, 401, 401, 400, 200]
        with socket.create_connection(("127.0.0.1", listener.port)) as raw:  # announced size over the limit
            raw.sendall(
                f"POST /?{signer.sign(listener.base).partition('?')[2]} HTTP/1.1\r\nHost: x\r\n"
                "Content-Length: 30000000\r\n\r\n".encode()
            )
            assert raw.recv(100).startswith(b"HTTP/1.1 413")
    finally:
        err = listener.stop()
    lines = err.splitlines()  # the rest after the banner
    assert lines[0] == f"a webhook URL for a job: rpq webhook-url {listener.base} --secret-env HOOK_SECRET"
    assert lines[-1] == "stopped."
    logged = lines[1:-1]
    assert logged[0].startswith(f"accepted job {job_id} COMPLETED from 127.0.0.1 (")
    assert logged[1:] == [
        f"repeat of job {job_id} COMPLETED from 127.0.0.1 acknowledged, not written again",
        "refused 403 from 127.0.0.1: this webhook URL was issued for another job",
        "refused 401 from 127.0.0.1: webhook token expired",
        "refused 401 from 127.0.0.1: invalid webhook token signature",
        "refused 400 from 127.0.0.1: body is not JSON",
        "accepted job j?forged line COMPLETED from 127.0.0.1",
        "refused 413 from 127.0.0.1: body over 25000000 bytes",
    ]
    assert SECRET not in err and not any(token and token in err for token in tokens)


def test_a_delivery_that_cannot_be_written_is_logged_with_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    signer = WebhookSigner(SECRET)
    out = tmp_path / "deliveries.jsonl"
    log = DeliveryLog(out, MemoryWebhookStore())
    receiver = WebhookReceiver(signer, log.write, store=log.store, with_delivery=True)

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(listen_module.os, "fsync", disk_full)
    delivery = receiver.handle(signer.token(), b'{"id": "j1", "status": "COMPLETED"}')
    log.close()
    assert delivery.status_code == 500 and delivery.reason == "callback failed: OSError"  # all RunPod sees
    line = listen_module.answer_line(delivery, "10.0.0.7", detail=log.write_error)
    why = f"cannot write {out}: No space left on device; the sender will retry"
    assert line == f"refused 500 from 10.0.0.7: {why}"
