"""`runpod_queue.worker.keep_key`: the batch key taken out of the input and put into the output, for every
kind of handler RunPod runs (sync, async, generator, async generator), and nothing done to a keyless job."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from runpod_queue.worker import keep_key


def seen_input(job: dict[str, Any]) -> Any:
    return {"saw": job["input"], "id": job["id"]}


@pytest.mark.parametrize(
    ("sent", "handler_sees"),
    [
        ({"text": "a", "_rpq_key": "k1"}, {"text": "a"}),  # an object input: the field merged in
        ({"_rpq_key": 7, "_rpq_input": [1, 2]}, [1, 2]),  # anything else: wrapped
        ({"_rpq_key": 7, "_rpq_input": None}, None),
        ({"_rpq_key": 7, "_rpq_input": {"_rpq_key": "mine"}}, {"_rpq_key": "mine"}),  # a user field kept
    ],
)
def test_sync_handler_sees_its_own_input_and_the_output_carries_the_key(sent: Any, handler_sees: Any) -> None:
    key = sent["_rpq_key"]
    output = keep_key(seen_input)({"id": "req_1", "input": sent, "batchId": "batch_1"})
    assert output == {"saw": handler_sees, "id": "req_1", "_rpq_key": key}


@pytest.mark.parametrize(
    ("returned", "keyed"),
    [
        ({"a": 1}, {"a": 1, "_rpq_key": "k"}),
        ([1, 2], {"_rpq_key": "k", "_rpq_output": [1, 2]}),
        ("text", {"_rpq_key": "k", "_rpq_output": "text"}),
        (None, {"_rpq_key": "k", "_rpq_output": None}),
        ({"_rpq_output": 1}, {"_rpq_key": "k", "_rpq_output": {"_rpq_output": 1}}),
    ],
)
def test_every_output_shape_carries_the_key(returned: Any, keyed: Any) -> None:
    assert keep_key(lambda job: returned)({"input": {"_rpq_key": "k"}}) == keyed


def test_a_job_without_a_key_passes_through_untouched() -> None:
    job = {"id": "j", "input": {"text": "a"}}
    assert keep_key(seen_input)(job) == {"saw": {"text": "a"}, "id": "j"}
    assert keep_key(lambda job: [1])({"input": "plain"}) == [1]


def test_async_generator_and_async_generator_handlers_keep_their_kind() -> None:
    async def coro(job: dict[str, Any]) -> Any:
        return {"x": job["input"]["x"]}

    def gen(job: dict[str, Any]) -> Iterator[Any]:
        yield {"part": 1}
        yield "two"

    async def agen(job: dict[str, Any]) -> AsyncIterator[Any]:
        yield {"part": job["input"]["x"]}

    job = {"id": "r", "input": {"x": 3, "_rpq_key": 5}}
    wrapped_coro, wrapped_gen, wrapped_agen = keep_key(coro), keep_key(gen), keep_key(agen)
    assert inspect.iscoroutinefunction(wrapped_coro)
    assert inspect.isgeneratorfunction(wrapped_gen)
    assert inspect.isasyncgenfunction(wrapped_agen)
    assert asyncio.run(wrapped_coro(job)) == {"x": 3, "_rpq_key": 5}
    assert list(wrapped_gen(job)) == [{"part": 1, "_rpq_key": 5}, {"_rpq_key": 5, "_rpq_output": "two"}]

    async def collect() -> list[Any]:
        return [chunk async for chunk in wrapped_agen(job)]

    assert asyncio.run(collect()) == [{"part": 3, "_rpq_key": 5}]
    assert wrapped_coro.__name__ == "coro"  # functools.wraps: logs and runpod see the user's name


def test_an_exception_is_not_caught() -> None:
    def broken(job: dict[str, Any]) -> Any:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        keep_key(broken)({"input": {"_rpq_key": 1}})


def test_not_a_function_is_refused() -> None:
    with pytest.raises(TypeError, match="keep_key wraps a handler function"):
        keep_key("handler")  # type: ignore[type-var]


def test_importing_it_loads_neither_aiohttp_nor_the_emulator() -> None:
    """It runs inside workers: the import stays light."""
    code = (
        "import sys, runpod_queue.worker\n"
        "print(sorted(m for m in ('aiohttp', 'runpod_queue._aio', 'runpod_queue.batch', "
        "'runpod_queue.emulator', 'orjson') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
