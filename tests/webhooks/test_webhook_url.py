"""`rpq webhook-url`: a signed URL from the shell, accepted by `rpq listen` with the same secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner
from webhook_support import SECRET, Listener, eventually

from runpod_queue.cli._app import app, load_commands
from runpod_queue.emulator import Emulator
from runpod_queue.webhooks import DEFAULT_EXPIRES_IN, TOKEN_PARAM, WebhookSigner

load_commands()


def webhook_url(*args: str, secret: str | None = SECRET) -> subprocess.CompletedProcess[str]:
    """`rpq webhook-url ARGS --secret-env HOOK_SECRET` as its own process, as `$(...)` runs it."""
    env = {k: v for k, v in os.environ.items() if k != "HOOK_SECRET"}
    if secret is not None:
        env["HOOK_SECRET"] = secret
    return subprocess.run(
        [sys.executable, "-m", "runpod_queue.cli", "webhook-url", *args, "--secret-env", "HOOK_SECRET"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_url_from_webhook_url_gets_a_job_from_rpq_run_into_listens_file(
    tmp_path: Path, emu: Emulator
) -> None:
    out = tmp_path / "deliveries.jsonl"
    listener = Listener(out)  # --port 0: it prints the port it got
    try:
        made = webhook_url(listener.base)
        assert made.returncode == 0, made.stderr
        assert made.stdout.count("\n") == 1 and made.stdout.startswith(f"{listener.base}?{TOKEN_PARAM}=")
        url = made.stdout.strip()
        ran = CliRunner().invoke(
            app,
            ["run", "echo", '{"paid": true}', "--webhook", url, "--base-url", emu.base_url, "--api-key", "k"],
            env={"RUNPOD_API_KEY": None, "RUNPOD_ENDPOINT_BASE_URL": None},
        )
        assert ran.exit_code == 0, ran.stderr
        eventually(lambda: out.exists() and out.read_text().count("\n") == 1)
        record = json.loads(out.read_text())
        assert record["status"] == "COMPLETED" and record["output"] == {"paid": True}
    finally:
        err = listener.stop()
    assert f"accepted job {record['id']} COMPLETED from 127.0.0.1" in err
    assert SECRET not in made.stdout + made.stderr + err


def test_the_url_carries_a_token_for_the_secret_that_expires_as_asked() -> None:
    signer = WebhookSigner(SECRET)
    before = time.time()
    default = webhook_url("http://127.0.0.1:8787/hook?tenant=a")
    short = webhook_url("http://127.0.0.1:8787/", "--expires-in", "10m")
    assert default.returncode == 0 and short.returncode == 0, default.stderr + short.stderr
    assert default.stdout.startswith("http://127.0.0.1:8787/hook?tenant=a&rpq_token=")
    claims = signer.verify(WebhookSigner.token_from_url(default.stdout.strip()))
    assert before + DEFAULT_EXPIRES_IN - 1 <= claims.expires_at <= time.time() + DEFAULT_EXPIRES_IN
    claims = signer.verify(WebhookSigner.token_from_url(short.stdout.strip()))
    assert before + 600 - 1 <= claims.expires_at <= time.time() + 600


@pytest.mark.parametrize(
    ("args", "secret", "message"),
    [
        (["http://127.0.0.1:8787/"], None, "environment variable HOOK_SECRET is not set; make one"),
        (["http://127.0.0.1:8787/"], "abc12", "the secret in HOOK_SECRET is too short (5 bytes"),
        (["ftp://127.0.0.1/"], SECRET, "URL must be an absolute http:// or https:// URL"),
        (["127.0.0.1:8787"], SECRET, "URL must be an absolute http:// or https:// URL"),
        (["http://127.0.0.1:8787/", "--expires-in", "0"], SECRET, "--expires-in must be at least 1 seconds"),
    ],
)
def test_bad_input_is_a_one_line_usage_error(args: list[str], secret: str | None, message: str) -> None:
    result = CliRunner().invoke(
        app, ["webhook-url", *args, "--secret-env", "HOOK_SECRET"], env={"HOOK_SECRET": secret}
    )
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {message}") and result.stderr.count("\n") == 1
    assert secret is None or secret not in result.stderr
