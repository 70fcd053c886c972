"""``RUNPOD_QUEUE_LOG=debug|info`` turns on the request log at import, on stderr, and never logs the key.

Each case runs in a fresh interpreter: the variable is read once, when ``runpod_queue`` is imported."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

KEY = "rpq-test-key-9f3c1a7e5b"  # distinctive, so any trace of it in a log line is found

# An emulator that requires the key, a client that sends it: answers, a refused key, retried 503s.
SCRIPT = textwrap.dedent(
    f"""
    import logging
    from runpod_queue import AuthenticationError, Client, Retries
    from runpod_queue.emulator import Emulator, Faults

    with Emulator({{"echo": lambda job: job["input"]}}, api_key={KEY!r}) as emu:
        with Client({KEY!r}, base_url=emu.base_url, retries=Retries(wait=False)) as client:
            ep = client.endpoint("echo")
            job = ep.run_sync({{"x": 1}})
            ep.wait(ep.run({{"x": 2}}).id, timeout=30)
            emu.set_faults(Faults(error_503=1.0))
            try:
                ep.health()
            except Exception as exc:
                logging.getLogger("runpod_queue").info("caught %r", exc)
            emu.set_faults(Faults())
        with Client({KEY!r} + "-wrong", base_url=emu.base_url) as client:
            try:
                client.endpoint("echo").run({{}})
            except AuthenticationError as exc:
                logging.getLogger("runpod_queue").info("caught %r", exc)
    print("done")
    """
)


def _run(value: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RUNPOD_QUEUE_LOG"}
    if value is not None:
        env["RUNPOD_QUEUE_LOG"] = value
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60, check=True
    )


@pytest.mark.parametrize("value", ["debug", "DEBUG"])
def test_debug_logs_every_request_and_never_the_key(value: str) -> None:
    run = _run(value)
    assert run.stdout.strip() == "done"
    log = run.stderr
    assert " runpod_queue DEBUG POST /echo/runsync?wait=90000 -> 200 (attempt 1," in log
    assert "GET /echo/health -> 503 (attempt 2," in log and "retrying GET /echo/health" in log
    assert "POST /echo/run -> 401" in log
    assert KEY not in log


def test_info_leaves_the_request_lines_out() -> None:
    log = _run("info").stderr
    assert "runpod_queue INFO caught AuthenticationError" in log
    assert "DEBUG" not in log and "/echo/runsync" not in log
    assert KEY not in log


def test_unset_logs_nothing_and_a_bad_value_says_so_once() -> None:
    assert _run(None).stderr == ""
    log = _run("verbose").stderr
    assert log == "runpod_queue: RUNPOD_QUEUE_LOG='verbose' is not a level; use debug or info (ignored)\n"


def test_rpq_debug_with_the_variable_set_logs_each_line_once() -> None:
    env = {**os.environ, "RUNPOD_QUEUE_LOG": "debug"}
    run = subprocess.run(
        [sys.executable, "-m", "runpod_queue.cli", "health", "echo", "--local", "9", "--debug"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 3  # nothing listens on port 9
    assert run.stderr.count("GET /echo/health -> ") == 1
