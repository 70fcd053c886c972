"""`rpq` with a status it does not know (RunPod's docs name RUNNING): it keeps polling, prints the status
as sent, and never fails on it. Against a loopback stand-in that says RUNNING twice, then COMPLETED."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from cli_support import Invoke, StandIn


def _running_twice(n: int, *_: Any) -> tuple[int, Any]:
    if n <= 2:
        return 200, {"id": "job-1", "status": "RUNNING"}
    return 200, {"id": "job-1", "status": "COMPLETED", "output": "done"}


@pytest.fixture
def running_twice() -> Iterator[str]:
    with StandIn(_running_twice) as server:
        yield server.base_url


def test_rpq_status_shows_an_unknown_status_as_pending(rpq: Invoke, running_twice: str) -> None:
    result = rpq("status", "ep", "job-1", "--json", "--base-url", running_twice, connect=False)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "RUNNING"


def test_rpq_wait_polls_through_an_unknown_status(rpq: Invoke, running_twice: str) -> None:
    result = rpq("wait", "ep", "job-1", "--timeout", "30s", "--base-url", running_twice, connect=False)
    assert result.exit_code == 0, result.stderr
    assert "done" in result.stdout
