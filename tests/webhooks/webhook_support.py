"""Helpers shared by the webhook tests that take real deliveries from the emulator (a plain module)."""

from __future__ import annotations

import atexit
import time
from collections.abc import Callable
from typing import Any

import httpx

from runpod_queue.emulator import Emulator

SECRET = "wh-secret-7f3a9c1e5b2d4f60"

# One client for every request the tests make: a fresh httpx client per call costs ~50 ms (TLS setup).
HTTP = httpx.Client(timeout=5)
atexit.register(HTTP.close)


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``check`` until it holds; fail (no timing assertion: the limit only stops a stuck test)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def run(emu: Emulator, endpoint: str, webhook: str, job_input: dict[str, Any] | None = None) -> str:
    """Queue a job with that webhook URL; its id."""
    answer = HTTP.post(f"{emu.base_url}/{endpoint}/run", json={"input": job_input or {}, "webhook": webhook})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def attempts(emu: Emulator, job_id: str) -> list[int | None]:
    """The status code of each delivery attempt the emulator made for the job, in order."""
    return [a.status_code for a in emu.webhook_attempts if a.job_id == job_id]
