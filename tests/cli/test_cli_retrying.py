"""A server that does not answer (or answers 503) gets the client's retries, and the CLI says so on stderr
instead of leaving a blank screen: a spinner on a terminal, one plain line per retry elsewhere."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
from cli_support import Invoke, StandIn
from rich.console import Console

from runpod_queue import APITimeoutError, Job, JobStatus, ServerError
from runpod_queue._retry import RetryNotice
from runpod_queue.cli._render import Progress
from runpod_queue.cli._retrying import RetryLine

_JOB = {"id": "j1", "status": "COMPLETED", "output": "done"}


@pytest.fixture
def busy() -> Iterator[StandIn]:
    """503 to the first two requests, then a completed job."""
    with StandIn(lambda n, *_: (503, {"error": "busy"}) if n <= 2 else (200, _JOB)) as server:
        yield server


@pytest.fixture(autouse=True)
def short_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The retries keep their count and order; only the pauses (0.5 s, 1 s, ... of jitter) shrink."""
    monkeypatch.setattr("runpod_queue._attempts.backoff_delay", lambda *args: 0.01)


def test_each_retry_is_one_line_on_a_plain_stderr_and_the_answer_follows(rpq: Invoke, busy: StandIn) -> None:
    result = rpq("status", "ep", "j1", "--base-url", busy.base_url, connect=False)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "id      j1\nstatus  COMPLETED\noutput  done\n"
    where = f"127.0.0.1:{busy.port}"
    assert result.stderr.splitlines() == [
        f"connecting to {where}: retrying (attempt 2 of 5, in 0.0s) after HTTP 503",
        f"connecting to {where}: retrying (attempt 3 of 5, in 0.0s) after HTTP 503",
    ]
    assert len(busy.requests) == 3


def test_on_a_terminal_the_retrying_spinner_is_gone_before_the_answer_prints(
    rpq: Invoke, busy: StandIn
) -> None:
    # TTY_COMPATIBLE=1: rich treats the captured stderr as a terminal (live display, cursor codes).
    result = rpq(
        "status", "ep", "j1", "--base-url", busy.base_url, connect=False, env={"TTY_COMPATIBLE": "1"}
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "id      j1\nstatus  COMPLETED\noutput  done\n"
    assert f"connecting to 127.0.0.1:{busy.port}: retrying (attempt 2 of 5, next in " in result.stderr
    assert "retrying (attempt 2 of 5, in " not in result.stderr  # no plain lines on a terminal
    last_erase = result.stderr.rindex("\x1b[2K")  # the transient line erased ...
    assert "connecting" not in result.stderr[last_erase:]  # ... and not drawn again


def test_a_remote_server_that_refuses_shows_every_retry_then_the_error(
    rpq: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A refused loopback connection is reported at once (nothing listens there); a remote one is retried.
    monkeypatch.setattr("runpod_queue._attempts.is_loopback", lambda url: False)
    with socket.socket() as free:  # a port that was free a moment ago: nothing listens on it
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    result = rpq("status", "ep", "j1", "--base-url", f"http://127.0.0.1:{port}/v2", connect=False)
    assert result.exit_code == 3
    lines = result.stderr.splitlines()
    assert lines[:4] == [
        f"connecting to 127.0.0.1:{port}: retrying (attempt {n} of 5, in 0.0s) after a failed connection"
        for n in range(2, 6)
    ]
    assert lines[4].startswith("error: ")


def _notice(attempt: int = 2, delay: float = 30.0) -> RetryNotice:
    request = httpx.Request("GET", "https://api.runpod.ai/v2/ep/status/j1")
    error = ServerError("busy", request=request, response=None, status_code=503)
    return RetryNotice("https://api.runpod.ai/v2/ep/status/j1", attempt, 5, delay, error)


def _terminal() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=200)


def test_on_a_terminal_a_spinner_says_it_is_retrying_until_the_answer_comes() -> None:
    line = RetryLine(_terminal())
    line(_notice())
    assert line.spinning
    described = line.describe()
    assert described.startswith("connecting to api.runpod.ai: retrying (attempt 2 of 5, next in ")
    assert described.endswith("s) after HTTP 503…")
    line.clear()  # what the command does before it prints the answer
    assert not line.spinning and line.describe() == ""


def test_a_live_status_line_tells_the_retry_itself_and_drops_it_at_the_next_answer() -> None:
    console = _terminal()
    line = RetryLine(console)
    with Progress(console, "ep", enabled=True, retry=line) as progress:
        line(_notice(attempt=3, delay=0.0))
        assert not line.spinning  # one live display at a time: the status line's
        assert progress.line().endswith("ep  · connecting to api.runpod.ai: attempt 3 of 5…")
        progress.update(Job("j1", JobStatus.IN_PROGRESS))
        assert "connecting" not in progress.line()


def test_only_the_commands_own_retries_are_shown() -> None:
    """The status line's background poll retries too; after the answer it may still be retrying."""
    line = RetryLine(_terminal())
    worker = threading.Thread(target=line, args=(_notice(),))
    worker.start()
    worker.join()
    assert line.describe() == "" and not line.spinning
    line.close()
    line(_notice())
    assert line.describe() == ""


def test_a_timeout_and_a_lost_connection_are_named() -> None:
    request = httpx.Request("GET", "https://api.runpod.ai/v2/ep/status/j1")
    plain = io.StringIO()
    line = RetryLine(Console(file=plain, force_terminal=False))
    line(RetryNotice(str(request.url), 2, 5, 1.25, APITimeoutError("timed out", request=request, sent=True)))
    assert (
        plain.getvalue()
        == "connecting to api.runpod.ai: retrying (attempt 2 of 5, in 1.2s) after a timeout\n"
    )
