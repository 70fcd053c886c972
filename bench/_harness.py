"""Shared bits for benchmarks: free ports, servers in subprocesses, waiting until they answer."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"server at {url} did not come up in {timeout} s")


@contextlib.contextmanager
def process(
    args: list[str], ready_url: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server process, wait until `ready_url` answers, stop it afterwards."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen(
        args, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
    )
    try:
        wait_until_up(ready_url)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def emulator_process(handler_ref: str, port: int, *extra: str) -> Iterator[str]:
    """Our emulator via `rpq serve`; yields the base URL."""
    args = [sys.executable, "-m", "runpod_queue.cli", "serve", handler_ref, "--port", str(port), *extra]
    with process(args, f"http://127.0.0.1:{port}/v2/"):
        yield f"http://127.0.0.1:{port}/v2"


@contextlib.contextmanager
def official_test_server(port: int) -> Iterator[str]:
    """The official `runpod` package's local test server on the same no-op handler; yields its root URL."""
    args = [
        sys.executable,
        str(BENCH_DIR / "_noop_worker.py"),
        "--rp_serve_api",
        "--rp_api_port",
        str(port),
        "--rp_api_host",
        "127.0.0.1",
        "--rp_log_level",
        "ERROR",
    ]
    env = {"RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true", "RUNPOD_SKIP_GPU_CHECK": "true"}
    with process(args, f"http://127.0.0.1:{port}/docs", env=env):
        yield f"http://127.0.0.1:{port}"
