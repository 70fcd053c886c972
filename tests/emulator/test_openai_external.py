"""The `/openai/v1/*` routes served by an unmodified official worker process: `examples/fake_llm.py` run
as `python fake_llm.py`, i.e. `runpod.serverless.start({"handler": ..., "return_aggregate_stream": True})`
with an async generator handler built like worker-vllm's. Its chunks reach the route through job-stream,
its result and errors through job-done.

`openai` is imported inside the tests that name its classes: every xdist worker imports every test module
while collecting, and ~0.9 s CPU of openai is then paid only by the worker that runs them."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from external_support import API_KEY, TIMINGS

from runpod_queue import AsyncClient, Client
from runpod_queue._contract import JobStatus
from runpod_queue.emulator import Emulator, EndpointSpec
from runpod_queue.emulator._loading import load_endpoint
from runpod_queue.emulator._worker_processes import WorkerProcesses
from shared_support import EmuSetup

if TYPE_CHECKING:
    import openai

FAKE_LLM = Path(__file__).parents[2] / "examples" / "fake_llm.py"
MESSAGES = [{"role": "user", "content": "Why queue jobs?"}]


@pytest.fixture(scope="module")
def emu_setup() -> EmuSetup:
    return EmuSetup(
        lambda: {"vllm": EndpointSpec(handler=None)},
        {"api_key": API_KEY, "clock": "virtual", "timings": TIMINGS, "rate_limits": False},
    )


@pytest.fixture(scope="module")
def sdk(emu: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    log = Path(os.environ.get("RPQ_TEST_WORKER_LOG") or tmp_path_factory.mktemp("workers") / "workers.log")
    processes = WorkerProcesses(emu.root_url, api_key=API_KEY, output=log, restart_exited=False)
    try:
        processes.start("vllm", FAKE_LLM)
        with Client(API_KEY, base_url=emu.base_url) as client:
            # Generous: the first call waits for the worker process to import runpod and take a job.
            yield client.endpoint("vllm").openai(max_retries=0, timeout=60)
    finally:
        processes.close(timeout=0.5)


def test_chat_completion_through_an_official_worker(sdk: openai.OpenAI, emu: Emulator) -> None:
    answer = sdk.chat.completions.create(model="fake-llm", messages=MESSAGES, max_tokens=5, n=2)  # type: ignore[arg-type]
    assert [c.finish_reason for c in answer.choices] == ["length", "length"]
    (job,) = emu.core.endpoints["vllm"].jobs.values()
    assert job.status is JobStatus.COMPLETED
    assert job.worker is not None and job.worker.external
    # return_aggregate_stream: the job's own output is the list of what the worker yielded.
    assert job.output_json is not None and job.output_json.startswith(b'[{"id":"chatcmpl-')


def test_streaming_completions_and_models_through_an_official_worker(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(model="fake-llm", messages=MESSAGES, max_tokens=6, stream=True)  # type: ignore[arg-type]
    text = "".join(c.choices[0].delta.content or "" for c in stream)
    assert text == _expected_chat(6)
    completion = sdk.completions.create(model="fake-llm", prompt="hello", max_tokens=3)
    assert len(completion.choices[0].text.split()) == 3
    assert [m.id for m in sdk.models.list()] == ["fake-llm"]


def _expected_chat(max_tokens: int) -> str:
    """What fake_llm answers, computed in this process: the worker must forward it unchanged."""
    handler = load_endpoint(str(FAKE_LLM)).spec.handler
    body = {"model": "fake-llm", "messages": MESSAGES, "max_tokens": max_tokens}

    async def first() -> Any:
        async for item in handler(
            {"id": "x", "input": {"openai_route": "/v1/chat/completions", "openai_input": body}}
        ):
            return item

    return str(asyncio.run(first())["choices"][0]["message"]["content"])


def test_worker_error_is_an_openai_error(sdk: openai.OpenAI) -> None:
    import openai  # here, not at the top: see the module docstring

    # The worker yields {"error": {...}}; the official SDK fails the job with str() of it.
    with pytest.raises(openai.BadRequestError, match="prompt must be a string"):
        sdk.completions.create(model="fake-llm", prompt=[])


def test_async_openai_through_an_official_worker(emu: Emulator, sdk: openai.OpenAI) -> None:
    async def main() -> None:
        async with AsyncClient(API_KEY, base_url=emu.base_url) as client:
            aclient = client.endpoint("vllm").openai(max_retries=0, timeout=60)
            try:
                stream = await aclient.completions.create(
                    model="fake-llm", prompt="hi", max_tokens=4, stream=True
                )
                pieces = [c.choices[0].text async for c in stream]
                assert len("".join(pieces).split()) == 4
            finally:
                await aclient.close()

    asyncio.run(main())
