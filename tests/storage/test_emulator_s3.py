"""The emulator's embedded S3: an official worker's rp_upload writes to it, our client reads the URL back."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runpod_queue import Client, S3Store, Upload
from runpod_queue.emulator import Emulator
from shared_support import need

need("runpod")  # imported by the tests that use it
MIB = 1 << 20


def official_upload(job: dict[str, Any]) -> str:
    """A handler as RunPod's docs write it: rp_upload.upload_image with the BUCKET_* variables only."""
    from runpod.serverless.utils import rp_upload

    path = Path(os.environ["RPQ_TEST_TMP"]) / f"{job['id']}.png"
    path.write_bytes(bytes.fromhex(job["input"]["hex"]))
    url: str = rp_upload.upload_image(job["id"], str(path))
    return url


def official_download(job: dict[str, Any]) -> str:
    """A handler fetching a URL input with rp_download (it refuses loopback without the switch we set)."""
    from runpod.serverless.utils import rp_download

    found = rp_download.file(job["input"]["url"])
    return hashlib.sha256(Path(found["file_path"]).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    os.environ["RPQ_TEST_TMP"] = str(tmp_path_factory.mktemp("uploads"))
    emulator = Emulator({"up": official_upload, "down": official_download}, s3=True).start()
    yield emulator
    emulator.stop()


def test_rp_upload_image_round_trip(emu: Emulator) -> None:
    data = os.urandom(64 * 1024)
    with Client(base_url=emu.base_url) as client:
        job = client.endpoint("up").run_sync({"hex": data.hex()}, timeout=60)
    job.raise_for_status()
    (url,) = job.output_urls()
    assert S3Store(emu.s3_config).download(url) == data


def test_rp_download_reads_an_uploaded_input(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # rp_download saves into ./job_files
    data = os.urandom(2 * MIB)
    with Client(base_url=emu.base_url, store=S3Store(emu.s3_config)) as client:
        job = client.endpoint("down").run_sync({"url": Upload(data, key="in/data.bin")}, timeout=60)
    job.raise_for_status()
    assert job.output == hashlib.sha256(data).hexdigest()


def test_environment_is_set_while_running_and_restored(emu: Emulator) -> None:
    env = emu.s3_environment()
    assert env["RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS"] == "1"
    assert all(os.environ[name] == value for name, value in env.items())
    assert env["BUCKET_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert "emulator-secret-key" not in repr(emu.s3_config)


def test_without_s3_there_is_no_config() -> None:
    with pytest.raises(RuntimeError, match="s3=True"):
        _ = Emulator({}).s3_config


def test_mock_runpod_with_s3(tmp_path: Path) -> None:
    from runpod_queue.testing import mock_runpod

    os.environ["RPQ_TEST_TMP"] = str(tmp_path)
    data = os.urandom(1000)
    with mock_runpod({"up": official_upload}, s3=True) as emu:
        with Client() as client:  # RunPod's own URL, rerouted to the emulator
            job = client.endpoint("up").run_sync({"hex": data.hex()}, timeout=60)
        assert S3Store(emu.s3_config).download(job.output_urls()[0]) == data
        endpoint = emu.s3_config.endpoint_url
    assert os.environ.get("BUCKET_ENDPOINT_URL") != endpoint  # restored when the mock ends


@pytest.mark.parametrize("mode", [[], ["--sync"], ["--json"]])
def test_rpq_run_download_saves_output_urls(emu: Emulator, tmp_path: Path, mode: list[str]) -> None:
    from typer.testing import CliRunner

    from runpod_queue.cli._app import app, load_commands

    load_commands()
    data = os.urandom(5000)
    target = tmp_path / "results"
    result = CliRunner().invoke(
        app,
        ["run", "up", json.dumps({"hex": data.hex()}), "--download", str(target), "--base-url", emu.base_url,
         *mode],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (saved,) = target.iterdir()
    assert saved.suffix == ".png" and saved.read_bytes() == data
    assert "X-Amz-Signature=REDACTED" in result.stderr
