"""Test code that calls RunPod without RunPod (needs the `emulator` extra).

`mock_runpod(endpoints, **emulator_options)` starts a local emulator and reroutes every request this
process makes to `https://api.runpod.ai/...` to it — from requests, httpx, aiohttp, the official
`runpod` SDK or our own clients — so the code under test changes nothing. The pytest plugin
(`runpod_queue._pytest_plugin`, registered by entry point, loadable without the extra) adds the
`runpod_emulator` fixture and the `runpod_mock` marker. See docs/testing.md.
"""

from __future__ import annotations

from runpod_queue._public import publish as _publish

try:
    from runpod_queue.emulator import Emulator, EndpointSpec, Faults, JobView, RecordedRequest, Timings
    from runpod_queue.testing._mock import MOCK_API_KEY, mock_runpod
except ModuleNotFoundError as _missing:  # the plugin is loaded wherever the package is: say what to install
    raise ModuleNotFoundError(
        f"runpod_queue.testing needs the emulator extra ({_missing.name} is missing): "
        "pip install 'runpod-queue[emulator]'",
        name=_missing.name,
    ) from _missing

__all__ = [
    "MOCK_API_KEY",
    "Emulator",
    "EndpointSpec",
    "Faults",
    "JobView",
    "RecordedRequest",
    "Timings",
    "mock_runpod",
]

_publish(globals())
