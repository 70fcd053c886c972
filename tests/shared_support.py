"""What every test folder shares: the `echo` and `fail` handlers, and `EmuSetup`, how the `emu` fixture of
tests/conftest.py builds the emulator a folder or a module asks for."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from runpod_queue.emulator import Emulator


def need(name: str) -> None:
    """Skip the calling test module when `name` is not installed, without importing it.

    Unlike ``pytest.importorskip``: every xdist worker imports every test module while collecting, and a
    worker that runs none of the module's tests then does not pay for the package (measured on 2 cores:
    ``moto.server`` ~0.6 s CPU; the official ``runpod`` ~0.9 s)."""
    import pytest

    if importlib.util.find_spec(name) is None:
        pytest.skip(f"could not import {name!r}: not installed", allow_module_level=True)


#: What `fail` answers: a handler's error result, as a worker reports it.
FAIL_MESSAGE = "input needs a 'prompt'"


def echo(job: dict[str, Any]) -> Any:
    """Returns its input."""
    return job["input"]


def fail(job: dict[str, Any]) -> Any:
    """Fails every job the way a handler reports a refusal: ``{"error": ...}`` (the job ends FAILED)."""
    return {"error": FAIL_MESSAGE}


@dataclass(frozen=True, eq=False)
class EmuSetup:
    """The emulator `emu` starts: its endpoints and its `Emulator(...)` options.

    ``endpoints`` is a function, so an emulator started for each module gets handlers (and their state)
    of its own. ``shared``: one emulator serves every module of the session that uses this setup (the
    tests do not disturb each other's jobs or counters); otherwise each module starts its own.
    ``before_stop`` runs just before it stops: to release handlers a test left blocked.
    """

    endpoints: Callable[[], Mapping[str, Any]]
    options: Mapping[str, Any] = field(default_factory=dict)
    shared: bool = False
    before_stop: Callable[[], object] | None = None

    def start(self) -> Emulator:
        return Emulator(dict(self.endpoints()), **self.options).start()

    def stop(self, emulator: Emulator) -> None:
        if self.before_stop is not None:
            self.before_stop()
        emulator.stop()


#: The default `emu`: `echo` and `fail`, RunPod's durations a thousand times shorter (a webhook's retry
#: gap of 10 s is 10 ms), one emulator for the session.
DEFAULT_SETUP = EmuSetup(lambda: {"echo": echo, "fail": fail}, {"time_scale": 0.001}, shared=True)
