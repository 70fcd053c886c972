"""A token streamer: a generator handler, the shape of an LLM worker that streams its answer.

Each `yield` becomes one stream chunk that `rpq stream` (or `Endpoint.stream`) prints as it arrives.
Input: {"prompt": str, "max_tokens": int = 32, "delay": float = 0.05}.
`rpq serve examples/tokens.py --return-aggregate-stream` also makes the list of chunks the job's output.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

_REPLY = (
    "Queues decouple the caller from the GPU: a job waits its turn, a worker takes it, and the answer "
    "streams back token by token while the caller keeps its own pace."
)


async def handler(job: dict[str, Any]) -> AsyncIterator[str]:
    # async: the emulator runs it on its loop, and a cancel stops it at the next await.
    spec = job["input"] if isinstance(job["input"], dict) else {}
    max_tokens = int(spec.get("max_tokens", 32))
    delay = float(spec.get("delay", 0.05))
    words = _REPLY.split(" ")
    for index, word in enumerate(words[:max_tokens]):
        await asyncio.sleep(delay)
        yield word if index == 0 else " " + word
