"""`rpq workers`, `rpq endpoint show` and `rpq endpoint scale` against the emulator's management API."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cli_support import API_KEY, Invoke

from runpod_queue.emulator import Emulator, EndpointSpec
from shared_support import EmuSetup


def _echo(job: dict[str, Any]) -> Any:
    return job["input"]


_EMU = EmuSetup(
    lambda: {"cold": EndpointSpec(_echo, workers_max=2, cold_start=30), "fixed": _echo},
    {"api_key": API_KEY, "clock": "virtual", "rate_limits": False},
)


@pytest.fixture(scope="module")
def emu_setup() -> EmuSetup:
    return _EMU


def test_scale_then_workers_shows_the_cold_start_and_its_end(rpq: Invoke, emu: Emulator) -> None:
    shown = rpq("endpoint", "show", "cold")
    assert shown.exit_code == 0, shown.output
    assert "workers 0..2" in shown.output and "scaler queue_delay 4" in shown.output
    scaled = rpq("endpoint", "scale", "cold", "--min", "1", "--idle-timeout", "1m")
    assert scaled.exit_code == 0, scaled.output
    assert "cold: workers 1..2" in scaled.output
    listed = rpq("workers", "cold")
    assert listed.exit_code == 0, listed.output
    assert "1 workers: 0 running, 0 idle, 1 initializing" in listed.output
    assert "INITIALIZING" in listed.output
    emu.advance(30)
    as_json = json.loads(rpq("workers", "cold", "--json").output)
    assert [w["status"] for w in as_json["workers"]] == ["IDLE"]
    assert as_json["summary"]["idle"] == 1
    assert API_KEY not in shown.output + scaled.output + listed.output


def test_scale_refusals_exit_with_a_clear_message(rpq: Invoke) -> None:
    nothing = rpq("endpoint", "scale", "cold")
    assert nothing.exit_code == 2 and "give --min N, --max N and/or --idle-timeout D" in nothing.output
    crossed = rpq("endpoint", "scale", "cold", "--min", "3", "--max", "1")
    assert crossed.exit_code == 2 and "--min (3) is above --max (1)" in crossed.output
    fixed = rpq("endpoint", "scale", "fixed", "--max", "4")
    assert fixed.exit_code == 3 and "serve it as a fleet" in fixed.output
    missing = rpq("workers", "nope")
    assert missing.exit_code == 3 and "not found" in missing.output
