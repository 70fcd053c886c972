"""`rpq upload` / `rpq download` against moto's S3 on loopback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runpod_queue import S3Config, S3Store
from runpod_queue.cli._app import app, load_commands


@pytest.fixture
def env(config: S3Config, monkeypatch: pytest.MonkeyPatch) -> S3Config:
    monkeypatch.setenv("BUCKET_ENDPOINT_URL", config.endpoint_url)
    monkeypatch.setenv("BUCKET_ACCESS_KEY_ID", config.access_id)
    monkeypatch.setenv("BUCKET_SECRET_ACCESS_KEY", config.access_secret)
    monkeypatch.setenv("BUCKET_NAME", config.bucket_name)
    load_commands()
    return config


def test_upload_then_download(env: S3Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(6 << 20)
    (tmp_path / "in.bin").write_bytes(data)
    result = CliRunner().invoke(app, ["upload", str(tmp_path / "in.bin"), "--key", "cli/in.bin"])
    assert result.exit_code == 0, result.output
    url = result.stdout.strip()
    assert "X-Amz-Signature=" in url and "X-Amz-Signature=REDACTED" in result.stderr
    assert env.access_secret not in result.output
    for name in ("BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY", "BUCKET_ENDPOINT_URL", "BUCKET_NAME"):
        monkeypatch.delenv(name)  # a presigned URL needs no credentials
    out = tmp_path / "out.bin"
    result = CliRunner().invoke(app, ["download", url, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == data
    assert url.split("X-Amz-Signature=")[1] not in result.output.replace(url, "")


def test_download_by_key_into_the_current_directory(
    env: S3Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    S3Store(env).upload(b"result", key="job-1/result.txt")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["download", "job-1/result.txt"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "result.txt").read_bytes() == b"result"


def test_errors_are_one_line(env: S3Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = CliRunner().invoke(app, ["upload", str(tmp_path / "nope.png")])
    assert missing.exit_code == 2 and "is not a file" in missing.stderr
    gone = CliRunner().invoke(app, ["download", "no/such/key", "-o", str(tmp_path / "x")])
    assert gone.exit_code == 1 and "no object" in gone.stderr and not (tmp_path / "x").exists()
    monkeypatch.delenv("BUCKET_SECRET_ACCESS_KEY")
    unset = CliRunner().invoke(app, ["upload", str(tmp_path)])
    assert unset.exit_code == 2 and "set BUCKET_SECRET_ACCESS_KEY" in unset.stderr
