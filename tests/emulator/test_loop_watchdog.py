"""The loop watchdog: an async handler that holds the emulator's event loop is warned about, once per
stall, in `Emulator.warnings` (kind "loop_blocked") and the log. (`rpq serve` ending on SIGTERM while
the loop is held is in test_loading_and_serve.py.)"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import httpx
import pytest
from emulator_support import eventually

from runpod_queue.emulator import Emulator, EmulatorWarning
from shared_support import echo

RELEASE = threading.Event()


async def hog(job: dict[str, Any]) -> Any:
    while not RELEASE.is_set():  # blocking on purpose, until the test has seen the warning
        time.sleep(0.01)  # noqa: ASYNC251
    return {"held": True}


def _blocked(emu: Emulator) -> list[EmulatorWarning]:
    return [w for w in emu.warnings if w.kind == "loop_blocked"]


def _submit(emu: Emulator) -> None:
    # The answer may wait behind the held loop: the test does not need it.
    with httpx.Client(timeout=0.5) as http, contextlib.suppress(httpx.TimeoutException):
        http.post(f"{emu.base_url}/hog/run", json={"input": {}})


def test_a_handler_holding_the_loop_is_warned_about_once_per_stall(caplog: pytest.LogCaptureFixture) -> None:
    RELEASE.clear()
    with Emulator({"hog": hog, "echo": echo}, loop_warn_after=0.2) as emu:
        _submit(emu)
        eventually(lambda: bool(_blocked(emu)), timeout=30)
        RELEASE.set()
        (warning,) = _blocked(emu)
        assert isinstance(warning, str) and warning.startswith("the emulator's event loop has not answered")
        assert "hog/" in warning and "asyncio.to_thread" in warning
        assert repr(warning).startswith("EmulatorWarning(") and "kind='loop_blocked'" in repr(warning)
        # The loop answers again: the emulator serves as before.
        answer = httpx.post(f"{emu.base_url}/echo/runsync", json={"input": {"x": 1}}, timeout=30)
        assert answer.json()["output"] == {"x": 1}
        assert len(_blocked(emu)) == 1
    assert any("event loop has not answered" in r.getMessage() for r in caplog.records)


def test_loop_warn_after_is_seconds_or_none() -> None:
    Emulator({"e": echo}, loop_warn_after=None)  # the watch off
    with pytest.raises(ValueError, match=r"loop_warn_after must be at least 0\.05 seconds"):
        Emulator({"e": echo}, loop_warn_after=0.01)
