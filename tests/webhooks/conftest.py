"""The emulator that delivers real webhooks to the receivers under test, on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from runpod_queue.emulator import Emulator


def failing(job: dict[str, Any]) -> Any:
    return {"error": "no good"}


@pytest.fixture(scope="session")
def emu() -> Iterator[Emulator]:
    endpoints = {"echo": lambda job: job["input"], "fail": failing}
    with Emulator(endpoints, time_scale=0.001) as emulator:  # webhook retry gap 10 s → 10 ms
        yield emulator
