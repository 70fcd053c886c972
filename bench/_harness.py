"""Shared bits for benchmarks: servers in subprocesses, on ports they bound themselves, and their readiness.

Why no "find a free port, then start the server on it": between the probe closing its socket and the server
binding, another process (the machine is shared) can take the port. Every server here binds port 0 itself
and prints the address it got; `announced` reads it from the server's stdout.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
_ADDRESS = re.compile(rb"http://127\.0\.0\.1:(\d+)")


def wait_until_up(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"server at {url} did not come up in {timeout} s")


def _read_port(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """The port in the first `http://127.0.0.1:<port>` the process prints on stdout."""
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while (match := _ADDRESS.search(seen)) is None:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise RuntimeError(f"{proc.args!r} printed no address in {timeout} s: {seen[-300:]!r}")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"{proc.args!r} exited (code {proc.wait()}) before printing its address")
            seen += chunk
    return int(match.group(1))


def launch(
    args: list[str], ready_path: str = "/", env: dict[str, str] | None = None, timeout: float = 30.0
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a server that binds port 0 and prints `http://127.0.0.1:<port>...` on stdout; returns the
    process and `http://127.0.0.1:<port>` once `ready_path` answers. Stop it with `stop`.

    The server's later stdout is left unread: servers here print a few lines at start and then nothing."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(args, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        root = f"http://127.0.0.1:{_read_port(proc, timeout)}"
        wait_until_up(root + ready_path, timeout)
    except BaseException:
        stop(proc)
        raise
    return proc, root


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@contextlib.contextmanager
def announced(
    args: list[str], ready_path: str = "/", env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`launch` as a context: the server is stopped afterwards."""
    proc, root = launch(args, ready_path, env)
    try:
        yield proc, root
    finally:
        stop(proc)


class Served(NamedTuple):
    url: str
    pid: int


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) the process has used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def emulator_process(handler_ref: str, *extra: str, source: str | None = None) -> Iterator[Served]:
    """Our emulator via `rpq serve --port 0` (it prints the address it bound); yields its base URL and pid.

    `source`: a directory holding another `runpod_queue` package (e.g. `git archive <commit> src`) to serve
    instead of this checkout's, to compare two versions side by side."""
    args = [sys.executable, "-m", "runpod_queue.cli", "serve", handler_ref, "--port", "0", *extra]
    env = {"PYTHONPATH": source} if source else None
    with announced(args, "/v2/", env=env) as (proc, root):
        yield Served(f"{root}/v2", proc.pid)


@contextlib.contextmanager
def official_test_server() -> Iterator[Served]:
    """The official `runpod` package's local test server on the same no-op handler; yields its root URL
    and pid.

    Started through `_official_server.py`, which binds port 0 and hands the socket to uvicorn: the
    official server itself takes only a fixed `--rp_api_port`."""
    args = [sys.executable, str(BENCH_DIR / "_official_server.py")]
    env = {"RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true", "RUNPOD_SKIP_GPU_CHECK": "true"}
    with announced(args, "/docs", env=env) as (proc, root):
        yield Served(root, proc.pid)


@contextlib.contextmanager
def ceiling_server() -> Iterator[Served]:
    """A raw ASGI app answering a constant JSON on uvicorn + uvloop + httptools (`_ceiling_server.py`): what
    any Python route can reach here. Yields its root URL and pid."""
    args = [sys.executable, str(BENCH_DIR / "_ceiling_server.py")]
    with announced(args, "/") as (proc, root):
        yield Served(root, proc.pid)
