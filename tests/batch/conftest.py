"""Fixtures: one in-process emulator per module (limits off unless a test is about them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from batch_support import Recorder

from runpod_queue.emulator import Emulator


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def emu(recorder: Recorder) -> Iterator[Emulator]:
    with Emulator({"ep": recorder}, workers=4, time_scale=0.001, rate_limits=False) as emulator:
        yield emulator
