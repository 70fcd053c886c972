"""pytest plugin (entry point `pytest11: runpod_queue`): installing the package is enough.

It lives outside `runpod_queue.testing` and imports only pytest: pytest loads it in every run of every
environment the package is installed in, and a plugin that fails to import stops all of them (exit 3)
before any test runs. A bare install (no `emulator` extra) therefore loads it fine; only a test that uses
the fixture or the marker is told what to install.

- `runpod_emulator` fixture: a factory, `runpod_emulator(endpoints, **options)` → a running `Emulator`
  that this process's RunPod traffic reaches (`mock_runpod`); stopped, and everything restored, after
  the test. Calling it again in one test nests a second mock (the newest receives the traffic).
- `@pytest.mark.runpod_mock(endpoints, **options)`: the whole test (and the fixtures it uses) runs
  inside `mock_runpod(endpoints, **options)`; the `runpod_mock` fixture is its `Emulator`.

Both are synchronous fixtures: the mock is process-wide, so `async def` tests under pytest-asyncio or
anyio see it as well.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import pytest

__all__ = ["EmulatorFactory"]

_MARKER = "runpod_mock"


class EmulatorFactory(Protocol):
    """The `runpod_emulator` fixture's type, for annotating tests."""

    def __call__(self, endpoints: Mapping[str, Any] | None = None, /, **options: Any) -> Any: ...


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(endpoints, **options): run the test inside runpod_queue.testing.mock_runpod(endpoints, "
        "**options); the `runpod_mock` fixture is the emulator",
    )


def _mock(endpoints: Any, options: dict[str, Any], used: str) -> Any:
    try:
        from runpod_queue.testing import mock_runpod  # the emulator's imports only for tests that use it
    except ModuleNotFoundError as exc:
        missing = exc.name
    else:
        return mock_runpod(endpoints, **options)
    # One line in the test's report, no traceback or chained import error: the fix is an install.
    pytest.fail(
        f"{used} needs the emulator extra ({missing} is missing): pip install 'runpod-queue[emulator]'",
        pytrace=False,
    )


@pytest.fixture
def runpod_emulator() -> Iterator[EmulatorFactory]:
    """Factory: `emu = runpod_emulator({"my-endpoint": handler}, clock="virtual")`."""
    with contextlib.ExitStack() as stack:

        def start(endpoints: Mapping[str, Any] | None = None, /, **options: Any) -> Any:
            return stack.enter_context(_mock(endpoints, options, "the `runpod_emulator` fixture"))

        yield start


@pytest.fixture(autouse=True)
def _runpod_mock_marker(request: pytest.FixtureRequest) -> Iterator[Any]:
    marker = request.node.get_closest_marker(_MARKER)
    if marker is None:
        yield None
        return
    if len(marker.args) > 1:
        raise pytest.UsageError(
            f"@pytest.mark.{_MARKER} takes one positional argument, the endpoints mapping, and emulator "
            f"options as keywords; got {len(marker.args)} positional arguments"
        )
    endpoints = marker.args[0] if marker.args else marker.kwargs.get("endpoints")
    options = {k: v for k, v in marker.kwargs.items() if k != "endpoints"}
    with _mock(endpoints, options, f"@pytest.mark.{_MARKER}") as emulator:
        yield emulator


@pytest.fixture
def runpod_mock(request: pytest.FixtureRequest, _runpod_mock_marker: Any) -> Any:
    """The emulator a `@pytest.mark.runpod_mock(...)` test runs against."""
    if _runpod_mock_marker is None:
        raise pytest.UsageError(
            f"the `runpod_mock` fixture needs @pytest.mark.{_MARKER}({{'my-endpoint': handler}}) on the "
            "test; without a marker, use the `runpod_emulator` factory fixture"
        )
    return _runpod_mock_marker
