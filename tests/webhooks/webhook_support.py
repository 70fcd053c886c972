"""Helpers shared by the webhook tests that take real deliveries from the emulator (a plain module)."""

from __future__ import annotations

import atexit
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
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
        # Read through the same buffered stream as the banner: communicate() reads the pipe itself and
        # would miss lines that stream had already buffered. (It writes nothing to stdout.)
        assert self.process.stderr is not None and self.process.stdout is not None
        err = self.process.stderr.read()
        self.process.wait(10)
        self.process.stderr.close()
        self.process.stdout.close()
        return err
