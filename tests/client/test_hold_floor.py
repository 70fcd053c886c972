"""The client never asks for a hold RunPod refuses (/stream?wait= below 1000 ms; status-sync likewise by
our choice): near a deadline it polls /status without one. Over real HTTP, on a loopback server."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from client_support import API_KEY, Api, LoopbackServer

from runpod_queue import WaitTimeoutError


def _running(method: str, path: str) -> tuple[int, Any]:
    if "/stream/" in path:
        return 200, {"status": "IN_PROGRESS", "stream": []}
    return 200, {"id": path.split("?")[0].rsplit("/", 1)[-1], "status": "IN_PROGRESS"}


def _holds(server: LoopbackServer) -> list[int]:
    return [int(m.group(1)) for _, p, _ in server.requests if (m := re.search(r"[?&]wait=(\d+)", p))]


@pytest.mark.parametrize("operation", ["wait", "stream"])
def test_no_hold_below_1000_ms_near_a_deadline(connect: Callable[..., Api], operation: str) -> None:
    server = LoopbackServer(_running)
    try:
        api = connect(api_key=API_KEY, base_url=server.base_url)
        ep = api.endpoint("ep")
        with pytest.raises(WaitTimeoutError):
            if operation == "wait":
                ep.wait("j1", timeout=0.3)
            else:
                ep.stream("j1", timeout=0.3)
    finally:
        server.close()
    assert all(hold >= 1000 for hold in _holds(server))
    # The deadline is under a second away from the start: every poll was a plain /status.
    assert server.requests and all("/status/" in path for _, path, _ in server.requests)


def test_a_stream_close_to_its_deadline_still_gets_the_ended_jobs_chunks(connect: Callable[..., Api]) -> None:
    def ended(method: str, path: str) -> tuple[int, Any]:
        if "/stream/" in path:
            return 200, {"status": "COMPLETED", "stream": [{"output": "last"}]}
        return 200, {"id": "j1", "status": "COMPLETED"}

    server = LoopbackServer(ended)
    try:
        streamed = connect(api_key=API_KEY, base_url=server.base_url).endpoint("ep").stream("j1", timeout=0.5)
    finally:
        server.close()
    assert [c.output for c in streamed.chunks] == ["last"]
    assert _holds(server) == [1000]
