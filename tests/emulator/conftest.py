"""Fixtures: `emu` (tests/conftest.py) is one emulator per test module (helpers live in emulator_support)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from emulator_support import ENDPOINTS, GATES, KEY, SEEN, STARTED, Http

from runpod_queue.emulator import Emulator
from shared_support import EmuSetup

# Scale 0.001 makes the 30 min retention 1.8 s and the 5 s minimum executionTimeout 5 ms.
_EMU = EmuSetup(ENDPOINTS, {"api_key": KEY, "workers": 2, "time_scale": 0.001})


@pytest.fixture(scope="module")
def emu_setup() -> EmuSetup:
    return _EMU


@pytest.fixture
def http(emu: Emulator) -> Iterator[Http]:
    client = Http(emu)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _open_gates() -> Iterator[None]:
    yield
    for event in GATES.values():
        event.set()
    GATES.clear()
    STARTED.clear()
    SEEN.clear()
