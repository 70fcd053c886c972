"""Every client family people call RunPod with, unchanged, under `mock_runpod()`: each runs a job, polls
it, streams a generator job, cancels a queued job and sees a FAILED job's error, over real HTTP to the
emulator, while its code names only https://api.runpod.ai."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest
import runpod
from mock_apps import ENDPOINTS, AiohttpApp, HttpxAsyncApp, RequestsApp

from runpod_queue import AsyncClient, Client, JobStatus
from runpod_queue.emulator import Emulator
from runpod_queue.testing import mock_runpod

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with mock_runpod(ENDPOINTS) as emulator:
        yield emulator


def _ops(emu: Emulator, job_id: str) -> list[tuple[str, str | None, int | None]]:
    return [(r.method, r.operation, r.status_code) for r in emu.requests if r.job_id == job_id]


def test_requests_as_runpods_docs_show(emu: Emulator) -> None:
    app = RequestsApp()
    job_id = app.run("echo", {"prompt": "hi"})
    assert app.wait("echo", job_id)["output"] == {"echo": {"prompt": "hi"}}
    assert app.stream("tokens", app.run("tokens", {})) == ["a", "b", "c"]
    parked = app.run("parked", {"n": 1})
    assert app.cancel("parked", parked) == "CANCELLED"
    failed = app.wait("fail", app.run("fail", {}))
    assert failed["status"] == "FAILED"
    assert json.loads(failed["error"])["error_message"] == "input needs a 'prompt'"
    # What a test asserts on: the jobs as the emulator holds them, and the requests it answered.
    (job,) = [j for j in emu.jobs("echo") if j.id == job_id]
    assert (job.status, job.input, job.output, job.error, job.attempts) == (
        "COMPLETED",
        {"prompt": "hi"},
        {"echo": {"prompt": "hi"}},
        None,
        1,
    )
    assert [j.status for j in emu.jobs("parked") if j.id == parked] == ["CANCELLED"]
    assert _ops(emu, parked) == [("POST", "cancel", 200)]


@pytest.mark.anyio
async def test_httpx_async_client(emu: Emulator) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        app = HttpxAsyncApp(client)
        job = await app.wait("echo", await app.run("echo", {"prompt": "hi"}))
        assert job["output"] == {"echo": {"prompt": "hi"}}
        assert await app.stream("tokens", await app.run("tokens", {})) == ["a", "b", "c"]
        assert await app.cancel("parked", await app.run("parked", {})) == "CANCELLED"
        failed = await app.wait("fail", await app.run("fail", {}))
        assert "ValueError" in json.loads(failed["error"])["error_type"]


def test_httpx_sync_client(emu: Emulator) -> None:
    with httpx.Client() as client:
        r = client.post("https://api.runpod.ai/v2/echo/runsync", json={"input": {"x": 1}})
        assert r.json()["output"] == {"echo": {"x": 1}}
    assert emu.requests[-1].operation == "runsync"


@pytest.mark.anyio
async def test_aiohttp_session(emu: Emulator) -> None:
    async with aiohttp.ClientSession() as session:
        app = AiohttpApp(session)
        job = await app.wait("echo", await app.run("echo", {"prompt": "hi"}))
        assert job["output"] == {"echo": {"prompt": "hi"}}
        assert await app.stream("tokens", await app.run("tokens", {})) == ["a", "b", "c"]
        assert await app.cancel("parked", await app.run("parked", {})) == "CANCELLED"
        failed = await app.wait("fail", await app.run("fail", {}))
        assert failed["status"] == "FAILED"
        assert "input needs a 'prompt'" in failed["error"]


def test_official_sdk_endpoint(emu: Emulator) -> None:
    assert runpod.endpoint_url_base == emu.base_url
    endpoint = runpod.Endpoint("echo")
    assert endpoint.run_sync({"prompt": "hi"}) == {"echo": {"prompt": "hi"}}
    job = endpoint.run({"prompt": "again"})
    while job.status() not in ("COMPLETED", "FAILED"):
        pass
    assert job.output() == {"echo": {"prompt": "again"}}
    # The SDK's stream sleeps 1 s before each poll: this costs ~2 s of real time.
    assert list(runpod.Endpoint("tokens").run({}).stream()) == ["a", "b", "c"]
    assert runpod.Endpoint("parked").run({}).cancel()["status"] == "CANCELLED"
    failed = runpod.Endpoint("fail").run({})
    while failed.status() != "FAILED":
        pass
    assert "input needs a 'prompt'" in failed._fetch_job()["error"]  # the SDK's only way to the error


@pytest.mark.anyio
async def test_official_sdk_asyncio_endpoint(emu: Emulator) -> None:
    async with aiohttp.ClientSession() as session:
        job = await runpod.AsyncioEndpoint("echo", session).run({"prompt": "hi"})
        while await job.status() not in ("COMPLETED", "FAILED"):
            pass
        assert await job.output() == {"echo": {"prompt": "hi"}}
        stream_job = await runpod.AsyncioEndpoint("tokens", session).run({})
        assert [c async for c in stream_job.stream()] == ["a", "b", "c"]
        parked = await runpod.AsyncioEndpoint("parked", session).run({})
        assert (await parked.cancel())["status"] == "CANCELLED"
        failed = await runpod.AsyncioEndpoint("fail", session).run({})
        while await failed.status() != "FAILED":
            pass
        assert "input needs a 'prompt'" in (await failed._fetch_job())["error"]


def test_our_client(emu: Emulator) -> None:
    with Client() as client:  # no base URL, no key: both come from the environment mock_runpod set
        echo = client.endpoint("echo")
        assert echo.wait(echo.run({"prompt": "hi"}).id, timeout=20).output == {"echo": {"prompt": "hi"}}
        tokens = client.endpoint("tokens")
        stream = tokens.stream(tokens.run({}).id, timeout=20)
        assert [c.output for c in stream] == ["a", "b", "c"]
        parked = client.endpoint("parked")
        assert parked.cancel(parked.run({}).id).status is JobStatus.CANCELLED
        failed = client.endpoint("fail").run_sync({}, timeout=20)
        assert failed.is_failed and failed.error_message == "input needs a 'prompt'"


@pytest.mark.anyio
async def test_our_async_client(emu: Emulator) -> None:
    async with AsyncClient() as client:
        job = await client.endpoint("echo").run_sync({"prompt": "hi"}, timeout=20)
        assert job.output == {"echo": {"prompt": "hi"}}
        tokens = client.endpoint("tokens")
        stream = tokens.stream((await tokens.run({})).id, timeout=20)
        assert [c.output async for c in stream] == ["a", "b", "c"]
        parked = client.endpoint("parked")
        assert (await parked.cancel((await parked.run({})).id)).status is JobStatus.CANCELLED
        failed = await client.endpoint("fail").run_sync({}, timeout=20)
        assert failed.error_message == "input needs a 'prompt'"


def test_unknown_endpoint_answers_404_as_runpod(emu: Emulator) -> None:
    r = httpx.post("https://api.runpod.ai/v2/no-such-endpoint/run", json={"input": {}})
    assert r.status_code == 404
    assert "no-such-endpoint" in r.json()["error"]


def test_openai_package_at_runpods_openai_route() -> None:
    openai = pytest.importorskip("openai")

    def llm(job: dict[str, Any]) -> Any:
        messages = job["input"]["openai_input"]["messages"]
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": messages[-1]["content"].upper()},
                    "finish_reason": "stop",
                }
            ],
        }

    with mock_runpod({"llm": llm}) as emu:
        # As RunPod's docs show: RunPod's URL, the RunPod key from the environment.
        client = openai.OpenAI(
            api_key=os.environ["RUNPOD_API_KEY"],
            base_url="https://api.runpod.ai/v2/llm/openai/v1",
            max_retries=0,
        )
        answer = client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content == "HI"
        (request,) = emu.requests
        assert (request.operation, request.job_id, request.status_code) == ("openai", None, 200)
