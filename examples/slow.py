"""A slow job: sleeps, so there is time to watch it run, cancel it, or hit its executionTimeout.

Input: {"seconds": float = 2}. Written `async` so cancelling it (or a timeout) stops it at once: an
in-process `async def` handler is cancelled at its next await, a plain function runs to its end.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    spec = job["input"] if isinstance(job["input"], dict) else {}
    seconds = float(spec.get("seconds", 2))
    started = time.monotonic()
    await asyncio.sleep(seconds)
    return {"slept": round(time.monotonic() - started, 2)}
