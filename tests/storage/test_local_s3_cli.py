"""The local emulator's S3 from a shell: `GET /_emulator/s3`, `rpq upload/download --local`, the BUCKET_*
lines of `rpq worker-env`, and `rpq batch --upload-from-env` / `--local` with `{"$upload": path}` lines."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from runpod_queue import S3Config, S3Store
from runpod_queue.cli._app import app, load_commands
from runpod_queue.emulator import Emulator
from shared_support import EmuSetup, echo

pytestmark = pytest.mark.parametrize(
    "emu_setup", [EmuSetup(lambda: {"echo": echo}, {"s3": True}, shared=True)], indirect=True, scope="module"
)


@pytest.fixture(autouse=True)
def _commands(monkeypatch: pytest.MonkeyPatch) -> None:
    load_commands()
    for name in ("RPQ_EMULATOR_API_KEY", "RUNPOD_API_KEY", "RUNPOD_ENDPOINT_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def plain() -> Iterator[Emulator]:
    """An emulator without S3, with a key."""
    emulator = Emulator({"echo": echo}, api_key="k-123").start()
    yield emulator
    emulator.stop()


def _rpq(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_the_control_route_answers_the_s3_config(emu: Emulator, plain: Emulator) -> None:
    answer = httpx.get(f"http://127.0.0.1:{emu.port}/_emulator/s3")
    assert answer.status_code == 200
    assert answer.json() == emu.s3_config.to_wire()
    none = httpx.get(f"http://127.0.0.1:{plain.port}/_emulator/s3", headers={"Authorization": "Bearer k-123"})
    assert none.status_code == 404 and "rpq serve --s3" in none.json()["error"]
    assert httpx.get(f"http://127.0.0.1:{plain.port}/_emulator/s3").status_code == 401  # key-protected


def test_upload_and_download_local(emu: Emulator, tmp_path: Path) -> None:
    data = os.urandom(6 << 20)
    (tmp_path / "in.bin").write_bytes(data)
    up = _rpq("upload", str(tmp_path / "in.bin"), "--local", str(emu.port), "--key", "cli/local.bin")
    assert up.exit_code == 0, up.output
    url = up.stdout.strip()
    assert url.startswith(emu.s3_config.endpoint_url) and "X-Amz-Signature=REDACTED" in up.stderr
    assert emu.s3_config.access_secret not in up.output
    assert S3Store(emu.s3_config).download("cli/local.bin") == data
    out = tmp_path / "out.bin"
    down = _rpq("download", "cli/local.bin", "-o", str(out), "--local", str(emu.port))
    assert down.exit_code == 0, down.output
    assert out.read_bytes() == data


def test_upload_local_without_s3_or_emulator_is_one_line(
    emu: Emulator, plain: Emulator, tmp_path: Path
) -> None:
    (tmp_path / "a.bin").write_bytes(b"a")
    os.environ["RPQ_EMULATOR_API_KEY"] = "k-123"
    try:
        no_s3 = _rpq("upload", str(tmp_path / "a.bin"), "--local", str(plain.port))
    finally:
        del os.environ["RPQ_EMULATOR_API_KEY"]
    assert no_s3.exit_code == 2 and "serves no S3: start it with `rpq serve --s3" in no_s3.stderr
    refused = _rpq("upload", str(tmp_path / "a.bin"), "--local", str(plain.port))
    assert refused.exit_code == 2 and "refused the key" in refused.stderr
    nobody = _rpq("upload", str(tmp_path / "a.bin"), "--local", "9")  # port 9: nothing listens
    assert nobody.exit_code == 2 and "no emulator answers at 127.0.0.1:9" in nobody.stderr


def _exports(output: str) -> dict[str, str]:
    found = {}
    for line in output.splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            found[name] = value
    return found


def test_worker_env_prints_the_bucket_variables(emu: Emulator) -> None:
    result = _rpq("worker-env", "echo", "--port", str(emu.port))
    assert result.exit_code == 0, result.output
    env = _exports(result.stdout)
    config = emu.s3_config
    assert shlex.split(env["BUCKET_ENDPOINT_URL"]) == [config.endpoint_url]
    assert env["BUCKET_ACCESS_KEY_ID"] == "emulator-access-key"
    assert env["BUCKET_SECRET_ACCESS_KEY"] == "emulator-secret-key"  # moto's fixed stand-in
    assert env["BUCKET_NAME"] == "runpod-queue" and env["RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS"] == "1"
    assert "RUNPOD_WEBHOOK_GET_JOB" in env
    skipped = _rpq("worker-env", "echo", "--port", str(emu.port), "--no-s3")
    assert "BUCKET_ENDPOINT_URL" not in skipped.stdout


def test_worker_env_never_prints_a_real_secret(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    real = S3Config("AKIAREALKEYID", "real-secret-value", "bucket", "https://s3.example.com")
    monkeypatch.setattr("runpod_queue.cli._local_s3.emulator_s3", lambda port, host="127.0.0.1": real)
    result = _rpq("worker-env", "echo", "--port", str(emu.port))
    assert result.exit_code == 0, result.output
    assert "real-secret-value" not in result.output and "AKIAREALKEYID" not in result.output
    env = _exports(result.stdout)
    assert env["BUCKET_SECRET_ACCESS_KEY"].startswith('"${BUCKET_SECRET_ACCESS_KEY:?')
    assert shlex.split(env["BUCKET_ENDPOINT_URL"]) == ["https://s3.example.com"]


def test_worker_env_without_an_emulator(emu: Emulator, plain: Emulator) -> None:
    quiet = _rpq("worker-env", "echo", "--port", "9")
    assert quiet.exit_code == 0 and "# no BUCKET_* variables: no emulator answers" in quiet.stdout
    insist = _rpq("worker-env", "echo", "--port", "9", "--s3")
    assert insist.exit_code == 2 and "no emulator answers" in insist.output
    os.environ["RPQ_EMULATOR_API_KEY"] = "k-123"
    try:
        no_s3 = _rpq("worker-env", "echo", "--port", str(plain.port), "--s3")
    finally:
        del os.environ["RPQ_EMULATOR_API_KEY"]
    assert no_s3.exit_code == 2 and "serves no S3" in no_s3.output


def _batch_input(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(4000)
    (tmp_path / "pic.png").write_bytes(data)
    lines = tmp_path / "in.jsonl"
    lines.write_text(
        json.dumps({"key": "a", "input": {"image": {"$upload": str(tmp_path / "pic.png")}}}) + "\n"
    )
    return lines, data


def _batch(emu: Emulator, tmp_path: Path, lines: Path, *extra: str) -> Any:
    out = tmp_path / "out.jsonl"
    return _rpq(
        "batch", str(lines), "--endpoint", "echo", "--out", str(out), "--local", str(emu.port),
        "--no-rate-limits", "--no-progress", *extra,
    )  # fmt: skip


def test_rpq_batch_local_uses_the_emulators_s3(emu: Emulator, tmp_path: Path) -> None:
    lines, data = _batch_input(tmp_path)
    result = _batch(emu, tmp_path, lines)
    assert result.exit_code == 0, result.output
    (row,) = map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())
    url = row["output"]["image"]  # echo returns the input the worker received: the URL
    assert url.startswith(emu.s3_config.endpoint_url) and httpx.get(url).content == data


def test_rpq_batch_upload_from_env(
    emu: Emulator, config: S3Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines, data = _batch_input(tmp_path)
    monkeypatch.delenv("BUCKET_NAME", raising=False)
    unset = _batch(emu, tmp_path, lines, "--upload-from-env")
    assert unset.exit_code == 2 and "--upload-from-env: object storage is not configured" in unset.output
    monkeypatch.setenv("BUCKET_ENDPOINT_URL", config.endpoint_url)  # the test S3, not the emulator's
    monkeypatch.setenv("BUCKET_ACCESS_KEY_ID", config.access_id)
    monkeypatch.setenv("BUCKET_SECRET_ACCESS_KEY", config.access_secret)
    monkeypatch.setenv("BUCKET_NAME", config.bucket_name)
    result = _batch(emu, tmp_path, lines, "--upload-from-env")
    assert result.exit_code == 0, result.output
    (row,) = map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())
    assert row["output"]["image"].startswith(f"{config.endpoint_url}/{config.bucket_name}/batch/")
    assert httpx.get(row["output"]["image"]).content == data
    assert config.access_secret not in result.output
