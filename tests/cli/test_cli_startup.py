"""`rpq serve … &` pasted with the commands after it: a command gives a loopback server a moment to bind.

The wait is for the port to appear, not a retry of the request: once it is over, a refused loopback
connection is still reported after one attempt (test_cli_config covers the message).
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import EXAMPLES, Invoke
from rich.console import Console

from runpod_queue.cli import _ready
from runpod_queue.emulator import Emulator, load_endpoint


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_command_waits_for_an_emulator_that_starts_after_it(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    env.pop("RUNPOD_API_KEY", None)
    env.pop("RUNPOD_ENDPOINT_BASE_URL", None)
    env.pop("RPQ_STARTUP_WAIT", None)  # the default wait, which this test is about
    proc = subprocess.Popen(
        [sys.executable, "-m", "runpod_queue.cli", "run", "echo", '{"prompt": "hi"}', "--local", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # the command is running and nothing listens on the port yet
        assert first == f"waiting for the emulator on 127.0.0.1:{port}…\n"
        echo = load_endpoint(str(EXAMPLES / "echo.py"))
        with Emulator({"echo": echo.spec}, port=port, rate_limits=False):  # starts after the command
            out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert json.loads(out) == {"prompt": "hi"}
    assert "waiting for the emulator" not in err  # said once
    assert "connection refused" not in err


def test_a_port_that_stays_closed_is_waited_for_once_then_reported_after_one_attempt(
    rpq: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RPQ_STARTUP_WAIT", "0.2")  # a tight bound: nothing will ever listen here
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: the port refuses connections
        port = closed.getsockname()[1]
        result = rpq("status", "echo", "job-1", "--local", str(port), connect=False)
    assert result.exit_code == 3
    lines = result.stderr.splitlines()
    assert lines[0] == f"waiting for the emulator on 127.0.0.1:{port}…"
    assert lines[1].startswith("error: ")
    assert f"cannot connect to 127.0.0.1:{port}: connection refused: nothing is listening there" in lines[1]
    assert "retrying" not in result.stderr  # one attempt of the request, as before


def test_a_remote_base_url_is_never_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_probe(*args: object, **kwargs: object) -> None:
        raise AssertionError("a remote server was probed")

    monkeypatch.setattr(_ready.socket, "create_connection", no_probe)
    said = io.StringIO()
    _ready.wait_for_listener("https://api.runpod.ai/v2", Console(file=said))
    assert said.getvalue() == ""
