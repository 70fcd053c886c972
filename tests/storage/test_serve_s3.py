"""`rpq serve --s3 --runpod-worker`: an unmodified official worker's rp_upload.upload_image writes to the
embedded S3, and our client downloads the URL it returns, byte-identical."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from runpod_queue import Client, S3Config, S3Store
from shared_support import need

need("runpod")  # not imported here: the worker subprocess imports it
T = TypeVar("T")

WORKER = """
import base64, pathlib, tempfile
import runpod
from runpod.serverless.utils import rp_upload


def handler(job):
    path = pathlib.Path(tempfile.mkdtemp()) / "result.png"
    path.write_bytes(base64.b64decode(job["input"]["b64"]))
    return {"image_url": rp_upload.upload_image(job["id"], str(path))}


runpod.serverless.start({"handler": handler})
"""


def _wait_for(probe: Callable[[], T | None], what: str) -> T:
    deadline = time.monotonic() + 60  # bounds a broken run only; nothing asserts on time
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def test_official_worker_upload_image_round_trip(tmp_path: Path) -> None:
    import base64

    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    out = tmp_path / "serve.out"
    with out.open("wb") as sink:
        serve = subprocess.Popen(
            [sys.executable, "-m", "runpod_queue.cli", "serve", f"up={worker}", "--runpod-worker", "--s3",
             "--port", "0"],
            stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        url = _wait_for(
            lambda: (m := re.search(r"RunPod emulator at (\S+)", out.read_text())) and m.group(1), "serve"
        )
        s3_url, bucket = _wait_for(
            lambda: (m := re.search(r"s3\s+(\S+)\s+bucket (\S+)", out.read_text())) and m.groups(), "s3 line"
        )
        data = os.urandom(300_000)
        with Client(base_url=url) as client:
            job = client.endpoint("up").run_sync({"b64": base64.b64encode(data).decode()}, timeout=120)
        job.raise_for_status()
        (image_url,) = job.output_urls()
        assert "X-Amz-Signature=" in image_url  # presigned, in the %m-%y bucket rp_upload picks itself
        store = S3Store(S3Config("emulator-access-key", "emulator-secret-key", bucket, s3_url))
        assert store.download(image_url) == data
        assert "emulator-secret-key" not in out.read_text()
        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=20) == 0
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait(timeout=10)
