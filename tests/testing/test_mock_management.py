"""mock_runpod routes RunPod's management host (api.runpod.io, REST v2) to the emulator's management
routes, for httpx, requests and aiohttp alike, as it routes api.runpod.ai to the queue routes."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp
import httpx
import pytest
import requests

from runpod_queue.emulator import EndpointSpec
from runpod_queue.testing import mock_runpod

URL = "https://api.runpod.io/v2/serverless/scaled/workers?x=1"


def _echo(job: dict[str, Any]) -> Any:
    return job["input"]


def _with_httpx(key: str) -> dict[str, Any]:
    return dict(httpx.get(URL, headers={"Authorization": f"Bearer {key}"}).json())


def _with_requests(key: str) -> dict[str, Any]:
    return dict(requests.get(URL, headers={"Authorization": f"Bearer {key}"}, timeout=10).json())


def _with_aiohttp(key: str) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(URL, headers={"Authorization": f"Bearer {key}"}) as answer,
        ):
            return dict(await answer.json())

    return asyncio.run(main())


@pytest.mark.parametrize(
    "fetch", [_with_httpx, _with_requests, _with_aiohttp], ids=["httpx", "requests", "aiohttp"]
)
def test_the_management_host_reaches_the_emulators_management_routes(fetch: Any) -> None:
    spec = EndpointSpec(_echo, workers_min=1, workers_max=2, cold_start=5)
    with mock_runpod({"scaled": spec}, api_key="mgmt-key", clock="virtual"):
        body = fetch(os.environ["RUNPOD_API_KEY"])
    assert body["summary"]["initializing"] == 1
    assert [w["status"] for w in body["workers"]] == ["INITIALIZING"]
