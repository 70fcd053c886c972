"""Fixtures: `emu` (tests/conftest.py) is one emulator per test module serving the module's recorder as
``ep`` (limits off unless a test is about them; starting one costs more than most batch tests), a fresh
recorder per test, and a client for the emulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from batch_support import FAST, Recorder

from runpod_queue import Client
from runpod_queue.emulator import Emulator
from shared_support import EmuSetup


@pytest.fixture(scope="module")
def shared_recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def recorder(shared_recorder: Recorder) -> Recorder:
    """The module emulator's handler, forgetting what earlier tests ran (every test ends its jobs)."""
    shared_recorder.reset()
    return shared_recorder


@pytest.fixture(scope="module")
def emu_setup(shared_recorder: Recorder) -> EmuSetup:
    return EmuSetup(
        lambda: {"ep": shared_recorder}, {"workers": 4, "time_scale": 0.001, "rate_limits": False}
    )


@pytest.fixture
def client(emu: Emulator) -> Iterator[Client]:
    with Client(base_url=emu.base_url, retries=FAST, rate_limits=False) as c:
        yield c
