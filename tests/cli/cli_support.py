"""Constants and helpers for the CLI tests (a plain module, so test files can import it)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from typer.testing import Result

from runpod_queue import Client, Job

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
API_KEY = "rpq-cli-secret-5d1e8a9c3f7b"  # distinctive, so a test can prove it is never printed

# The `rpq` fixture: rpq(*args, input=None, connect=True, env=None) -> Result
Invoke = Callable[..., Result]


def until_running(client: Client, endpoint: str, job_id: str) -> Job:
    """The job's first snapshot that is no longer IN_QUEUE (a worker took it)."""
    deadline = time.monotonic() + 10
    while True:
        job = client.endpoint(endpoint).status(job_id)
        if not job.is_in_queue or time.monotonic() > deadline:
            return job
        time.sleep(0.02)


def json_lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
