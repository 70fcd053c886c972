"""One emulator (`emu`, tests/conftest.py) for the CLI tests, serving the example handlers a user would copy,
on loopback.

`time_scale=0.1` makes RunPod's durations short enough to test (executionTimeout 5 s -> 0.5 s) while
keeping results around long enough (runsync retention 1 min -> 6 s) to inspect after a command.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cli_support import API_KEY, EXAMPLES, Invoke, WireRecorder
from typer.testing import CliRunner, Result

from runpod_queue import Client
from runpod_queue.cli._app import app, load_commands
from runpod_queue.emulator import Emulator, EndpointSpec, load_endpoint
from shared_support import EmuSetup

load_commands()


def _specs() -> dict[str, Any]:
    specs: dict[str, Any] = {}
    for name in ("echo", "tokens", "slow", "fail", "flaky", "s3_upload"):
        loaded = load_endpoint(str(EXAMPLES / f"{name}.py"))
        specs[loaded.endpoint_id] = loaded.spec
    # No workers: jobs stay IN_QUEUE, so purge has something to remove.
    specs["idle"] = EndpointSpec(handler=specs["echo"].handler, workers=0)
    specs["broken_stream"] = _broken_stream
    return specs


def _broken_stream(job: dict[str, Any]) -> Iterator[str]:
    """A generator that fails mid-stream: the worker reports it as "handler: … traceback: …"."""
    yield "partial "
    raise ValueError(f"stream broke at {job['input'].get('at', 1)}")


_EMU = EmuSetup(
    _specs, {"api_key": API_KEY, "workers": 2, "time_scale": 0.1, "rate_limits": False}, shared=True
)


@pytest.fixture(scope="module")
def emu_setup() -> EmuSetup:
    return _EMU


@pytest.fixture(scope="module")
def client(emu: Emulator) -> Iterator[Client]:
    with Client(api_key=API_KEY, base_url=emu.base_url) as c:
        yield c


@pytest.fixture
def wire() -> Iterator[WireRecorder]:
    with WireRecorder() as recorder:
        yield recorder


@pytest.fixture
def rpq(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """Run `rpq ARGS` in-process against the emulator (connection flags appended unless given)."""
    runner = CliRunner()

    def invoke(
        *args: str, input: str | None = None, connect: bool = True, env: dict[str, str] | None = None
    ) -> Result:
        argv = list(args)
        if connect:
            argv += ["--base-url", emu.base_url, "--api-key", API_KEY]
        environment: dict[str, str | None] = {
            "RUNPOD_API_KEY": None,
            "RUNPOD_ENDPOINT_BASE_URL": None,
            "COLUMNS": "200",
        }
        environment.update(env or {})
        return runner.invoke(app, argv, input=input, env=environment)

    return invoke
